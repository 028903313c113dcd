"""One harness for every registered elastic module type (in the style of torchmetrics' MetricTester).

For each type in :data:`lightning_nas.elastic.ELASTIC_TYPES` and each type the Hugging Face and timm adapters
hand to a supernet in their plans (``TYPES`` below), a
case factory builds the plain module with random weights, converts it, activates random sub-widths
and builds by hand the *reference*: a plain module of the active size constructed from its own
class and filled with slices of the full weights written out here, independently of the library's
slicing. Every case is then checked the same way: forward vs reference, ``to_dense()`` vs
reference, gradients (equal to the reference's on the active slice, zero elsewhere), dtype moves
(float64, bfloat16 wherever the plain module supports it) and device moves (``meta``, CUDA when
present). A type registered without a case factory fails the suite, so a new elastic type cannot
go untested.
"""

from __future__ import annotations

import copy
import random
from collections import ChainMap
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import pytest
import torch
from torch import Tensor, nn

from lightning_nas.elastic import (
    ELASTIC_TYPES,
    ElasticBatchNorm1d,
    ElasticBatchNorm2d,
    ElasticConv2d,
    ElasticEmbedding,
    ElasticLayerNorm,
    ElasticLinear,
    ElasticModule,
    ElasticModuleList,
    ElasticSequential,
    register_elastic_type,
)
from lightning_nas.supernet import _densify

#: The family types the adapters put in their plans (filled below), over the live default registry.
FAMILY_TYPES: dict[type[nn.Module], type[ElasticModule]] = {}
TYPES = ChainMap(FAMILY_TYPES, ELASTIC_TYPES)

try:  # the Hugging Face elastic types exist only with the `hf` extra
    from transformers import GPT2Config
    from transformers.models.gpt2.modeling_gpt2 import GPT2Attention
    from transformers.models.llama.modeling_llama import LlamaRMSNorm
    from transformers.pytorch_utils import Conv1D

    from lightning_nas.adapters import _hf_elastic

    # The adapters create these for the classes found in a model; collect them up front so that
    # TYPES holds every elastic type the package can create.
    FAMILY_TYPES[Conv1D] = _hf_elastic.elastic_conv1d(Conv1D)
    FAMILY_TYPES[LlamaRMSNorm] = _hf_elastic.elastic_rms_norm(LlamaRMSNorm)
    FAMILY_TYPES[GPT2Attention] = _hf_elastic.elastic_gpt2_attention(GPT2Attention)
except ImportError:  # pragma: no cover - the hf extra is installed in CI
    _hf_elastic = None  # type: ignore[assignment]

try:  # the timm elastic types exist only with the `timm` extra
    from timm.layers import Attention as TimmAttention
    from timm.layers import BatchNormAct2d, Conv2dSame, LayerNorm2d, LayerScale, LayerScale2d
    from timm.layers import LayerNorm as TimmLayerNorm
    from timm.layers import Linear as TimmLinear
    from timm.models.convnext import ConvNeXtBlock
    from timm.models.regnet import RegStage
    from timm.models.vision_transformer import VisionTransformer

    from lightning_nas.adapters import _timm_elastic
    from lightning_nas.adapters.timm import _elastic_types

    # The timm adapter finds elastic types for the classes of the model it plans; its lookup on
    # tiny models holding every class it knows collects them all up front.
    FAMILY_TYPES.update(
        _elastic_types(
            VisionTransformer(
                img_size=8, patch_size=4, embed_dim=4, depth=1, num_heads=2, init_values=0.1, reg_tokens=1
            )
        )[0]
    )
    FAMILY_TYPES.update(
        _elastic_types(
            nn.Sequential(
                BatchNormAct2d(2),
                LayerNorm2d(2),
                Conv2dSame(2, 2, 3),
                TimmLinear(2, 2),
                LayerScale2d(2),
                ConvNeXtBlock(2),
                RegStage(1, 2, 2, stride=1, dilation=1),
            )
        )[0]
    )
except ImportError:  # pragma: no cover - the timm extra is installed in CI
    _timm_elastic = None  # type: ignore[assignment]

Slicer = Callable[[Tensor], Tensor]


@dataclass
class Case:
    """One elastic module with an active sub-width and its hand-built dense reference.

    ``slices`` maps each parameter/buffer name of ``elastic`` that the sub-network keeps to the
    reference's name for it and the by-hand slicing of the full tensor; parameters not listed are
    inactive (skipped blocks) and must get no gradient.
    """

    elastic: nn.Module
    reference: nn.Module
    activate: Callable[[nn.Module, torch.device], None]
    make_input: Callable[[torch.dtype, torch.device], tuple[Any, ...]]
    slices: dict[str, tuple[str, Slicer]]
    run: Callable[..., Tensor] = field(default=lambda module, *args: module(*args))
    train: bool = True


def _size(rng: random.Random, full: int) -> int:
    return rng.randint(1, full)


def _prefix_or_index(rng: random.Random, full: int) -> tuple[int | list[int], Slicer, Slicer]:
    """An active selection of an axis: a prefix length, or (a third of the time) sorted indices.

    Returns the selection and by-hand slicers for axis 0 and axis 1.
    """
    if rng.random() < 1 / 3:
        index = sorted(rng.sample(range(full), _size(rng, full)))
        return index, (lambda t: t[index]), (lambda t: t[:, index])
    n = _size(rng, full)
    return n, (lambda t: t[:n]), (lambda t: t[:, :n])


