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
  ``import lightning_nas.adapters`` is all a reload needs (the package itself imports lazily).

The adapter's ``finalize`` already gave the extracted model this config, so
``model.save_pretrained`` alone writes a loadable directory; :func:`save_hf` adds the tokenizer,
:func:`verify_hf` reloads and compares outputs, and :func:`export_hf` does all of it from a
supernet, checking the reload against the supernet's sub-network on the example input, real
batches and random token ids over the whole vocabulary with padded attention masks. Both writers
work in a hidden sibling directory and move it into place only after the check, with an
``arch.json`` manifest (architecture, file sizes and SHA-256) next to the model files.

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

import math
import os
from collections.abc import Callable, Iterable, Mapping
from pathlib import Path
from typing import Any

import torch
from torch import Tensor, nn

from lightning_nas.adapters._hf_common import HFTransformerAdapter
from lightning_nas.adapters._hf_compressed import AUTO_CLASSES
from lightning_nas.export._files import (
    MANIFEST,
    ExportError,
    atomic_directory,
    check_file,
    check_target,
    read_manifest,
    write_manifest,
)
from lightning_nas.export._verify import check_outputs, model_outputs, probes_for, reference_outputs, verify_outputs
from lightning_nas.inputs import call_model, call_with_example, eval_mode
from lightning_nas.supernet import Supernet

__all__ = ["ExportError", "auto_class_for", "export_hf", "load_hf", "random_token_inputs", "save_hf", "verify_hf"]

FORMAT = "lightning_nas.hf"


def save_hf(
    model: nn.Module,
    directory: str | os.PathLike[str],
    *,
    tokenizer: Any = None,
    inputs: Iterable[Any] = (),
    example_input: Any = None,
    forward: Callable[[nn.Module, Any], Any] = call_model,
    random_tokens: int = 2048,
    atol: float = 1e-4,
    rtol: float = 1e-4,
    arch: Mapping[str, int] | None = None,
) -> Path:
    """Write a Hugging Face model with ``save_pretrained`` (safetensors), plus its tokenizer.

    The directory is written next to its target, reloaded with :func:`load_hf` and compared
    tensor by tensor with ``model`` (exactly); given ``inputs`` or an ``example_input``, the
    reloaded model's outputs must also reproduce ``model``'s (eval mode) on them and on random
    token ids shaped like the example (as in :func:`export_hf`), since equal tensors in a config
    that wires them differently would still compute something else. Only then is it moved into
    place, replacing an earlier export there. For a check against a supernet, use
    :func:`export_hf`.

    Args:
        model: A ``PreTrainedModel``, typically from :meth:`~lightning_nas.Supernet.extract`.
        directory: Where to write (created if missing).
        tokenizer: A tokenizer (anything with ``save_pretrained``), or the directory of the source
            model, whose tokenizer is loaded with ``AutoTokenizer`` and saved alongside.
        inputs: Real batches for the output check, as data loaders yield them.
        example_input: Model input (a mapping of keyword arguments) giving the random tokens' shape.
        forward: ``forward(model, batch)`` runs a model on one of ``inputs``.
        random_tokens: Most random tokens in the check (0: none).
        atol, rtol: Tolerances of the output check (see :func:`export_hf`).
        arch: The architecture recorded in ``arch.json`` (e.g. the sub-network ``model`` came from).

    Returns:
        The directory (absolute).

    Example:
        >>> import tempfile
        >>> from transformers import GPT2Config, GPT2LMHeadModel
        >>> model = GPT2LMHeadModel(GPT2Config(n_embd=16, n_layer=1, n_head=2, vocab_size=50))
        >>> path = save_hf(model, tempfile.mkdtemp())
        >>> sorted(p.name for p in path.iterdir())
        ['arch.json', 'config.json', 'generation_config.json', 'model.safetensors']
    """
    target = check_target(directory)
    _require_pretrained(model, "save_hf")
    tokenizer = _tokenizer(tokenizer)
    randoms = [] if example_input is None else random_token_inputs(model, example_input, random_tokens)
    probes = probes_for(example_input, inputs, forward, randoms)
    expected = model_outputs(model, probes)
    device = next(model.parameters()).device

    def same_model(reloaded: nn.Module) -> None:
        state = model.state_dict()
        for name, tensor in reloaded.state_dict().items():
            if name not in state or not torch.equal(tensor.cpu(), state[name].detach().cpu()):
                raise ExportError(f"the reloaded model's {name} differs from the saved one")
        check_outputs(reloaded.to(device), probes, expected, atol=atol, rtol=rtol, what=f"{type(reloaded).__name__}")

    return _write(model, target, tokenizer, same_model, arch or {})


