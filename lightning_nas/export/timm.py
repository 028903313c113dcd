"""timm exports: sub-networks that ``timm.create_model`` itself rebuilds, verified on reload.

Two formats, both a ``model.safetensors`` state dict plus ``timm.json`` (how to rebuild it):

- ``"create_model"``: a uniform ViT/DeiT sub-network (every layer with the same heads and MLP
  width, heads x head size = embedding) is just another ViT configuration. It loads with
  ``timm.create_model(architecture, pretrained=True, pretrained_cfg_overlay=dict(file=...,
  num_classes=...), embed_dim=..., depth=..., num_heads=..., mlp_ratio=..., ...)``; the exact
  call is in ``timm.json`` and :func:`load_timm` makes it.
- ``"pruned"``: a CNN with other per-layer widths (but its depth and kernels) in timm's own
  pruned-model format, a string of layer shapes that ``timm.models._prune.adapt_model_from_string``
  applies to the full model.

A sub-network that neither format holds (skipped blocks or cropped kernels of a CNN, a ViT with
per-layer heads) raises a ``ValueError`` naming why, before anything is written; the plain
writers (:func:`~lightning_nas.export.save_module`) take any model.
"""

from __future__ import annotations

import json
import os
import shutil
import tempfile
from pathlib import Path
from typing import Any

import torch
from torch import nn

from lightning_nas.export.module import verify_outputs
from lightning_nas.inputs import call_with_example

__all__ = ["TIMM_FILE", "WEIGHTS_FILE", "load_timm", "save_timm", "timm_recipe"]

WEIGHTS_FILE = "model.safetensors"
TIMM_FILE = "timm.json"


def timm_recipe(model: nn.Module, **create_kwargs: Any) -> dict[str, Any]:
    """How ``timm.create_model`` rebuilds ``model`` (an extracted timm sub-network).

    Returns the content of ``timm.json``: ``format``, ``architecture``, ``kwargs`` and either
    ``pretrained_cfg_overlay`` (format ``"create_model"``) or ``pruned`` (format ``"pruned"``).
    ``create_kwargs`` are other arguments the model was created with (``drop_rate=...``).

    Raises:
        ValueError: naming why neither format holds the model.
    """
    cfg = getattr(model, "pretrained_cfg", None) or {}
    architecture = cfg.get("architecture")
    if not architecture:
        raise ValueError(f"{type(model).__name__} is not a timm model (no pretrained_cfg['architecture'])")
    kwargs: dict[str, Any] = {"num_classes": int(getattr(model, "num_classes", cfg.get("num_classes", 1000)))}
    kwargs.update(create_kwargs)
    if hasattr(model, "blocks") and hasattr(model, "patch_embed") and hasattr(model, "cls_token"):
        kwargs.update(_vit_kwargs(model))
        overlay = {"num_classes": kwargs["num_classes"]}
        return {
            "format": "create_model",
            "architecture": architecture,
            "kwargs": kwargs,
            "pretrained_cfg_overlay": overlay,
        }
    shapes = "***".join(
        f"{key}:{list(value.shape)}" for key, value in model.state_dict().items() if key.endswith(".weight")
    )
    return {"format": "pruned", "architecture": architecture, "kwargs": kwargs, "pruned": shapes}


def _vit_kwargs(model: nn.Module) -> dict[str, Any]:
    embed = model.patch_embed.proj.out_channels
    blocks = list(model.blocks)
    if not blocks:
        raise ValueError("the ViT has no blocks left")
    heads = {block.attn.num_heads for block in blocks}
    head_dims = {block.attn.head_dim for block in blocks}
    hidden = {block.mlp.fc1.out_features for block in blocks}
    if len(heads) != 1 or len(hidden) != 1:
        raise ValueError(
            f"timm's ViT has the same heads and MLP width in every layer; this one has heads {sorted(heads)} "
            f"and MLP widths {sorted(hidden)}: use the plain writer (save_module)"
        )
    (num_heads,), (head_dim,), (mlp,) = heads, head_dims, hidden
    if num_heads * head_dim != embed:
        raise ValueError(
            f"timm's ViT derives the head size from the embedding ({embed} / {num_heads} heads), but the heads "
            f"keep size {head_dim}: choose embedding = heads x {head_dim}, or use the plain writer (save_module)"
        )
    ratio = mlp / embed
    if int(embed * ratio) != mlp:
        raise ValueError(f"MLP width {mlp} is not int(embedding {embed} x a ratio) in floating point")
    size = model.patch_embed.img_size
    patch = model.patch_embed.patch_size
    return {
        "img_size": list(size) if isinstance(size, tuple) else size,
        "patch_size": list(patch) if isinstance(patch, tuple) else patch,
        "embed_dim": embed,
        "depth": len(blocks),
        "num_heads": num_heads,
        "mlp_ratio": ratio,
    }


