"""One registry pattern (adapters, strategies, proxies, elastic types), explicit dimensions as an adapter,
and elastic types that travel in a plan instead of the global table."""

from __future__ import annotations

import pytest
import torch
from torch import Tensor, nn

from lightning_nas import Supernet, Width
from lightning_nas.adapters import (
    ADAPTERS,
    Adapter,
    ElasticPlan,
    ExplicitDimensionsAdapter,
    GenericAdapter,
    find_adapter,
    register_adapter,
    registered_adapters,
)
from lightning_nas.elastic import ELASTIC_TYPES, ElasticLinear
from lightning_nas.proxies import PROXIES, get_proxy
from lightning_nas.registry import Registry, UnknownKeyError
from lightning_nas.strategies import STRATEGIES, SinglePath, TrainingStrategy, resolve_strategy


# --- the Registry itself -------------------------------------------------------------------------
def test_registry_registers_by_decorator_and_names_the_known_keys_on_a_miss() -> None:
    registry: Registry[str, type] = Registry("widget", normalize=str.lower)

    @registry.register("Round")
    class RoundWidget:
        pass

    registry["square"] = int
    assert registry["ROUND"] is RoundWidget and "round" in registry and "Round" in registry
    assert list(registry) == ["round", "square"]
    registry["round"] = float  # registering again makes it the newest entry
    assert list(registry) == ["square", "round"] and registry["round"] is float
    with pytest.raises(UnknownKeyError) as caught:
        registry["hexagon"]
    message = str(caught.value)
    assert message == "unknown widget 'hexagon'; known: ['round', 'square']"
    assert "\n" not in message
    assert isinstance(caught.value, KeyError) and isinstance(caught.value, ValueError)
    # Keys that the normaliser cannot take, or that cannot be hashed, are misses too.
    assert 3 not in registry and [1] not in registry
    with pytest.raises(UnknownKeyError, match="unknown widget 3"):
        registry[3]  # type: ignore[index]
    with pytest.raises(UnknownKeyError, match="unknown widget 'hexagon'"):
        del registry["hexagon"]
    del registry["square"]
    assert dict(registry) == {"round": float} and registry.get("square") is None


@pytest.mark.parametrize(
    ("lookup", "message"),
    [
        (lambda: find_adapter(nn.Linear(2, 2), "nope"), r"unknown adapter 'nope'; known: \[.*'explicit'.*'generic'"),
        (lambda: resolve_strategy("nope"), r"unknown training strategy 'nope'; known: \[.*'instatune', 'sandwich'"),
        (lambda: get_proxy("nope"), r"unknown proxy 'nope'; known: \[.*'sigeo'"),
        (lambda: ELASTIC_TYPES[nn.ReLU], r"unknown elastic module type <class .*ReLU'>; known: \[.*'Linear'"),
    ],
    ids=["adapter", "strategy", "proxy", "elastic type"],
)
def test_every_table_is_a_registry_with_the_same_one_line_miss(lookup, message) -> None:
    with pytest.raises(UnknownKeyError, match=message) as caught:
        lookup()
    assert "\n" not in str(caught.value)


def test_the_four_tables_are_registries_and_keep_their_mapping_api() -> None:
    for table in (ADAPTERS, STRATEGIES, PROXIES, ELASTIC_TYPES):
        assert isinstance(table, Registry)
    assert ELASTIC_TYPES[nn.Linear] is ElasticLinear and nn.Linear in ELASTIC_TYPES
    assert PROXIES["params"] is get_proxy("params")

    @STRATEGIES.register("Always_Single")
    class AlwaysSingle(SinglePath):
        pass

    try:
        assert isinstance(resolve_strategy("always_single"), AlwaysSingle)
        assert isinstance(resolve_strategy(AlwaysSingle()), TrainingStrategy)
    finally:
        del STRATEGIES["always_single"]
    assert "always_single" not in STRATEGIES


# --- adapters: one registry, the generic one a registered fallback ------------------------------
def test_the_generic_adapter_is_registered_and_tried_last() -> None:
    assert isinstance(ADAPTERS["generic"], GenericAdapter) and isinstance(
        ADAPTERS["explicit"], ExplicitDimensionsAdapter
    )
    assert registered_adapters()[-1] is ADAPTERS["generic"]
    assert find_adapter(nn.Sequential(nn.Linear(2, 2))) is ADAPTERS["generic"]

    class Mine(Adapter):
        name = "mine"

        def matches(self, model: nn.Module) -> bool:
            return isinstance(model, nn.Sequential)

        def plan(self, model, run, **options) -> ElasticPlan:  # noqa: ANN001
            return GenericAdapter().plan(model, run, **options)

    mine = register_adapter(Mine())
    try:
        assert registered_adapters()[0] is mine  # the newest registration is tried first
        assert find_adapter(nn.Sequential(nn.Linear(2, 2))) is mine
        assert find_adapter(nn.Linear(2, 2)) is ADAPTERS["generic"]
        net = Supernet(nn.Sequential(nn.Linear(3, 8), nn.ReLU(), nn.Linear(8, 2)), example_input=torch.randn(1, 3))
        assert net.adapter is mine and set(net.space) == {"0"}
    finally:
        del ADAPTERS["mine"]
    with pytest.raises(TypeError, match="takes an Adapter instance"):
        register_adapter(Mine)  # type: ignore[arg-type]


