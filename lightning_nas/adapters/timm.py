"""The timm adapter: CNNs, ConvNeXt and vision transformers of timm become elastic, by structure.

The channel tracer of the generic adapter does the coupling; this adapter teaches it timm's
building blocks and adds what a trace cannot know:

- ``BatchNormAct2d``, ``LayerNorm2d`` and timm's ``LayerNorm`` are layers like torch's norms, so
  the features through them (every conv of an EfficientNet, MobileNet, RegNet, MNASNet) shrink;
- parameters laid out along the features (layer scales, ConvNeXt's ``gamma``, a ViT's class and
  register tokens and position embedding) follow the features they meet, so the embedding
  dimension of a ViT and the stage widths of a ConvNeXt are elastic;
- timm's ``Attention`` gets a number of heads per layer (its fused q|k|v reshape is by head).

Squeeze-and-excitation gates, inverted residuals, depthwise kernels (centre crop) and stacks of
skippable blocks (depth) need no timm knowledge: the tracer finds them.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

from torch import nn

from lightning_nas.adapters._plan import ElasticPlan, Segment
from lightning_nas.adapters._timm_pretrained import efficientnet_lite0
from lightning_nas.adapters._trace import SUPPORTED_LEAVES, trace_channels
from lightning_nas.adapters.base import Adapter
from lightning_nas.adapters.generic import DEFAULT_WIDTH_FRACTIONS, default_width_choices, plan_from_trace
from lightning_nas.elastic import ElasticModule
from lightning_nas.space import Width

__all__ = ["VECTOR_NAMES", "TimmAdapter", "efficientnet_lite0"]

#: Parameter names that timm models use for vectors along the features (last axis).
VECTOR_NAMES = ("gamma", "gamma_1", "gamma_2", "cls_token", "reg_token", "dist_token", "pos_embed")


class TimmAdapter(Adapter):
    """Elastic widths, heads, depths and kernels of timm models.

    Dimensions (names as in the arch dict) are named after the module that starts them, as in
    the generic adapter: ``blocks.1.0.conv_pw`` (an expansion width), ``conv_stem`` (a stage width
    shared through residuals), ``blocks.3.mlp.fc1`` (an MLP width), ``patch_embed.proj`` (a ViT's
    embedding dimension), ``blocks.1.depth`` (skippable blocks of a stage), ``....conv_dw.kernel``;
    plus ``{attention path}.heads`` for every timm ``Attention``.

    Options of :meth:`plan`:
        width_fractions: Fractions of each width (and of the heads) offered as choices.
        min_kernel: Smallest kernel size made elastic (kernels shrink by centre crop to 3).
        depth: Whether stacks of skippable blocks get a depth dimension.
        heads: Whether attention layers get a heads dimension.

    Example:
        >>> import timm, torch
        >>> from lightning_nas import Supernet
        >>> vit = timm.create_model("vit_tiny_patch16_224", img_size=32, patch_size=8, depth=2, num_classes=3)
        >>> net = Supernet(vit, example_input=torch.randn(1, 3, 32, 32))
        >>> net.space["blocks.0.attn.heads"].choices, net.space["patch_embed.proj"].choices
        ((1, 2, 3), (48, 96, 144, 192))
    """

    name = "timm"

    def matches(self, model: nn.Module) -> bool:
        return any(type(m).__module__.startswith("timm.") for m in model.modules())

    def plan(
        self,
        model: nn.Module,
        run: Callable[[nn.Module], Any],
        width_fractions: Sequence[float] = DEFAULT_WIDTH_FRACTIONS,
        min_kernel: int = 5,
        depth: bool = True,
        heads: bool = True,
        **options: Any,
    ) -> ElasticPlan:
        if options:
            raise TypeError(f"unknown options for the timm adapter: {sorted(options)}")
        types, leaves, vectors, stages = _elastic_types(model)
        trace = trace_channels(model, run, leaves=SUPPORTED_LEAVES | leaves, vectors=vectors, containers=stages)
        plan = plan_from_trace(model, trace, width_fractions, min_kernel, depth)
        plan.elastic_types.update(types)
        if heads:
            _add_heads(model, plan, width_fractions)
        return plan

    def finalize(self, dense: nn.Module, arch: dict[str, int], plan: ElasticPlan) -> nn.Module:
        """Keep the size attributes of a ViT-style model in step with its (smaller) embedding."""
        for module in dense.modules():
            proj = getattr(getattr(module, "patch_embed", None), "proj", None)
            if isinstance(proj, nn.Conv2d) and hasattr(module, "embed_dim"):
                for attr in ("embed_dim", "num_features", "head_hidden_size"):
                    if isinstance(getattr(module, attr, None), int):
                        setattr(module, attr, proj.out_channels)
        return dense

    def reinitialize(self, dense: nn.Module) -> None:
        """Fresh weights the way timm initialises the model's family.

        After every module's ``reset_parameters``: the model's ``init_weights()`` (ViT, ResNet,
        ...), else the initialiser its timm module applies at construction
        (``efficientnet_init_weights`` for EfficientNet / MobileNet / MNASNet, ``_init_weights``
        for ConvNeXt / RegNet, applied with timm's ``named_apply``).
        """
        import sys

        from timm.models import named_apply

        super().reinitialize(dense)
        for module in dense.modules():
            if not type(module).__module__.startswith("timm.models."):
                continue
            family = sys.modules[type(module).__module__]
            if callable(getattr(module, "init_weights", None)):
                module.init_weights()
            elif callable(getattr(family, "efficientnet_init_weights", None)):
                family.efficientnet_init_weights(module)
            elif callable(getattr(family, "_init_weights", None)):
                named_apply(family._init_weights, module)
            else:
                continue
            return  # the outermost timm model initialises everything below it


def _elastic_types(
    model: nn.Module,
) -> tuple[
    dict[type[nn.Module], type[ElasticModule]],
    frozenset[type[nn.Module]],
    dict[type[nn.Module], tuple[str, ...]],
    frozenset[type[nn.Module]],
]:
    """The elastic classes of the timm classes in ``model`` (for its plan), and the tracer's extra
    leaf types, vector parameters and container types."""
    from timm.layers import Attention, BatchNormAct2d, Conv2dSame, LayerNorm, LayerNorm2d, Linear
    from timm.models.regnet import RegStage

    from lightning_nas.adapters._timm_elastic import (
        elastic_attention,
        elastic_batch_norm_act,
        elastic_conv2d_same,
        elastic_layer_norm,
        elastic_linear,
        elastic_stage,
        elastic_vectors,
    )

    types: dict[type[nn.Module], type[ElasticModule]] = {}
    leaves: set[type[nn.Module]] = set()
    stages: set[type[nn.Module]] = set()
    vectors: dict[type[nn.Module], tuple[str, ...]] = {}
    for module in model.modules():
        cls = type(module)
        if cls is BatchNormAct2d:
            types[cls] = elastic_batch_norm_act(cls)
            leaves.add(cls)
        elif cls in (LayerNorm, LayerNorm2d):
            types[cls] = elastic_layer_norm(cls, channels_first=cls is LayerNorm2d)
            leaves.add(cls)
        elif cls is Conv2dSame:
            types[cls] = elastic_conv2d_same(cls)
            leaves.add(cls)
        elif cls is Linear:
            types[cls] = elastic_linear(cls)
            leaves.add(cls)
        elif cls is Attention:
            types[cls] = elastic_attention(cls)
        elif cls is RegStage:  # `for block in self.children()`
            types[cls] = elastic_stage(cls)
            stages.add(cls)
        # A length-1 "vector" broadcasts over any features: it is not laid out along them.
        names = tuple(
            name
            for name in VECTOR_NAMES
            if module._parameters.get(name) is not None and module._parameters[name].shape[-1] > 1
        )
        if names and cls not in vectors:
            types[cls] = elastic_vectors(cls, names)
            vectors[cls] = names
    return types, frozenset(leaves), vectors, frozenset(stages)


def _add_heads(model: nn.Module, plan: ElasticPlan, width_fractions: Sequence[float]) -> None:
    """A heads dimension for every timm ``Attention`` whose q|k|v width the trace left alone."""
    from timm.layers import Attention

    for path, attn in model.named_modules():
        if type(attn) is not Attention:
            continue
        qkv, proj = f"{path}.qkv", f"{path}.proj"
        if not isinstance(attn.norm, nn.Identity) or attn.gate is not None:
            plan.notes.append(f"{path}: heads fixed (attention output norm or gate)")
            continue
        if (qkv, "out") in plan.layouts or (proj, "in") in plan.layouts or attn.qkv.out_features != 3 * attn.attn_dim:
            plan.notes.append(f"{path}: heads fixed (q|k|v layout not understood)")
            continue
        name = f"{path}.heads"
        heads, size = attn.num_heads, attn.head_dim
        choices = default_width_choices(heads, width_fractions)
        if len(choices) < 2:
            continue
        plan.layouts[(qkv, "out")] = (Segment(name, heads, size),) * 3
        plan.layouts[(proj, "in")] = (Segment(name, heads, size),)
        plan.layouts[(path, "features")] = (Segment(name, heads, size),)
        plan.dimensions[name] = Width([f"{qkv}:out", f"{proj}:in", path], choices, size=heads, name=name)
        # The trace could not follow the q|k|v reshape; the heads dimension now covers it.
        plan.notes = [note for note in plan.notes if not note.startswith(f"{qkv}: width fixed")]