def _as_index(selection: int | list[int], device: torch.device) -> int | Tensor:
    # Index tensors live on the weights' device, as Supernet.set_arch creates them.
    return selection if isinstance(selection, int) else torch.tensor(selection, device=device)


def _count(selection: int | list[int]) -> int:
    return selection if isinstance(selection, int) else len(selection)


def _by_hand(plain: nn.Module, reference: nn.Module, slices: dict[str, tuple[str, Slicer]]) -> nn.Module:
    """Fill ``reference`` with the by-hand slices of ``plain``'s tensors (parameters and buffers)."""
    full = {**dict(plain.named_parameters()), **dict(plain.named_buffers())}
    target = {**dict(reference.named_parameters()), **dict(reference.named_buffers())}
    with torch.no_grad():
        for name, (ref_name, slicer) in slices.items():
            target[ref_name].copy_(slicer(full[name]))
    return reference.double()


def _randomize(module: nn.Module) -> nn.Module:
    """Random affine weights and statistics, so that slicing mistakes change the output."""
    with torch.no_grad():
        for name, tensor in [*module.named_parameters(), *module.named_buffers()]:
            if "running_var" in name:
                tensor.uniform_(0.5, 2.0)
            elif isinstance(tensor, nn.Parameter) or "running_mean" in name:
                tensor.normal_()
    return module.double()


# ----------------------------------------------------------------------------- case factories


def linear_case(dense_cls: type[nn.Module], rng: random.Random) -> Case:
    n_in, n_out = rng.randint(2, 9), rng.randint(2, 9)
    plain = _randomize(dense_cls(n_in, n_out, bias=rng.random() < 0.8))
    inputs, _, in_cols = _prefix_or_index(rng, n_in)
    outputs, out_rows, _ = _prefix_or_index(rng, n_out)
    slices = {"weight": ("weight", lambda t: in_cols(out_rows(t)))}
    if plain.bias is not None:
        slices["bias"] = ("bias", out_rows)
    reference = _by_hand(plain, dense_cls(_count(inputs), _count(outputs), bias=plain.bias is not None), slices)

    def activate(module: nn.Module, device: torch.device) -> None:
        module.active_in, module.active_out = _as_index(inputs, device), _as_index(outputs, device)

    return Case(
        TYPES[dense_cls].convert(plain),
        reference,
        activate,
        lambda dtype, device: (torch.randn(3, _count(inputs), dtype=dtype, device=device),),
        slices,
    )