# --- explicit dimensions are an adapter -----------------------------------------------------------
def test_explicit_dimensions_are_planned_by_the_explicit_adapter() -> None:
    model = nn.Sequential(nn.Linear(6, 8), nn.ReLU(), nn.Linear(8, 2))
    dims = {"hidden": Width(["0:out", "2:in"], [4, 8])}
    net = Supernet(model, dims)  # no example input needed
    assert isinstance(net.adapter, ExplicitDimensionsAdapter) and net.adapter is ADAPTERS["explicit"]
    assert set(net.plan.layouts) == {("0", "out"), ("2", "in")}
    x = torch.randn(3, 6)
    with net.use({"hidden": 4}):
        expected = net(x)
    small = net.extract({"hidden": 4})
    assert small[0].out_features == 4 and small[2].in_features == 4
    torch.testing.assert_close(small(x), expected)
    net.restore()

    # The same plan straight from the adapter, and by name.
    plan = ExplicitDimensionsAdapter().plan(model, None, dimensions=dims)
    assert plan.layouts == net.plan.layouts and plan.elastic_types == {}
    assert Supernet(model, dims, adapter="explicit").space.to_dict() == {"hidden": [4, 8]}


def test_explicit_dimensions_refuse_bad_combinations_before_any_work() -> None:
    model = nn.Sequential(nn.Linear(6, 8), nn.ReLU(), nn.Linear(8, 2))
    dims = {"hidden": Width(["0:out", "2:in"], [4, 8])}
    with pytest.raises(ValueError, match="planned by the 'explicit' adapter, not by 'generic'"):
        Supernet(model, dims, adapter="generic", example_input=torch.randn(1, 6))
    with pytest.raises(ValueError, match="needs `dimensions=`"):
        Supernet(model, adapter="explicit")
    with pytest.raises(TypeError, match=r"unknown options for the explicit adapter: \['width_fractions'\]"):
        Supernet(model, dims, width_fractions=(0.5, 1.0))
    with pytest.raises(ValueError, match=r"not an elastic axis of Linear \(its axes: \['0:in', '0:out'\]\)"):
        Supernet(model, {"w": Width(["0"], [4, 8])})  # a Linear has no default axis
    assert all(not isinstance(m, ElasticLinear) for m in model.modules())  # nothing was converted


# --- elastic types travel in the plan, never through the global table ---------------------------
class Doubled(nn.Linear):
    """A user's own layer type the default registry does not know."""

    def forward(self, input: Tensor) -> Tensor:
        return 2 * super().forward(input)


class ElasticDoubledA(ElasticLinear, Doubled):
    _dense_cls = Doubled

    def forward(self, input: Tensor) -> Tensor:
        return 2 * ElasticLinear.forward(self, input)


class ElasticDoubledB(ElasticDoubledA):
    """The same computation, another class: which one a supernet uses shows whose mapping it read."""


def _doubled_model() -> nn.Sequential:
    return nn.Sequential(Doubled(4, 8), nn.ReLU(), nn.Linear(8, 2))


def test_two_supernets_with_different_elastic_types_do_not_affect_each_other_or_the_registry() -> None:
    before = dict(ELASTIC_TYPES)
    dims = {"hidden": Width(["0:out", "2:in"], [2, 4, 8])}
    first = Supernet(_doubled_model(), dims, elastic_types={Doubled: ElasticDoubledA})
    second = Supernet(_doubled_model(), dims, elastic_types={Doubled: ElasticDoubledB})
    assert type(first.model[0]) is ElasticDoubledA and type(second.model[0]) is ElasticDoubledB
    assert first.plan.elastic_types == {Doubled: ElasticDoubledA}
    assert dict(ELASTIC_TYPES) == before and Doubled not in ELASTIC_TYPES
    # A third supernet without the mapping never sees the other two's types.
    with pytest.raises(ValueError, match="not an elastic axis of Doubled"):
        Supernet(_doubled_model(), dims)
    # Each computes as its own sub-network.
    x = torch.randn(5, 4)
    for net in (first, second):
        with net.use({"hidden": 2}):
            expected = net(x)
        dense = net.extract({"hidden": 2})
        assert type(dense[0]) is Doubled and dense[0].out_features == 2
        torch.testing.assert_close(dense(x), expected)
    with pytest.raises(TypeError, match="ElasticLinear must subclass ElasticModule and Doubled"):
        Supernet(_doubled_model(), dims, elastic_types={Doubled: ElasticLinear})


