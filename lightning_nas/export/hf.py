"""Hugging Face export: an extracted sub-network as a ``save_pretrained`` directory, verified on reload.

The directory holds ``config.json``, ``model.safetensors`` and, when given, the tokenizer, and
reloads with ``AutoModelFor<Task>.from_pretrained(directory)``. Which config it gets:

- **Standard fields** whenever they describe the sub-network: every layer has the same widths,
  and the head size is expressible, i.e. the family has a ``head_dim`` field (Llama, Mistral,
  Qwen2, Qwen3) or ``num_attention_heads * head size == hidden_size`` (BERT, RoBERTa, ELECTRA,
  DistilBERT and GPT-2 derive the head size that way). The updated fields are
  ``num_hidden_layers``, ``hidden_size``, ``intermediate_size`` (``hidden_dim`` / ``n_inner``),
  ``num_attention_heads``, ``num_key_value_heads`` and ``head_dim``; the config class is the stock
  one, so plain transformers loads the directory, without ``lightning_nas`` installed.
- **A registered compressed config** otherwise: layers of different widths, or fewer heads than
  the hidden size implies in a family without ``head_dim``. transformers 5 has no ``prune_heads``
  and its strict configs cannot express either, so ``config.json`` gets model type
  ``lightning_nas_<family>``: the stock fields (global values: the widest layer), ``head_dim``,
  and the per-layer differences in transformers' own ``per_layer_config`` field. Its config and
  model classes (``LightningNas<StockClass>``, subclasses of the stock classes) are registered with
  ``AutoConfig`` and the ``AutoModel*`` classes when ``lightning_nas`` is imported, so
  ``import lightning_nas`` is all a reload needs.

The adapter's ``finalize`` already gave the extracted model this config, so
``model.save_pretrained`` alone writes a loadable directory; :func:`save_hf` adds the tokenizer,
:func:`verify_hf` reloads and compares outputs, and :func:`export_hf` does all of it from a
supernet.

Example:
    >>> import tempfile, torch
    >>> from transformers import BertConfig, BertForSequenceClassification
    >>> from lightning_nas import Supernet
    >>> config = BertConfig(vocab_size=100, hidden_size=32, num_hidden_layers=2, num_attention_heads=4,
    ...                     intermediate_size=64, max_position_embeddings=32)
    >>> inputs = {"input_ids": torch.ones(1, 8, dtype=torch.long)}
    >>> net = Supernet(BertForSequenceClassification(config).eval(), example_input=inputs, stock_config=False)
    >>> path = export_hf(net, tempfile.mkdtemp(), {"layers.0.heads": 2, "layers.1.ffn": 32})
    >>> type(load_hf(path)).__name__
    'LightningNasBertForSequenceClassification'
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import torch
from torch import nn

from lightning_nas.adapters._hf_compressed import AUTO_CLASSES
from lightning_nas.export.module import ExportError, verify_outputs
from lightning_nas.inputs import call_with_example, eval_mode
from lightning_nas.supernet import Supernet

__all__ = ["ExportError", "auto_class_for", "export_hf", "load_hf", "save_hf", "verify_hf"]


def save_hf(model: nn.Module, directory: str | os.PathLike[str], *, tokenizer: Any = None) -> Path:
    """Write a Hugging Face model with ``save_pretrained`` (safetensors), plus its tokenizer.

    Args:
        model: A ``PreTrainedModel``, typically from :meth:`~lightning_nas.Supernet.extract`.
        directory: Where to write (created if missing).
        tokenizer: A tokenizer (anything with ``save_pretrained``), or the directory of the source
            model, whose tokenizer is loaded with ``AutoTokenizer`` and saved alongside.

    Returns:
        The directory.

    Example:
        >>> import tempfile
        >>> from transformers import GPT2Config, GPT2LMHeadModel
        >>> model = GPT2LMHeadModel(GPT2Config(n_embd=16, n_layer=1, n_head=2, vocab_size=50))
        >>> path = save_hf(model, tempfile.mkdtemp())
        >>> sorted(p.name for p in path.iterdir())
        ['config.json', 'generation_config.json', 'model.safetensors']
    """
    directory = Path(directory)
    model.save_pretrained(directory, safe_serialization=True)
    if isinstance(tokenizer, (str, os.PathLike)):
        from transformers import AutoTokenizer

        tokenizer = AutoTokenizer.from_pretrained(tokenizer)
    if tokenizer is not None:
        tokenizer.save_pretrained(directory)
    return directory


def auto_class_for(config: Any) -> type:
    """The ``AutoModel*`` class that maps ``config`` to the architecture it was saved with.

    Example:
        >>> from transformers import BertConfig
        >>> auto_class_for(BertConfig(architectures=["BertForMaskedLM"])).__name__
        'AutoModelForMaskedLM'
    """
    import transformers

    architecture = (config.architectures or [None])[0]
    for name in AUTO_CLASSES:
        auto = getattr(transformers, name)
        if type(config) in auto._model_mapping and (
            architecture is None or auto._model_mapping[type(config)].__name__ == architecture
        ):
            return auto
    raise ValueError(f"no AutoModel class maps {type(config).__name__} to {architecture!r}")


def load_hf(directory: str | os.PathLike[str], **kwargs: Any) -> nn.Module:
    """Reload an exported directory through the Auto class of its saved architecture, in eval mode.

    ``kwargs`` go to ``from_pretrained`` (e.g. ``dtype``).
    """
    from transformers import AutoConfig

    config = AutoConfig.from_pretrained(directory)
    return auto_class_for(config).from_pretrained(directory, **kwargs).eval()


def verify_hf(directory: str | os.PathLike[str], inputs: Any, expected: Any, *, atol: float = 1e-4) -> float:
    """Reload ``directory`` and compare its outputs on ``inputs`` with ``expected``.

    Args:
        directory: An exported directory.
        inputs: Model inputs: a mapping of keyword arguments, a tuple of positional ones, or a tensor.
        expected: The reference outputs, or a model to compute them with (run in eval mode).
        atol: Largest absolute difference allowed for every output tensor.

    Returns:
        The largest absolute difference.

    Raises:
        ExportError: The outputs differ by more than ``atol`` or have other shapes.
    """
    if isinstance(expected, nn.Module):
        with eval_mode(expected), torch.no_grad():
            expected = call_with_example(expected, inputs)
    with torch.no_grad():
        actual = call_with_example(load_hf(directory), inputs)
    return verify_outputs(expected, actual, atol, f"model in {directory}")


def export_hf(
    supernet: Supernet,
    directory: str | os.PathLike[str],
    arch: Mapping[str, int] | None = None,
    *,
    tokenizer: Any = None,
    inputs: Any = None,
    atol: float = 1e-4,
) -> Path:
    """Extract a sub-network, save it with :func:`save_hf`, and verify the reload against the supernet.

    Args:
        supernet: A supernet over a Hugging Face model.
        directory: Where to write.
        arch: The sub-network (default: the active one).
        tokenizer: Saved alongside (see :func:`save_hf`).
        inputs: Inputs for the check (default: the supernet's ``example_input``).
        atol: Largest absolute difference allowed between the reloaded model and the sub-network.

    Returns:
        The directory.

    Raises:
        ExportError: The reloaded model does not reproduce the sub-network's outputs.
    """
    arch = supernet.arch if arch is None else dict(arch)
    path = save_hf(supernet.extract(arch), directory, tokenizer=tokenizer)
    inputs = supernet.example_input if inputs is None else inputs
    if inputs is None:
        raise ValueError("export_hf needs `inputs` (or a supernet with an `example_input`) to verify the export")
    with supernet.use(arch), eval_mode(supernet.model), torch.no_grad():
        expected = call_with_example(supernet.model, inputs)
    verify_hf(path, inputs, expected, atol=atol)
    return path