def export_hf(
    supernet: Supernet,
    directory: str | os.PathLike[str],
    arch: Mapping[str, int] | None = None,
    *,
    tokenizer: Any = None,
    inputs: Iterable[Any] = (),
    forward: Callable[[nn.Module, Any], Any] = call_model,
    random_tokens: int = 2048,
    atol: float = 1e-4,
    rtol: float = 1e-4,
    seed: int = 0,
) -> Path:
    """Extract a sub-network, save it like :func:`save_hf`, and verify the reload against the supernet.

    The reloaded directory (``from_pretrained`` through the Auto class of its architecture) must
    reproduce the sub-network inside the supernet, in eval mode, on the supernet's
    ``example_input``, on every batch of ``inputs``, and on random token ids drawn as a
    permutation of the vocabulary (every id once, while the vocabulary fits in ``random_tokens``)
    with right-padded attention masks, in sequences as long as the example's. Every output
    element must satisfy ``|reloaded - supernet| <= atol + rtol * |supernet|`` (defaults 1e-4
    and 1e-4: attention and norms run on differently laid-out tensors, so float rounding differs).

    Args:
        supernet: A supernet built by a Hugging Face adapter over a ``PreTrainedModel``.
        directory: Where to write; an earlier export there is replaced once the new one verified.
        arch: The sub-network (default: the active one).
        tokenizer: Saved alongside (see :func:`save_hf`).
        inputs: Real batches for the check, as data loaders yield them.
        forward: ``forward(model, batch)`` runs a model on one of ``inputs``.
        random_tokens: Most random tokens in the check (0: none).
        atol: Absolute tolerance.
        rtol: Relative tolerance.
        seed: Seed of the random tokens.

    Returns:
        The directory (absolute).

    Raises:
        ValueError: The supernet was not built by a Hugging Face adapter, the directory cannot
            take an export, or there is nothing to verify with; before any work.
        ExportError: The reloaded model does not reproduce the sub-network; nothing was moved
            into place.
    """
    adapter = supernet.adapter
    if not isinstance(adapter, HFTransformerAdapter):
        raise ValueError(
            f"export_hf writes supernets built by a Hugging Face adapter; this {type(supernet.model).__name__} "
            f"supernet was built by the {adapter.name!r} adapter, whose extracted model's config would not "
            "describe its weights. Use lightning_nas.export.export_subnet instead"
        )
    _require_pretrained(supernet.model, "export_hf")
    with supernet.use(supernet.arch if arch is None else arch):  # also the dimensions ``arch`` leaves at full size
        arch = supernet.arch
    target = check_target(directory)
    inputs = list(inputs)
    example = supernet.example_input
    if example is None and not inputs:
        raise ValueError("export_hf needs `inputs` (or a supernet with an `example_input`) to verify the export")
    tokenizer = _tokenizer(tokenizer)
    randoms = [] if example is None else random_token_inputs(supernet.model, example, random_tokens, seed=seed)
    probes = probes_for(example, inputs, forward, randoms)
    expected = reference_outputs(supernet, arch, probes)
    model = supernet.extract(arch).eval()
    device = next(model.parameters()).device

    def same_outputs(reloaded: nn.Module) -> None:
        check_outputs(reloaded.to(device), probes, expected, atol=atol, rtol=rtol, what=f"{type(reloaded).__name__}")

    return _write(model, target, tokenizer, same_outputs, arch)


