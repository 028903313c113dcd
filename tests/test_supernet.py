from __future__ import annotations

import random

import pytest
import torch
from torch import nn

from lightning_nas import Depth, Kernel, Supernet, Width
from lightning_nas.elastic import ElasticModule
from lightning_nas.metrics import count_flops, count_params
from tests.models import MLP, ConcatNet, HardCodedView, IndexedBlocks, ResNet

CASES = {
    "mlp": (MLP, (4, 10)),
    "resnet": (ResNet, (2, 3, 8, 8)),
    "concat": (ConcatNet, (2, 3, 8, 8)),
}


def _archs(net: Supernet) -> list[dict[str, int]]:
    return [net.min_arch(), net.max_arch(), *(net.sample_arch(seed) for seed in range(3))]


@pytest.mark.parametrize("case", sorted(CASES))
def test_extracted_subnetworks_match_the_supernet(case: str) -> None:
    model_cls, shape = CASES[case]
    model = model_cls().eval()
    x = torch.randn(*shape)
    reference = model(x)
    net = Supernet(model, example_input=x)
    assert len(net.space) >= 1
    torch.testing.assert_close(net.model(x), reference)  # conversion keeps the function
    for arch in _archs(net):
        with net.use(arch):
            expected = net.model(x)
        dense = net.extract(arch).eval()
        assert not any(isinstance(m, ElasticModule) for m in dense.modules())
        torch.testing.assert_close(dense(x), expected, atol=1e-5, rtol=1e-5)
        assert net.num_params(arch) == count_params(dense)
        assert net.flops(arch) == count_flops(dense, x)
    smallest, largest = net.extract(net.min_arch()), net.extract(net.max_arch())
    assert count_params(smallest) < count_params(largest) == count_params(model_cls())


def test_resnet_dimensions() -> None:
    net = Supernet(ResNet(), example_input=torch.randn(1, 3, 8, 8))
    dims = net.space
    # The residual stream of each stage is one coupled dimension; the head's outputs never shrink.
    assert {"stem.0", "down", "stage.0.conv1", "blocks.0.conv1"} <= set(dims)
    assert isinstance(dims["stage.depth"], Depth) and dims["stage.depth"].blocks == (0, 1, 2)
    assert isinstance(dims["blocks.depth"], Depth)
    assert isinstance(dims["stage.0.conv1.kernel"], Kernel)
    assert "head" not in dims
    assert any("head" in note for note in net.plan.notes)


def test_concat_dimensions_use_index_slices() -> None:
    x = torch.randn(1, 3, 8, 8)
    net = Supernet(ConcatNet(), example_input=x)
    assert set(net.space) >= {"left", "right", "fc"}
    net.set_arch({"left": 2, "right": 6, "fc": 8})
    # after the concatenation the active channels are not one prefix
    assert torch.equal(net.model.bn.active_features, torch.tensor([0, 1, 8, 9, 10, 11, 12, 13]))
    assert net.model.fc.active_in.numel() == 8 * 16


def test_conversion_is_in_place_and_keeps_parameters() -> None:
    model = MLP()
    params = {name: p for name, p in model.named_parameters()}
    net = Supernet(model, example_input=torch.randn(2, 10))
    assert net.model is model
    assert {name: p for name, p in model.named_parameters()} == params  # same objects, same keys
    with pytest.raises(ValueError, match="already a supernet"):
        Supernet(model, example_input=torch.randn(2, 10))


def test_hard_coded_reshape_pins_the_channels() -> None:
    net = Supernet(HardCodedView(), example_input=torch.randn(2, 1, 4, 4))
    assert "conv" not in net.space and "fc" in net.space
    assert any("view to a fixed shape" in note for note in net.plan.notes)


def test_depth_of_an_indexed_modulelist_is_refused() -> None:
    with pytest.raises(ValueError, match="still ran when skipped"):
        Supernet(IndexedBlocks(), example_input=torch.randn(1, 1, 4, 4))
    net = Supernet(IndexedBlocks(), example_input=torch.randn(1, 1, 4, 4), depth=False)
    assert not any(isinstance(d, Depth) for d in net.space.values())


