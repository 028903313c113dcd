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
