"""Importance reordering: leading units become the important ones, the full model is unchanged."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from lightning_nas import Supernet
from lightning_nas.importance import compute_importance, reorder, reorder_by_importance
from tests.models import MLP, ConcatNet, ResNet


def _assert_reorder_preserves_outputs(net: Supernet, batches: list, run: object, **options: object) -> dict:
    with torch.no_grad():
        before = run(net.model)
    scores = reorder_by_importance(net, batches, **options)
    with torch.no_grad():
        torch.testing.assert_close(run(net.model), before, atol=1e-5, rtol=1e-5)
    for name, score in scores.items():
        assert bool((score.diff() <= 1e-6 * score.max()).all()), f"{name} is not sorted: {score}"
    # Scoring the reordered model again gives the same scores in the new order.
    again = compute_importance(net, batches, **options)
    for name, score in scores.items():
        torch.testing.assert_close(again[name], score, rtol=1e-3, atol=1e-6)
    return scores


@pytest.mark.parametrize("model_cls", [MLP, ConcatNet, ResNet])
@pytest.mark.parametrize("method", ["auto", "gate"])
def test_generic_models_keep_their_function(model_cls: type[nn.Module], method: str) -> None:
    model = model_cls().eval()
    shape = (4, 10) if model_cls is MLP else (4, 3, 8, 8)
    x = torch.randn(*shape)
    net = Supernet(model, example_input=x[:1])
    classes = model(x).shape[-1]
    batches = [(x, torch.randint(0, classes, (4,))) for _ in range(2)]
    scores = _assert_reorder_preserves_outputs(net, batches, lambda m: m(x), method=method)
    assert set(scores) == {name for name, dim in net.space.items() if dim.kind == "width"}


def test_the_important_neuron_moves_first() -> None:
    model = nn.Sequential(nn.Linear(4, 8), nn.ReLU(), nn.Linear(8, 2))
    with torch.no_grad():
        model[2].weight[:, :5] = 0  # neurons 0-4 reach nothing
        model[2].weight[:, 5] *= 50  # neuron 5 dominates
        model[0].bias.fill_(1.0)  # every neuron is active
    net = Supernet(model, example_input=torch.randn(1, 4))
    batches = [(torch.randn(16, 4), torch.randint(0, 2, (16,)))]
    importance = compute_importance(net, batches)
    assert int(importance["0"].argmax()) == 5
    assert torch.all(importance["0"][:5] == 0)
    permutation = reorder(net, importance)["0"]
    assert int(permutation[0]) == 5
    assert set(permutation[-5:].tolist()) == {0, 1, 2, 3, 4}
    small = net.extract({"0": 2})
    assert small[0].weight.shape == (2, 4)
    assert small[2].weight.abs()[:, 0].sum() > 0  # the kept neuron is the one that matters


@pytest.fixture(scope="module")
def hf() -> object:
    return pytest.importorskip("transformers")


def _hf_supernet(name: str) -> Supernet:
    from tests.test_hf_adapters import tiny_supernet

    return tiny_supernet(name)


@pytest.mark.parametrize("name", ["bert", "llama", "gpt2", "qwen3"])
def test_hf_heads_and_neurons_are_reordered_without_changing_the_model(hf: object, name: str) -> None:
    from tests.test_hf_adapters import tiny_inputs

    net = _hf_supernet(name)
    inputs = tiny_inputs(batch=4)
    labels = torch.tensor([0, 1, 0, 1]) if name == "bert" else inputs["input_ids"]
    batches = [{**inputs, "labels": labels}]
    heads_and_ffn = [n for n in net.space if n.startswith("layers.")]
    scores = _assert_reorder_preserves_outputs(net, batches, lambda m: m(**inputs)[0], dims=heads_and_ffn)
    assert scores["layers.0.heads"].numel() == net.space["layers.0.heads"].size  # key/value groups for GQA
    # Sub-networks of the reordered supernet still extract exactly.
    arch = net.sample_arch(2)
    with net.use(arch), torch.no_grad():
        reference = net.model(**inputs)[0]
    with torch.no_grad():
        torch.testing.assert_close(net.extract(arch).eval()(**inputs)[0], reference, atol=1e-5, rtol=0)


def test_hidden_channels_can_be_reordered(hf: object) -> None:
    from tests.test_hf_adapters import tiny_inputs

    net = _hf_supernet("llama")  # tied embeddings: the shared matrix is permuted once
    inputs = tiny_inputs(batch=4)
    _assert_reorder_preserves_outputs(
        net, [{**inputs, "labels": inputs["input_ids"]}], lambda m: m(**inputs)[0], dims=["hidden"]
    )


def test_bad_requests_fail_clearly() -> None:
    net = Supernet(MLP(), example_input=torch.randn(2, 10))
    with pytest.raises(ValueError, match="not width dimensions"):
        compute_importance(net, [], dims=["nope"])
    with pytest.raises(TypeError, match="loss_fn"):
        compute_importance(net, [torch.randn(4, 10)])


@pytest.mark.parametrize("name", ["bert", "qwen3"])
def test_a_global_width_is_sorted_layer_by_layer(hf: object, name: str) -> None:
    """One ``heads`` / ``ffn`` value for all layers still lets each layer keep its own best units."""
    from tests.test_hf_adapters import tiny_inputs, tiny_supernet

    net = tiny_supernet(name, per_layer=False, hidden=False, depth=False)
    layers = len(net.plan.groups["ffn"])
    assert layers > 1 and len(net.plan.groups["heads"]) == layers
    inputs = tiny_inputs(batch=4)
    labels = torch.tensor([0, 1, 0, 1]) if name == "bert" else inputs["input_ids"]
    batches = [{**inputs, "labels": labels}]
    importance = compute_importance(net, batches)
    assert importance["ffn"].shape == (layers, net.space["ffn"].size)
    assert importance["heads"].shape == (layers, net.space["heads"].size)
    # The layers disagree on which units matter, so one shared order would be wrong for some.
    orders = importance["ffn"].argsort(dim=-1, descending=True)
    assert len({tuple(row[:4].tolist()) for row in orders}) > 1
    _assert_reorder_preserves_outputs(net, batches, lambda m: m(**inputs)[0])  # sorted row by row
    arch = {"heads": net.space["heads"].choices[0], "ffn": net.space["ffn"].choices[0]}
    with net.use(arch), torch.no_grad():
        reference = net.model(**inputs)[0]
    with torch.no_grad():
        torch.testing.assert_close(net.extract(arch).eval()(**inputs)[0], reference, atol=1e-5, rtol=0)


def test_one_row_of_scores_orders_every_group_alike(hf: object) -> None:
    from tests.test_hf_adapters import tiny_inputs, tiny_supernet

    net = tiny_supernet("bert", per_layer=False, hidden=False, depth=False)
    inputs = tiny_inputs(batch=2)
    before = net.model(**inputs)[0].detach()
    size = net.space["ffn"].size
    permutation = reorder(net, {"ffn": torch.arange(size, dtype=torch.float)})["ffn"]
    assert permutation.tolist() == list(range(size))[::-1]
    torch.testing.assert_close(net.model(**inputs)[0].detach(), before, atol=1e-5, rtol=1e-5)
    with pytest.raises(ValueError, match="rows"):
        reorder(net, {"ffn": torch.zeros(len(net.plan.groups["ffn"]) + 1, size)})