def test_explicit_dimensions() -> None:
    model = nn.Sequential(nn.Linear(6, 32), nn.ReLU(), nn.Linear(32, 16), nn.ReLU(), nn.Linear(16, 2))
    dims = {
        "hidden": Width(["0:out", "2:in"], choices=[8, 16, 32]),
        "second": Width(["2:out", "4:in"], choices=[4, 16]),
    }
    net = Supernet(model, dims, example_input=torch.randn(3, 6))
    x = torch.randn(3, 6)
    with net.use({"hidden": 8, "second": 4}):
        expected = net.model(x)
    small = net.extract({"hidden": 8, "second": 4})
    assert small[0].out_features == 8 and small[2].out_features == 4
    torch.testing.assert_close(small(x), expected)


@pytest.mark.parametrize(
    ("dims", "message"),
    [
        ({"w": Width(["nope:out"], [4, 8])}, "has no module 'nope'"),
        ({"w": Width(["1:out"], [4, 8])}, "not an elastic axis of ReLU"),
        ({"w": Width(["0:out"], [5, 7])}, "not a multiple"),
        ({"w": Width(["0:out", "2:in"], [4, 8]), "v": Width(["0:out"], [4, 8])}, "claimed by two"),
        ({"d": Depth("0", [0, 1], [1, 2])}, "not an nn.Sequential"),
        ({"k": Kernel(["0"], [1, 3])}, "must be an nn.Conv2d"),
        ({"w": Width([], [4, 8])}, "names no axes"),
    ],
)
def test_bad_explicit_dimensions_are_named(dims, message) -> None:
    model = nn.Sequential(nn.Linear(6, 8), nn.ReLU(), nn.Linear(8, 2))
    with pytest.raises(ValueError, match=message):
        Supernet(model, dims)


def test_bad_space_and_arch_are_named() -> None:
    x = torch.randn(2, 10)
    with pytest.raises(ValueError, match="cannot restrict dimension 'fc1'"):
        Supernet(MLP(), example_input=x, space={"fc1": [16, 128]})  # 128 > the layer's 64
    with pytest.raises(KeyError, match="no dimension 'bogus'"):
        Supernet(MLP(), example_input=x, space={"bogus": [1]})
    net = Supernet(MLP(), example_input=x)
    with pytest.raises(ValueError, match="unknown dimension 'bogus'"):
        net.set_arch({"bogus": 3})
    with pytest.raises(ValueError, match="outside"):
        net.set_arch({"fc1": 65})


def test_unsupported_model_and_untraceable_input_are_named() -> None:
    rnn = nn.GRU(4, 8, batch_first=True)
    with pytest.raises(ValueError, match="no elastic dimension"):
        Supernet(rnn, example_input=torch.randn(1, 3, 4))
    with pytest.raises(RuntimeError, match=r"MLP does not run on the example input.*2x7"):
        Supernet(MLP(), example_input=torch.randn(2, 7))
    with pytest.raises(ValueError, match="needs `example_input`"):
        Supernet(MLP())