def test_family_adapters_hand_their_types_to_the_plan_only() -> None:
    timm = pytest.importorskip("timm")
    from timm.layers import LayerScale

    before = dict(ELASTIC_TYPES)
    vit = timm.create_model(
        "vit_tiny_patch16_224", img_size=16, patch_size=8, depth=2, num_classes=3, init_values=0.1
    ).eval()
    net = Supernet(vit, example_input=torch.randn(1, 3, 16, 16))
    assert LayerScale in net.plan.elastic_types and type(net.model.blocks[0].ls1) is net.plan.elastic_types[LayerScale]
    assert dict(ELASTIC_TYPES) == before and LayerScale not in ELASTIC_TYPES
    # The class made for the plan is the one made for any other plan of that type (created once).
    from lightning_nas.adapters._timm_elastic import elastic_vectors

    assert net.plan.elastic_types[LayerScale] is elastic_vectors(LayerScale, ("gamma",))


def test_hf_adapter_types_reach_only_their_supernet() -> None:
    transformers = pytest.importorskip("transformers")
    from transformers.pytorch_utils import Conv1D

    before = dict(ELASTIC_TYPES)
    config = transformers.GPT2Config(n_embd=16, n_layer=2, n_head=2, vocab_size=50, n_positions=16)
    gpt2 = transformers.GPT2LMHeadModel(config).eval()
    net = Supernet(gpt2, example_input={"input_ids": torch.ones(1, 6, dtype=torch.long)})
    assert "ffn" in net.space and Conv1D in net.plan.elastic_types
    assert type(net.model.transformer.h[0].mlp.c_fc) is net.plan.elastic_types[Conv1D]
    assert dict(ELASTIC_TYPES) == before and Conv1D not in ELASTIC_TYPES
    # Explicit dimensions over the same kind of layer need the type given to them.
    plain = transformers.GPT2LMHeadModel(config)
    dims = {"ffn": Width(["transformer.h.0.mlp.c_fc:out", "transformer.h.0.mlp.c_proj:in"], [32, 64])}
    with pytest.raises(ValueError, match="not an elastic axis of Conv1D"):
        Supernet(plain, dims)
    own = Supernet(plain, dims, elastic_types={Conv1D: net.plan.elastic_types[Conv1D]})
    assert own.extract({"ffn": 32}).transformer.h[0].mlp.c_fc.nf == 32


def test_a_checkpoint_of_explicit_dimensions_rebuilds_through_the_explicit_adapter(tmp_path) -> None:
    import lightning as L
    from lightning.pytorch.callbacks import ModelCheckpoint

    from lightning_nas.callbacks import SupernetCallback, load_supernet_checkpoint
    from lightning_nas.callbacks._quiet import QUIET_TRAINER
    from lightning_nas.demo import DigitsClassifier, DigitsDataModule

    dims = {"hidden": Width(["fc:out", "head:in"], [2, 4, 8])}
    callback = SupernetCallback(module="model", dimensions=dims)
    checkpoints = ModelCheckpoint(dirpath=tmp_path, save_last=True)
    options = {**QUIET_TRAINER, "enable_checkpointing": True, "limit_train_batches": 1, "limit_val_batches": 0}
    trainer = L.Trainer(max_epochs=1, default_root_dir=tmp_path, callbacks=[callback, checkpoints], **options)
    trainer.fit(DigitsClassifier(width=4, hidden=8, blocks=1), DigitsDataModule(batch_size=64))
    assert callback.configuration()["adapter"] == "explicit"
    module, rebuilt, _ = load_supernet_checkpoint(tmp_path / "last.ckpt")
    assert isinstance(rebuilt.supernet.adapter, ExplicitDimensionsAdapter)
    assert rebuilt.supernet.space.to_dict() == {"hidden": [2, 4, 8]}
    assert module.model.fc.weight.shape == (8, 32)


def test_a_plan_naming_an_axis_its_elastic_type_lacks_is_refused_before_any_swap() -> None:
    class Sideways(Adapter):
        name = "sideways"
        needs_example_input = False

        def matches(self, model: nn.Module) -> bool:
            return False

        def plan(self, model, run, **options) -> ElasticPlan:  # noqa: ANN001
            plan = ExplicitDimensionsAdapter().plan(model, run, dimensions={"w": Width(["0:out", "2:in"], [4, 8])})
            plan.layouts[("0", "features")] = plan.layouts.pop(("0", "out"))  # a Linear has no features axis
            return plan

    model = nn.Sequential(nn.Linear(6, 8), nn.ReLU(), nn.Linear(8, 2))
    with pytest.raises(ValueError, match="ElasticLinear has no elastic axis 'features'"):
        Supernet(model, adapter=Sideways())
    assert type(model[0]) is nn.Linear and type(model[2]) is nn.Linear