def random_token_inputs(
    model: nn.Module, example: Any, tokens: int = 2048, *, batch: int = 8, seed: int = 0
) -> list[Any]:
    """Random inputs shaped like ``example`` that reach every token embedding (when the vocabulary fits).

    The ids are a random permutation of the vocabulary (repeated or cut to fill whole sequences
    of the example's length, at most ``tokens`` in all), in batches of ``batch`` unpadded
    sequences, so every id reaches the outputs (a pooled classifier reads no padded position);
    one more batch of random ids has right padding of random lengths in ``attention_mask`` (at
    least one token kept). ``token_type_ids`` are random over the model's token types; other
    entries of ``example`` are kept.

    Example:
        >>> from transformers import BertConfig, BertModel
        >>> bert = BertModel(BertConfig(vocab_size=50, hidden_size=8, num_hidden_layers=1, num_attention_heads=2,
        ...                             intermediate_size=8))
        >>> example = {"input_ids": torch.ones(1, 6, dtype=torch.long), "attention_mask": torch.ones(1, 6)}
        >>> batches = random_token_inputs(bert, example)
        >>> [tuple(b["input_ids"].shape) for b in batches]
        [(8, 6), (1, 6), (8, 6)]
        >>> sorted(set(torch.cat([b["input_ids"][:2].flatten() for b in batches[:2]]).tolist())) == list(range(50))
        False
        >>> sorted(set(torch.cat([b["input_ids"].flatten() for b in batches[:2]]).tolist())) == list(range(50))
        True
    """
    ids = example.get("input_ids") if isinstance(example, Mapping) else example
    if not isinstance(ids, Tensor) or ids.dim() != 2 or tokens <= 0:
        return []
    vocab, length = model.get_input_embeddings().num_embeddings, ids.shape[1]
    generator = torch.Generator().manual_seed(seed)
    sequences = max(1, math.ceil(min(vocab, tokens) / length))
    order = torch.randperm(vocab, generator=generator).repeat(math.ceil(sequences * length / vocab))
    chunks = list(order[: sequences * length].view(sequences, length).split(batch))
    chunks.append(torch.randint(0, vocab, (min(batch, sequences), length), generator=generator))
    type_vocab = getattr(model.config, "type_vocab_size", 1) or 1
    out = []
    for i, chunk in enumerate(chunks):
        n = chunk.shape[0]
        lengths = torch.randint(1, length + 1, (n,), generator=generator)
        lengths[0] = length
        padded = i == len(chunks) - 1
        mask = (torch.arange(length) < lengths[:, None]) if padded else torch.ones(n, length, dtype=torch.bool)
        if not isinstance(example, Mapping):
            out.append(chunk.to(ids.device))
            continue
        values = {"input_ids": chunk, "attention_mask": mask}
        values["token_type_ids"] = torch.randint(0, type_vocab, (n, length), generator=generator)
        out.append(
            {
                key: values[key].to(dtype=value.dtype, device=value.device) if key in values else value
                for key, value in example.items()
            }
        )
    return out


def _write(model: nn.Module, target: Path, tokenizer: Any, check: Callable[[nn.Module], None], arch: Mapping) -> Path:
    with atomic_directory(target) as tmp:
        model.save_pretrained(tmp, safe_serialization=True)
        if tokenizer is not None:
            tokenizer.save_pretrained(tmp)
        reloaded = load_hf(tmp)
        check(reloaded)
        meta = {
            "format": FORMAT,
            "arch": dict(arch),
            "params": sum(p.numel() for p in reloaded.parameters()),
            "model_class": type(reloaded).__name__,
            "auto_class": auto_class_for(reloaded.config).__name__,
        }
        write_manifest(tmp, meta)
    return target


def _require_pretrained(model: nn.Module, caller: str) -> None:
    from transformers import PreTrainedModel

    if not isinstance(model, PreTrainedModel):
        raise ValueError(
            f"{caller} writes Hugging Face PreTrainedModels with save_pretrained; {type(model).__name__} is not one "
            "(use lightning_nas.export.export_subnet for other modules)"
        )


def _tokenizer(tokenizer: Any) -> Any:
    if isinstance(tokenizer, (str, os.PathLike)):
        from transformers import AutoTokenizer

        return AutoTokenizer.from_pretrained(tokenizer)
    return tokenizer


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

    ``kwargs`` go to ``from_pretrained`` (e.g. ``dtype``). When the directory has the ``arch.json``
    of :func:`save_hf` / :func:`export_hf`, every file is first checked against its size and
    SHA-256, so a truncated or damaged file is named in a one-line :class:`ExportError`.
    """
    from transformers import AutoConfig

    if (Path(directory) / MANIFEST).exists():
        manifest = read_manifest(directory)
        for name in manifest["files"]:
            check_file(directory, name, manifest)
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