def test_modules_around_an_unsupported_layer_stay_fixed() -> None:
    class WithAttention(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.inp = nn.Linear(4, 16)
            self.attn = nn.MultiheadAttention(16, 2, batch_first=True)
            self.ff = nn.Linear(16, 32)
            self.out = nn.Linear(32, 1)

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            h = self.inp(x)
            h, _ = self.attn(h, h, h)
            return self.out(torch.relu(self.ff(h)))

    net = Supernet(WithAttention(), example_input=torch.randn(2, 5, 4))
    assert set(net.space) == {"ff"}  # the attention's input width is pinned


def test_batchnorm_recalibration_and_snapshot() -> None:
    model = ResNet()
    x = torch.randn(16, 3, 8, 8)
    net = Supernet(model, example_input=x[:1])
    bn = net.model.stem[1]
    before = bn.running_mean.clone()
    with net.use(net.min_arch()), net.batchnorm_snapshot():
        used = net.recalibrate_batchnorm([(x, None)] * 3)
        assert used == 3
        assert not torch.equal(bn.running_mean, before)
        assert bn.momentum == 0.1 and bn.training  # settings restored
    torch.testing.assert_close(bn.running_mean, before)  # snapshot restored the statistics


def test_supernet_state_round_trip_and_describe() -> None:
    net = Supernet(MLP(), example_input=torch.randn(2, 10), space={"fc1": [16, 64]})
    net.set_arch({"fc1": 16, "fc2": 12})
    other = Supernet(MLP(), example_input=torch.randn(2, 10))
    other.load_supernet_state(net.supernet_state())
    assert other.arch == net.arch and other.space.to_dict() == net.space.to_dict()
    text = net.describe()
    assert "fc1" in text and "width" in text and "architectures" in text


def test_a_refused_model_is_left_untouched_and_restore_undoes_the_conversion() -> None:
    model = IndexedBlocks()
    before = {name: type(m) for name, m in model.named_modules()}
    with pytest.raises(ValueError, match="still ran when skipped"):
        Supernet(model, example_input=torch.randn(1, 1, 4, 4))
    assert {name: type(m) for name, m in model.named_modules()} == before

    model = ResNet()
    x = torch.randn(2, 3, 8, 8)
    net = Supernet(model, example_input=x)
    with torch.no_grad():
        model.head.weight.add_(1.0)  # "training" in the supernet
    expected = net.model.eval()(x)
    plain = net.restore()
    assert plain is model
    assert not any(isinstance(m, ElasticModule) for m in plain.modules())
    torch.testing.assert_close(plain(x), expected)


@pytest.mark.parametrize("name", ["resnet18", "efficientnet_b0", "vit_tiny_patch16_224"])
def test_generic_adapter_on_real_timm_models(name: str) -> None:
    timm = pytest.importorskip("timm")
    model = (
        timm.create_model(name, pretrained=False, num_classes=5, img_size=32)
        if "vit" in name
        else (timm.create_model(name, pretrained=False, num_classes=5))
    )
    x = torch.randn(2, 3, 32, 32)
    net = Supernet(model.eval(), example_input=x)
    assert len(net.space) >= 5
    for arch in (net.min_arch(), net.sample_arch(0)):
        with net.use(arch):
            expected = net.model(x)
        dense = net.extract(arch).eval()
        torch.testing.assert_close(dense(x), expected, atol=1e-5, rtol=1e-5)
        assert count_params(dense) == net.num_params(arch) <= net.num_params(net.max_arch())
    assert net.num_params(net.min_arch()) < net.num_params(net.max_arch())


def test_notes_name_the_root_module_instead_of_an_empty_path() -> None:
    import torch.nn.functional as F

    class RootNorm(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.fc = nn.Linear(4, 16)
            self.weight = nn.Parameter(torch.ones(16))
            self.out = nn.Linear(16, 2)

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return self.out(F.batch_norm(self.fc(x), None, None, self.weight, None, training=True))

    with pytest.raises(ValueError, match="no elastic dimension") as error:
        Supernet(RootNorm(), example_input=torch.randn(3, 4))
    message = str(error.value)
    assert "the model's own parameters: batch_norm on them is not supported" in message
    assert ": : " not in message and "dimension: :" not in message


def test_the_supernet_is_a_module_that_runs_its_active_subnetwork() -> None:
    x = torch.randn(2, 3, 8, 8)
    net = Supernet(ResNet(), example_input=x)
    model = net.model
    assert isinstance(net, nn.Module) and net.get_submodule("model") is model
    arch = net.sample_arch(1)
    net.set_arch(arch)
    assert net.eval() is net and not any(m.training for m in model.modules())
    torch.testing.assert_close(net(x), model(x), rtol=0, atol=0)
    torch.testing.assert_close(net(x), net.extract(arch).eval()(x), atol=1e-5, rtol=1e-5)
    net.train()
    assert all(m.training for m in model.modules())
    assert [id(p) for p in net.parameters()] == [id(p) for p in model.parameters()]
    # PyTorch's convention: state_dict() is the weights, under the submodule's name.
    weights = net.state_dict()
    assert list(weights) == [f"model.{key}" for key in model.state_dict()]
    other = Supernet(ResNet(), example_input=x)
    other.load_state_dict(weights)
    other.set_arch(arch)
    torch.testing.assert_close(other.eval()(x), net.eval()(x), rtol=0, atol=0)
    assert net.to(torch.float64) is net and next(model.parameters()).dtype == torch.float64
    assert net(x.double()).dtype == torch.float64
    plain = net.restore()
    assert plain is model and not any(isinstance(m, ElasticModule) for m in plain.modules())


def test_sample_arch_follows_torch_manual_seed() -> None:
    net = Supernet(ResNet(), example_input=torch.randn(1, 3, 8, 8))
    draws = []
    for seed in range(8):
        torch.manual_seed(seed)
        first = net.sample_arch()
        torch.manual_seed(seed)
        assert net.sample_arch() == first
        assert net.space.validate(first) == first
        draws.append(tuple(sorted(first.items())))
    assert len(set(draws)) > 1  # the seed matters
    assert net.sample_arch(3) == net.sample_arch(3) == net.sample_arch(random.Random(3))