def load_timm(directory: str | Path) -> nn.Module:
    """Rebuild a model written by :func:`save_timm` with ``timm.create_model`` (eval mode)."""
    import timm

    directory = Path(directory)
    recipe = json.loads((directory / TIMM_FILE).read_text())
    weights = str(directory / WEIGHTS_FILE)
    kwargs = {k: tuple(v) if isinstance(v, list) else v for k, v in recipe["kwargs"].items()}
    if recipe["format"] == "create_model":
        overlay = dict(recipe["pretrained_cfg_overlay"], file=weights)
        model = timm.create_model(recipe["architecture"], pretrained=True, pretrained_cfg_overlay=overlay, **kwargs)
    elif recipe["format"] == "pruned":
        from safetensors.torch import load_file
        from timm.models._prune import adapt_model_from_string

        model = adapt_model_from_string(timm.create_model(recipe["architecture"], **kwargs), recipe["pruned"])
        model.load_state_dict(load_file(weights))
    else:
        raise ValueError(f"{directory / TIMM_FILE}: unknown format {recipe['format']!r}")
    return model.eval()


def save_timm(
    model: nn.Module, directory: str | Path, example_input: Any, atol: float = 1e-5, **create_kwargs: Any
) -> Path:
    """Write an extracted timm sub-network so that timm rebuilds it, and check the reload's outputs.

    The files are written to a temporary folder next to ``directory``, reloaded through
    :func:`load_timm` and compared with ``model`` on ``example_input``; only then do they take
    the place of ``directory``, which must not exist or be empty.

    Example:
        >>> import tempfile, timm, torch
        >>> from lightning_nas import Supernet
        >>> vit = timm.create_model("vit_tiny_patch16_224", img_size=32, patch_size=8, depth=2, num_classes=3)
        >>> net = Supernet(vit, example_input=torch.randn(1, 3, 32, 32))
        >>> arch = {"patch_embed.proj": 128, "blocks.0.attn.heads": 2, "blocks.1.attn.heads": 2}
        >>> path = save_timm(net.extract(arch), tempfile.mkdtemp() + "/vit", torch.randn(2, 3, 32, 32))
        >>> json.loads((path / "timm.json").read_text())["kwargs"]["embed_dim"]
        128
    """
    from safetensors.torch import save_file

    directory = Path(directory)
    if directory.exists() and (not directory.is_dir() or any(directory.iterdir())):
        raise FileExistsError(f"{directory} exists and is not an empty folder; nothing was written")
    recipe = timm_recipe(model, **create_kwargs)
    model = model.eval()
    with torch.no_grad():
        expected = call_with_example(model, example_input)
    directory.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f".{directory.name}.", dir=directory.parent))
    try:
        state = {k: v.detach().contiguous() for k, v in model.state_dict().items()}
        save_file(state, str(staging / WEIGHTS_FILE))
        (staging / TIMM_FILE).write_text(json.dumps(recipe, indent=2))
        try:
            reloaded = load_timm(staging)
        except Exception as err:
            hint = (
                " (the pruned format keeps every block and kernel size of the model)"
                if recipe["format"] == "pruned"
                else ""
            )
            raise ValueError(
                f"timm cannot rebuild this sub-network as {recipe['format']!r}{hint}: {type(err).__name__}: {err}; "
                "use the plain writer (save_module)"
            ) from err
        with torch.no_grad():
            verify_outputs(expected, call_with_example(reloaded, example_input), atol, "timm model")
        if directory.exists():
            directory.rmdir()  # empty, checked above
        os.replace(staging, directory)
    finally:
        if staging.exists():
            shutil.rmtree(staging)
    return directory