def conv_case(dense_cls: type[nn.Module], rng: random.Random) -> Case:
    full_kernel = rng.choice([3, 5])
    kernel = rng.choice([k for k in (1, 3, 5) if k <= full_kernel])
    start = (full_kernel - kernel) // 2
    crop: Slicer = lambda t: t[:, :, start : start + kernel, start : start + kernel]  # noqa: E731
    if rng.random() < 0.3:  # depthwise: one channel axis, the groups follow it
        channels = rng.randint(2, 6)
        plain = _randomize(nn.Conv2d(channels, channels, full_kernel, padding=full_kernel // 2, groups=channels))
        active = _size(rng, channels)
        inputs, outputs = active, active
        slices = {"weight": ("weight", lambda t: crop(t[:active])), "bias": ("bias", lambda t: t[:active])}
        reference = nn.Conv2d(active, active, kernel, padding=kernel // 2, groups=active)

        def activate(module: nn.Module, device: torch.device) -> None:
            module.active_out, module.active_kernel = active, kernel
    else:
        n_in, n_out = rng.randint(2, 6), rng.randint(2, 6)
        plain = _randomize(nn.Conv2d(n_in, n_out, full_kernel, padding=full_kernel // 2))
        inputs, _, in_cols = _prefix_or_index(rng, n_in)
        outputs = _size(rng, n_out)
        slices = {
            "weight": ("weight", lambda t: crop(in_cols(t[:outputs]))),
            "bias": ("bias", lambda t: t[:outputs]),
        }
        reference = nn.Conv2d(_count(inputs), outputs, kernel, padding=kernel // 2)

        def activate(module: nn.Module, device: torch.device) -> None:
            module.active_in, module.active_out = _as_index(inputs, device), outputs
            module.active_kernel = kernel

    return Case(
        ElasticConv2d.convert(plain),
        _by_hand(plain, reference, slices),
        activate,
        lambda dtype, device: (torch.randn(2, _count(inputs), 7, 7, dtype=dtype, device=device),),
        slices,
    )


def batch_norm_case(dense_cls: type[nn.Module], rng: random.Random) -> Case:
    return _batch_norm_case(dense_cls, rng, dense_cls)


def batch_norm_act_case(dense_cls: type[nn.Module], rng: random.Random) -> Case:
    """timm's ``BatchNormAct2d``: the activation (or none) after the batch norm of the active channels."""
    act = rng.choice([nn.ReLU, nn.SiLU, None])
    return _batch_norm_case(dense_cls, rng, lambda n: dense_cls(n, apply_act=act is not None, act_layer=act or nn.ReLU))


def _batch_norm_case(dense_cls: type[nn.Module], rng: random.Random, make: Callable[[int], nn.Module]) -> Case:
    features = rng.randint(2, 9)
    plain = _randomize(make(features))
    active, rows, _ = _prefix_or_index(rng, features)
    slices = {name: (name, rows) for name in ("weight", "bias", "running_mean", "running_var")}
    slices["num_batches_tracked"] = ("num_batches_tracked", lambda t: t)
    reference = _by_hand(plain, make(_count(active)), slices)
    spatial = (5,) if dense_cls is nn.BatchNorm1d else (3, 3)

    def activate(module: nn.Module, device: torch.device) -> None:
        module.active_features = _as_index(active, device)

    return Case(
        TYPES[dense_cls].convert(plain),
        reference,
        activate,
        lambda dtype, device: (torch.randn(4, _count(active), *spatial, dtype=dtype, device=device) * 2 + 1,),
        slices,
    )


def layer_norm_case(dense_cls: type[nn.Module], rng: random.Random) -> Case:
    return _layer_norm_case(dense_cls, rng, channels_first=False)


def layer_norm_2d_case(dense_cls: type[nn.Module], rng: random.Random) -> Case:
    """timm's ``LayerNorm2d``: normalises the active channels of an ``(N, C, H, W)`` tensor."""
    return _layer_norm_case(dense_cls, rng, channels_first=True)


def _layer_norm_case(dense_cls: type[nn.Module], rng: random.Random, channels_first: bool) -> Case:
    features = rng.randint(2, 9)
    plain = _randomize(dense_cls(features))
    active = _size(rng, features)
    slices = {name: (name, lambda t: t[:active]) for name in ("weight", "bias")}
    shape = (3, active, 2, 2) if channels_first else (3, 2, active)

    def activate(module: nn.Module, device: torch.device) -> None:
        module.active_features = active

    return Case(
        TYPES[dense_cls].convert(plain),
        _by_hand(plain, dense_cls(active), slices),
        activate,
        lambda dtype, device: (torch.randn(*shape, dtype=dtype, device=device),),
        slices,
    )


def embedding_case(dense_cls: type[nn.Module], rng: random.Random) -> Case:
    vocab, dim = rng.randint(4, 12), rng.randint(2, 9)
    plain = _randomize(nn.Embedding(vocab, dim, padding_idx=0))
    active, _, cols = _prefix_or_index(rng, dim)
    slices = {"weight": ("weight", cols)}

    def activate(module: nn.Module, device: torch.device) -> None:
        module.active_out = _as_index(active, device)

    return Case(
        ElasticEmbedding.convert(plain),
        _by_hand(plain, nn.Embedding(vocab, _count(active), padding_idx=0), slices),
        activate,
        lambda dtype, device: (torch.arange(vocab, device=device).reshape(1, -1),),
        slices,
    )


def _blocks_case(dense_cls: type[nn.Module], rng: random.Random) -> Case:
    n_blocks = rng.randint(2, 5)
    blocks = [nn.Sequential(nn.Linear(4, 4), nn.Tanh()) for _ in range(n_blocks)]
    plain = _randomize(nn.Sequential(*blocks) if dense_cls is nn.Sequential else nn.ModuleList(blocks))
    skipped = frozenset(rng.sample(range(n_blocks), rng.randint(0, n_blocks - 1)))
    kept = [i for i in range(n_blocks) if i not in skipped]
    slices = {
        f"{i}.0.{name}": (f"{j}.0.{name}", lambda t: t) for j, i in enumerate(kept) for name in ("weight", "bias")
    }
    kept_blocks = [copy.deepcopy(plain[i]) for i in kept]
    reference = nn.Sequential(*kept_blocks) if dense_cls is nn.Sequential else nn.ModuleList(kept_blocks)
    elastic_cls = ElasticSequential if dense_cls is nn.Sequential else ElasticModuleList

    def activate(module: nn.Module, device: torch.device) -> None:
        module.skipped = skipped or None

    def run(module: nn.Module, x: Tensor) -> Tensor:
        if isinstance(module, nn.Sequential):
            return module(x)
        for block in module:  # how model code uses a ModuleList
            x = block(x)
        return x

    return Case(
        elastic_cls.convert(plain),
        _by_hand(plain, reference, slices),
        activate,
        lambda dtype, device: (torch.randn(3, 4, dtype=dtype, device=device),),
        slices,
        run=run,
    )


def conv1d_case(dense_cls: type[nn.Module], rng: random.Random) -> Case:
    n_in, n_out = rng.randint(2, 9), rng.randint(2, 9)
    plain = _randomize(dense_cls(n_out, n_in))  # Conv1D(nf, nx); weight is (nx, nf)
    inputs, in_rows, _ = _prefix_or_index(rng, n_in)
    outputs, _, out_cols = _prefix_or_index(rng, n_out)
    slices = {"weight": ("weight", lambda t: out_cols(in_rows(t))), "bias": ("bias", lambda t: t[outputs])}
    if isinstance(outputs, int):
        slices["bias"] = ("bias", lambda t: t[:outputs])

    def activate(module: nn.Module, device: torch.device) -> None:
        module.active_in, module.active_out = _as_index(inputs, device), _as_index(outputs, device)

    return Case(
        TYPES[dense_cls].convert(plain),
        _by_hand(plain, dense_cls(_count(outputs), _count(inputs)), slices),
        activate,
        lambda dtype, device: (torch.randn(2, 3, _count(inputs), dtype=dtype, device=device),),
        slices,
    )


def rms_norm_case(dense_cls: type[nn.Module], rng: random.Random) -> Case:
    features = rng.randint(2, 9)
    plain = _randomize(dense_cls(features, eps=1e-6))
    active = _size(rng, features)
    slices = {"weight": ("weight", lambda t: t[:active])}

    def activate(module: nn.Module, device: torch.device) -> None:
        module.active_features = active

    return Case(
        TYPES[dense_cls].convert(plain),
        _by_hand(plain, dense_cls(active, eps=1e-6), slices),
        activate,
        lambda dtype, device: (torch.randn(2, 3, active, dtype=dtype, device=device),),
        slices,
    )


def gpt2_attention_case(dense_cls: type[nn.Module], rng: random.Random) -> Case:
    """The fused q|k|v attention with its two projections elastic, as the HF adapter sets it up."""
    heads, head_dim = rng.randint(2, 4), 2
    hidden = heads * head_dim
    config = GPT2Config(n_embd=hidden, n_head=heads, attn_pdrop=0.0, resid_pdrop=0.0)
    config._attn_implementation = "eager"
    plain = _randomize(dense_cls(config, layer_idx=0))
    conv1d = TYPES[type(plain.c_attn)]
    plain.c_attn = conv1d.convert(plain.c_attn)
    plain.c_proj = conv1d.convert(plain.c_proj)
    active_heads = _size(rng, heads)
    width = active_heads * head_dim
    qkv = [part * hidden + i for part in range(3) for i in range(width)]
    slices = {
        "c_attn.weight": ("c_attn.weight", lambda t: t[:, qkv]),
        "c_attn.bias": ("c_attn.bias", lambda t: t[qkv]),
        "c_proj.weight": ("c_proj.weight", lambda t: t[:width]),
        "c_proj.bias": ("c_proj.bias", lambda t: t),
    }
    reference = dense_cls(config, layer_idx=0)
    reference.c_attn = type(plain.c_attn)._dense_cls(3 * width, hidden)
    reference.c_proj = type(plain.c_proj)._dense_cls(hidden, width)
    reference.num_heads, reference.split_size = active_heads, width

    def activate(module: nn.Module, device: torch.device) -> None:
        module.active_features = width
        module.c_attn.active_out = torch.tensor(qkv, device=device)
        module.c_proj.active_in = width

    return Case(
        TYPES[dense_cls].convert(plain),
        _by_hand(plain, reference, slices),
        activate,
        lambda dtype, device: (torch.randn(2, 5, hidden, dtype=dtype, device=device),),
        slices,
        run=lambda module, x: module(x)[0],
        train=False,
    )


def conv2d_same_case(dense_cls: type[nn.Module], rng: random.Random) -> Case:
    """timm's ``Conv2dSame``: input-dependent (asymmetric) padding, channels elastic, the kernel whole."""
    kernel, stride = rng.choice([2, 3, 5]), rng.choice([1, 2])
    if rng.random() < 0.5:  # depthwise: one channel axis, the groups follow it
        channels = rng.randint(2, 6)
        plain = _randomize(dense_cls(channels, channels, kernel, stride=stride, groups=channels))
        active = _size(rng, channels)
        inputs, outputs = active, active
        slices = {"weight": ("weight", lambda t: t[:active]), "bias": ("bias", lambda t: t[:active])}
        reference = dense_cls(active, active, kernel, stride=stride, groups=active)

        def activate(module: nn.Module, device: torch.device) -> None:
            module.active_out = active
    else:
        n_in, n_out = rng.randint(2, 6), rng.randint(2, 6)
        plain = _randomize(dense_cls(n_in, n_out, kernel, stride=stride))
        inputs, _, in_cols = _prefix_or_index(rng, n_in)
        outputs = _size(rng, n_out)
        slices = {"weight": ("weight", lambda t: in_cols(t[:outputs])), "bias": ("bias", lambda t: t[:outputs])}
        reference = dense_cls(_count(inputs), outputs, kernel, stride=stride)

        def activate(module: nn.Module, device: torch.device) -> None:
            module.active_in, module.active_out = _as_index(inputs, device), outputs

    size = rng.choice([6, 7])  # an odd size with stride 2 pads more on one side
    return Case(
        TYPES[dense_cls].convert(plain),
        _by_hand(plain, reference, slices),
        activate,
        lambda dtype, device: (torch.randn(2, _count(inputs), size, size, dtype=dtype, device=device),),
        slices,
    )


def timm_attention_case(dense_cls: type[nn.Module], rng: random.Random) -> Case:
    """timm's ``Attention`` with its leading heads and a prefix of the embedding active, as a ViT supernet sets it."""
    dim, heads, head_dim = rng.randint(2, 6), rng.randint(2, 4), 2
    qkv_bias = rng.random() < 0.5
    plain = _randomize(dense_cls(dim, num_heads=heads, attn_head_dim=head_dim, qkv_bias=qkv_bias))
    plain.qkv = TYPES[nn.Linear].convert(plain.qkv)
    plain.proj = TYPES[nn.Linear].convert(plain.proj)
    active_heads, active_dim = _size(rng, heads), _size(rng, dim)
    width, attn_dim = active_heads * head_dim, heads * head_dim
    qkv = [part * attn_dim + i for part in range(3) for i in range(width)]
    slices = {
        "qkv.weight": ("qkv.weight", lambda t: t[qkv][:, :active_dim]),
        "proj.weight": ("proj.weight", lambda t: t[:active_dim, :width]),
        "proj.bias": ("proj.bias", lambda t: t[:active_dim]),
    }
    if qkv_bias:
        slices["qkv.bias"] = ("qkv.bias", lambda t: t[qkv])
    reference = dense_cls(active_dim, num_heads=active_heads, attn_head_dim=head_dim, qkv_bias=qkv_bias)

    def activate(module: nn.Module, device: torch.device) -> None:
        module.active_features = width
        module.qkv.active_in, module.qkv.active_out = active_dim, torch.tensor(qkv, device=device)
        module.proj.active_in, module.proj.active_out = width, active_dim

    return Case(
        TYPES[dense_cls].convert(plain),
        _by_hand(plain, reference, slices),
        activate,
        lambda dtype, device: (torch.randn(2, 5, active_dim, dtype=dtype, device=device),),
        slices,
    )


def stage_case(dense_cls: type[nn.Module], rng: random.Random) -> Case:
    """A RegNet stage skipping some of its blocks; the dense stage keeps the kept blocks' names."""
    depth = rng.randint(2, 4)
    plain = _randomize(dense_cls(depth, 4, 4, stride=1, dilation=1, group_size=2, se_ratio=rng.choice([0.0, 0.25])))
    names = list(plain._modules)
    # At least one block skipped: with none, the stage runs its own (dense) forward.
    skipped = frozenset(rng.sample(range(depth), rng.randint(1, depth - 1)))
    kept = [names[i] for i in range(depth) if i not in skipped]
    reference = copy.deepcopy(plain)
    reference._modules = {name: reference._modules[name] for name in kept}
    slices = {
        f"{block}.{name}": (f"{block}.{name}", lambda t: t)
        for block in kept
        for name, _ in [*plain._modules[block].named_parameters(), *plain._modules[block].named_buffers()]
    }

    def activate(module: nn.Module, device: torch.device) -> None:
        module.skipped = skipped

    return Case(
        TYPES[dense_cls].convert(plain),
        _by_hand(plain, reference, slices),
        activate,
        lambda dtype, device: (torch.randn(2, 4, 5, 5, dtype=dtype, device=device),),
        slices,
    )


def layer_scale_case(dense_cls: type[nn.Module], rng: random.Random) -> Case:
    """timm's ``LayerScale`` (channels last) or ``LayerScale2d`` (channels first): a sliced ``gamma``."""
    features = rng.randint(2, 9)
    plain = _randomize(dense_cls(features))
    active, rows, _ = _prefix_or_index(rng, features)
    slices = {"gamma": ("gamma", rows)}
    shape = (2, _count(active), 3, 3) if dense_cls is LayerScale2d else (2, 3, _count(active))

    def activate(module: nn.Module, device: torch.device) -> None:
        module.active_features = _as_index(active, device)

    return Case(
        TYPES[dense_cls].convert(plain),
        _by_hand(plain, dense_cls(_count(active)), slices),
        activate,
        lambda dtype, device: (torch.randn(*shape, dtype=dtype, device=device),),
        slices,
    )


def convnext_block_case(dense_cls: type[nn.Module], rng: random.Random) -> Case:
    """A ConvNeXt block at a smaller width: its ``gamma`` follows the channels, as the timm adapter plans it."""
    channels, ratio, kernel = rng.randint(2, 6), rng.choice([1, 2]), rng.choice([3, 5])
    conv_mlp = rng.random() < 0.5  # 1x1 convolutions and LayerNorm2d instead of linears and LayerNorm

    def make(n: int) -> nn.Module:
        return dense_cls(n, kernel_size=kernel, mlp_ratio=ratio, conv_mlp=conv_mlp, ls_init_value=1.0)

    plain = _randomize(make(channels))
    active = _size(rng, channels)
    hidden = ratio * active
    for path in ("conv_dw", "norm", "mlp.fc1", "mlp.fc2"):
        parent, _, name = path.rpartition(".")
        owner = plain.get_submodule(parent)
        setattr(owner, name, TYPES[type(getattr(owner, name))].convert(getattr(owner, name)))
    rows: Slicer = lambda t: t[:active]  # noqa: E731
    slices = {
        "gamma": ("gamma", rows),
        "conv_dw.weight": ("conv_dw.weight", rows),
        "conv_dw.bias": ("conv_dw.bias", rows),
        "norm.weight": ("norm.weight", rows),
        "norm.bias": ("norm.bias", rows),
        "mlp.fc1.weight": ("mlp.fc1.weight", lambda t: t[:hidden, :active]),
        "mlp.fc1.bias": ("mlp.fc1.bias", lambda t: t[:hidden]),
        "mlp.fc2.weight": ("mlp.fc2.weight", lambda t: t[:active, :hidden]),
        "mlp.fc2.bias": ("mlp.fc2.bias", rows),
    }

    def activate(module: nn.Module, device: torch.device) -> None:
        module.active_features = module.conv_dw.active_out = module.norm.active_features = active
        module.mlp.fc1.active_in, module.mlp.fc1.active_out = active, hidden
        module.mlp.fc2.active_in, module.mlp.fc2.active_out = hidden, active

    return Case(
        TYPES[dense_cls].convert(plain),
        _by_hand(plain, make(active), slices),
        activate,
        lambda dtype, device: (torch.randn(2, active, 5, 5, dtype=dtype, device=device),),
        slices,
    )


def vision_transformer_case(dense_cls: type[nn.Module], rng: random.Random) -> Case:
    """A ViT at a smaller embedding: class / register tokens and position embedding follow it (no blocks:
    the attention and layer scales have cases of their own)."""
    embed = rng.randint(2, 6)
    options = {"reg_tokens": rng.choice([0, 1]), "global_pool": rng.choice(["token", "avg"])}

    def make(n: int) -> nn.Module:
        return dense_cls(img_size=8, patch_size=4, num_classes=3, embed_dim=n, depth=0, num_heads=1, **options)

    plain = _randomize(make(embed))
    active = _size(rng, embed)
    norm = "norm" if options["global_pool"] == "token" else "fc_norm"
    for path in ("patch_embed.proj", norm, "head"):
        parent, _, name = path.rpartition(".")
        owner = plain.get_submodule(parent)
        setattr(owner, name, TYPES[type(getattr(owner, name))].convert(getattr(owner, name)))
    last: Slicer = lambda t: t[..., :active]  # noqa: E731
    slices = {name: (name, last) for name in ("cls_token", "reg_token", "pos_embed") if name in plain._parameters}
    slices.update(
        {
            "patch_embed.proj.weight": ("patch_embed.proj.weight", lambda t: t[:active]),
            "patch_embed.proj.bias": ("patch_embed.proj.bias", lambda t: t[:active]),
            f"{norm}.weight": (f"{norm}.weight", lambda t: t[:active]),
            f"{norm}.bias": (f"{norm}.bias", lambda t: t[:active]),
            "head.weight": ("head.weight", lambda t: t[:, :active]),
            "head.bias": ("head.bias", lambda t: t),
        }
    )

    def activate(module: nn.Module, device: torch.device) -> None:
        module.active_features = module.patch_embed.proj.active_out = active
        module.get_submodule(norm).active_features = module.head.active_in = active

    return Case(
        TYPES[dense_cls].convert(plain),
        _by_hand(plain, make(active), slices),
        activate,
        lambda dtype, device: (torch.randn(2, 3, 8, 8, dtype=dtype, device=device),),
        slices,
    )


#: Case factory for each elastic class (looked up along the elastic class's MRO, so that the
#: Hugging Face classes created per model class share one factory).
FACTORIES: dict[type, Callable[[type[nn.Module], random.Random], Case]] = {
    ElasticLinear: linear_case,
    ElasticConv2d: conv_case,
    ElasticBatchNorm1d: batch_norm_case,
    ElasticBatchNorm2d: batch_norm_case,
    ElasticLayerNorm: layer_norm_case,
    ElasticEmbedding: embedding_case,
    ElasticSequential: _blocks_case,
    ElasticModuleList: _blocks_case,
}
if _hf_elastic is not None:
    FACTORIES.update(
        {
            _hf_elastic._ElasticConv1D: conv1d_case,
            _hf_elastic._ElasticRMSNorm: rms_norm_case,
            _hf_elastic._ElasticGPT2Attention: gpt2_attention_case,
        }
    )
if _timm_elastic is not None:
    FACTORIES.update(
        {
            _timm_elastic._ElasticBatchNormAct: batch_norm_act_case,
            _timm_elastic._ElasticLayerNorm2d: layer_norm_2d_case,
            _timm_elastic._ElasticConv2dSame: conv2d_same_case,
            _timm_elastic._ElasticAttention: timm_attention_case,
            _timm_elastic._ElasticStage: stage_case,
            # Vector-holding classes differ in how their forward uses the vectors: one case per class.
            TYPES[LayerScale]: layer_scale_case,
            TYPES[LayerScale2d]: layer_scale_case,
            TYPES[ConvNeXtBlock]: convnext_block_case,
            TYPES[VisionTransformer]: vision_transformer_case,
        }
    )


def factory_for(elastic_cls: type[ElasticModule]) -> Callable[[type[nn.Module], random.Random], Case] | None:
    return next((FACTORIES[k] for k in elastic_cls.__mro__ if k in FACTORIES), None)


def make_case(dense_cls: type[nn.Module], seed: int) -> Case:
    elastic_cls = TYPES[dense_cls]
    factory = factory_for(elastic_cls)
    if factory is None:
        pytest.fail(
            f"{elastic_cls.__name__} (for {dense_cls.__name__}) is a registered elastic type without a case "
            "factory in tests/test_elastic_harness.py: add one."
        )
    torch.manual_seed(seed)
    case = factory(dense_cls, random.Random(f"{dense_cls.__name__}-{seed}"))
    case.activate(case.elastic, torch.device("cpu"))
    case.elastic.train(case.train)
    case.reference.train(case.train)
    return case


REGISTERED = list(TYPES)
SEEDS = range(4)


def _case_id(dense_cls: type[nn.Module]) -> str:
    # timm's Linear and LayerNorm get elastic classes named like torch's: name the family too.
    family = dense_cls.__module__.partition(".")[0]
    name = TYPES[dense_cls].__name__
    return name if family == "torch" else f"{family}.{name}"


CASES = [pytest.param(d, s, id=f"{_case_id(d)}-{s}") for d in REGISTERED for s in SEEDS]


def test_every_registered_type_has_a_case_factory() -> None:
    # Checked at run time too: the adapters register types for the model classes they meet.
    missing = [cls.__name__ for cls in TYPES.values() if factory_for(cls) is None]
    assert missing == [], f"registered elastic types without a case factory: {missing}"
    expected = {nn.Linear, nn.Conv2d, nn.BatchNorm1d, nn.BatchNorm2d, nn.LayerNorm, nn.Embedding}
    assert expected | {nn.Sequential, nn.ModuleList} <= set(REGISTERED)
    if _hf_elastic is not None:
        assert {Conv1D, LlamaRMSNorm, GPT2Attention} <= set(REGISTERED)
    if _timm_elastic is not None:
        timm_types = {BatchNormAct2d, LayerNorm2d, TimmLayerNorm, TimmLinear, Conv2dSame, TimmAttention, RegStage}
        assert timm_types | {LayerScale, LayerScale2d, ConvNeXtBlock, VisionTransformer} <= set(REGISTERED)


def _dense(elastic: nn.Module) -> nn.Module:
    """The plain module of the active sub-network, every elastic part converted (Supernet.extract's way)."""
    return _densify(copy.deepcopy(elastic))


def _state(module: nn.Module) -> dict[str, Tensor]:
    return {name: t.detach().clone() for name, t in [*module.named_parameters(), *module.named_buffers()]}


def _assert_matches_reference(case: Case, out: Tensor, ref_out: Tensor, before: dict[str, Tensor]) -> None:
    torch.testing.assert_close(out, ref_out)
    # Buffers the forward updates (batch-norm statistics) change on the active slice exactly as the
    # reference's do, and nowhere else.
    after = dict(case.elastic.named_buffers())
    reference = dict(case.reference.named_buffers())
    for name, (ref_name, slicer) in case.slices.items():
        if name in after:
            torch.testing.assert_close(slicer(after[name]), reference[ref_name], msg=f"buffer {name}")
            _assert_outside_equal(after[name], before[name], slicer, f"buffer {name}")


def _outside(tensor: Tensor, slicer: Slicer) -> Tensor:
    """Mask of the entries of ``tensor`` that the slice does not reach."""
    positions = torch.arange(tensor.numel()).reshape(tensor.shape)
    mask = torch.ones(tensor.numel(), dtype=torch.bool)
    mask[slicer(positions).flatten()] = False
    return mask.reshape(tensor.shape)


def _assert_outside_equal(value: Tensor, expected: Tensor, slicer: Slicer, what: str) -> None:
    if value.dim() == 0:
        return
    outside = _outside(value, slicer)
    torch.testing.assert_close(value[outside], expected[outside], msg=f"{what}: changed outside the active slice")


def _active_shapes(elastic: ElasticModule) -> tuple[dict[str, tuple[int, ...]], dict[str, Any]]:
    """What an active slice changes: the kept tensors' shapes and the dense module's size attributes."""
    tensors = {name: tuple(t.shape) for name, t in elastic.active_tensors().items()}
    return tensors, {k: v for k, v in elastic._dense_attributes().items() if k != "_modules"}


@pytest.mark.parametrize("dense_cls", REGISTERED, ids=_case_id)
def test_every_type_answers_for_its_axes(dense_cls: type[nn.Module]) -> None:
    """Each elastic class names its axes and their full lengths; setting an axis to its length keeps
    the whole module, one entry less shrinks it."""
    elastic = make_case(dense_cls, 0).elastic
    cls = type(elastic)
    assert {axis.active for axis in cls.elastic_axes.values()} <= set(cls._elastic_attrs)
    assert cls.default_role is None or cls.default_role in cls.elastic_axes
    lengths = cls.axis_lengths(elastic)  # the elastic module holds the plain module's attributes
    assert set(lengths) == set(cls.elastic_axes), f"{cls.__name__} answers {lengths} for axes {cls.elastic_axes}"
    for role, length in lengths.items():
        attr = cls.active_attr(role)
        assert cls.axis_length(elastic, role) == length
        elastic.reset_active()
        full = _active_shapes(elastic)
        object.__setattr__(elastic, attr, length)
        assert _active_shapes(elastic) == full, f"{cls.__name__}: {role!r} is longer than {length}"
        if length > 1 and not (role == "in" and getattr(elastic, "is_depthwise", False)):
            object.__setattr__(elastic, attr, length - 1)
            assert _active_shapes(elastic) != full, f"{cls.__name__}: {role!r} is not {length} long"
        elastic.reset_active()
    with pytest.raises(ValueError, match=f"{cls.__name__} has no elastic axis 'sideways'"):
        cls.active_attr("sideways")


@pytest.mark.parametrize(("dense_cls", "seed"), CASES)
def test_forward_matches_the_hand_built_reference(dense_cls: type[nn.Module], seed: int) -> None:
    case = make_case(dense_cls, seed)
    args = case.make_input(torch.float64, torch.device("cpu"))
    before = _state(case.elastic)
    out = case.run(case.elastic, *args)
    _assert_matches_reference(case, out, case.run(case.reference, *args), before)


@pytest.mark.parametrize(("dense_cls", "seed"), CASES)
def test_to_dense_is_the_reference(dense_cls: type[nn.Module], seed: int) -> None:
    case = make_case(dense_cls, seed)
    top = case.elastic.to_dense()
    assert type(top) is dense_cls
    # The dense module owns copies of the tensors it holds directly; elastic children are made
    # dense on their own, as Supernet.extract does.
    shared = {t.untyped_storage().data_ptr() for t in [*case.elastic.parameters(), *case.elastic.buffers()]}
    own = [t for t in [*top._parameters.values(), *top._buffers.values()] if t is not None]
    assert all(t.untyped_storage().data_ptr() not in shared for t in own)
    dense = _dense(case.elastic)
    assert not any(isinstance(m, ElasticModule) for m in dense.modules())
    expected = case.reference.state_dict()
    got = dense.state_dict()
    assert list(got) == list(expected)
    for name in expected:
        torch.testing.assert_close(got[name], expected[name], msg=name)
    args = case.make_input(torch.float64, torch.device("cpu"))
    torch.testing.assert_close(case.run(dense, *args), case.run(case.reference, *args))


@pytest.mark.parametrize(("dense_cls", "seed"), CASES)
def test_gradients_reach_only_the_active_slice(dense_cls: type[nn.Module], seed: int) -> None:
    case = make_case(dense_cls, seed)
    args = case.make_input(torch.float64, torch.device("cpu"))
    out = case.run(case.elastic, *args)
    weights = torch.randn_like(out)
    (out * weights).sum().backward()
    (case.run(case.reference, *args) * weights).sum().backward()
    reference = dict(case.reference.named_parameters())
    for name, param in case.elastic.named_parameters():
        if name not in case.slices:
            assert param.grad is None or not param.grad.any(), f"{name}: gradient on an inactive parameter"
            continue
        ref_name, slicer = case.slices[name]
        assert param.grad is not None, f"{name}: no gradient"
        torch.testing.assert_close(slicer(param.grad), reference[ref_name].grad, msg=name)
        _assert_outside_equal(param.grad, torch.zeros_like(param.grad), slicer, f"gradient of {name}")


def _moved(case: Case, dtype: torch.dtype, device: torch.device) -> tuple[Any, ...] | None:
    """Move both modules; None when the plain reference itself does not run there."""
    args = case.make_input(dtype, device)
    case.reference.to(device=device, dtype=dtype)
    try:
        case.run(case.reference, *args)
    except (RuntimeError, NotImplementedError):
        return None
    case.elastic.to(device=device, dtype=dtype)
    case.activate(case.elastic, device)
    return args


@pytest.mark.parametrize(("dense_cls", "seed"), [c for c in CASES if c.values[1] == 0])
@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_dtype_moves(dense_cls: type[nn.Module], seed: int, dtype: torch.dtype) -> None:
    case = make_case(dense_cls, seed)
    args = _moved(case, dtype, torch.device("cpu"))
    if args is None:
        pytest.skip(f"{dense_cls.__name__} does not run in {dtype} on CPU")
    out = case.run(case.elastic, *args)
    assert out.dtype == case.run(case.reference, *args).dtype
    tolerance = {"atol": 3e-2, "rtol": 3e-2} if dtype == torch.bfloat16 else {}
    torch.testing.assert_close(out, case.run(case.reference, *args), **tolerance)
    dense = _dense(case.elastic)
    assert all(p.dtype == dtype for p in dense.parameters())
    torch.testing.assert_close(case.run(dense, *args), case.run(case.reference, *args), **tolerance)


DEVICES = [
    "meta",
    pytest.param("cuda", marks=pytest.mark.skipif(not torch.cuda.is_available(), reason="CUDA is not available here")),
]


@pytest.mark.parametrize(("dense_cls", "seed"), [c for c in CASES if c.values[1] == 0])
@pytest.mark.parametrize("device", DEVICES)
def test_device_moves(dense_cls: type[nn.Module], seed: int, device: str) -> None:
    case = make_case(dense_cls, seed)
    args = _moved(case, torch.float64 if device != "cuda" else torch.float32, torch.device(device))
    if args is None:
        pytest.skip(f"{dense_cls.__name__} does not run on {device}")
    out = case.run(case.elastic, *args)
    expected = case.run(case.reference, *args)
    dense = _dense(case.elastic)
    assert out.device.type == device and out.shape == expected.shape
    assert [(n, t.shape, t.device.type) for n, t in dense.state_dict().items()] == [
        (n, t.shape, t.device.type) for n, t in case.reference.state_dict().items()
    ]
    if device != "meta":  # meta tensors have shapes, not values
        torch.testing.assert_close(out, expected)
        torch.testing.assert_close(case.run(dense, *args), expected)


def test_a_type_registered_without_a_factory_is_reported() -> None:
    class Odd(nn.Linear):
        pass

    class ElasticOdd(ElasticLinear, Odd):
        _dense_cls = Odd

    class Unknown(nn.Module):
        pass

    class ElasticUnknown(ElasticModule, Unknown):
        _dense_cls = Unknown

    register_elastic_type(Odd, ElasticOdd)
    register_elastic_type(Unknown, ElasticUnknown)
    try:
        assert factory_for(ElasticOdd) is linear_case  # found along the MRO
        assert factory_for(ElasticUnknown) is None
        with pytest.raises(pytest.fail.Exception, match="ElasticUnknown .*without a case factory"):
            make_case(Unknown, 0)
    finally:
        del ELASTIC_TYPES[Odd], ELASTIC_TYPES[Unknown]
