"""Zero-cost / sub-one-shot proxies on real sub-networks of a small digits supernet."""

from __future__ import annotations

import math

import optuna
import pytest
import torch
import torch.nn.functional as F
from torch.utils.data import DataLoader

from lightning_nas import Supernet
from lightning_nas.demo import DigitsCNN, DigitsDataModule
from lightning_nas.proxies import (
    PROXIES,
    SIGEO_WARMED_UP_WEIGHTS,
    SIGEO_ZERO_SHOT_WEIGHTS,
    ProxyObjective,
    compute_proxy,
    is_warmed_up,
    naswot,
    rank_archs,
    sigeo,
    sigeo_terms,
    warmup,
    zico,
)


def make_supernet(seed: int = 0) -> Supernet:
    torch.manual_seed(seed)
    return Supernet(DigitsCNN(width=8, blocks=2, hidden=32), example_input=torch.zeros(1, 1, 8, 8))


@pytest.fixture(scope="module")
def data() -> DigitsDataModule:
    data = DigitsDataModule(batch_size=32)
    data.setup()
    return data


@pytest.fixture(scope="module")
def batches(data: DigitsDataModule) -> list[tuple[torch.Tensor, torch.Tensor]]:
    loader = DataLoader(data.train_set, batch_size=16)
    return [batch for _, batch in zip(range(4), loader)]


@pytest.fixture(scope="module")
def supernet() -> Supernet:
    return make_supernet()


def middle_arch(supernet: Supernet) -> dict[str, int]:
    """A sub-network strictly between the smallest and the largest in some dimensions."""
    arch = supernet.sample_arch(1)
    assert arch not in (supernet.min_arch(), supernet.max_arch())
    return arch


@pytest.mark.parametrize("name", sorted(PROXIES))
def test_proxy_leaves_supernet_unchanged(name: str, supernet: Supernet, batches: list) -> None:
    model = supernet.model
    arch = middle_arch(supernet)
    active = supernet.sample_arch(7)
    supernet.set_arch(active)
    model.eval()
    generator = torch.Generator().manual_seed(0)
    for p in model.parameters():  # pre-existing gradients must survive scoring untouched
        p.grad = torch.randn(p.shape, generator=generator)
    state = {k: v.clone() for k, v in model.state_dict(keep_vars=False).items()}
    grads = [p.grad.clone() for p in model.parameters()]
    try:
        score = compute_proxy(name, supernet, batches, arch=arch)
        assert math.isfinite(score)
        assert supernet.arch == active
        assert not any(m.training for m in model.modules())
        for key, value in model.state_dict().items():
            assert torch.equal(value, state[key]), f"{name} changed {key}"
        for p, grad in zip(model.parameters(), grads):
            assert torch.equal(p.grad, grad), f"{name} touched a gradient"
    finally:
        for p in model.parameters():
            p.grad = None
        supernet.set_arch(None)
        model.train()


@pytest.mark.parametrize("name", sorted(PROXIES))
def test_inherited_score_equals_extracted_model_score(name: str, supernet: Supernet, batches: list) -> None:
    # Weight entanglement: the sub-network inside the supernet *is* the extracted model.
    arch = middle_arch(supernet)
    inside = compute_proxy(name, supernet, batches, arch=arch)
    extracted = compute_proxy(name, supernet.extract(arch), batches)
    assert inside == pytest.approx(extracted, rel=1e-4, abs=1e-6)


@pytest.mark.parametrize("name", ["params", "flops", "synflow"])
def test_size_proxies_grow_with_the_subnetwork(name: str, supernet: Supernet, batches: list) -> None:
    # min <= arch <= max in every dimension, and each is a slice of the next; synflow sums positive
    # path products, so every extra channel, kernel tap or block adds to it.
    small, middle, large = (
        compute_proxy(name, supernet, batches, arch=a)
        for a in (supernet.min_arch(), middle_arch(supernet), supernet.max_arch())
    )
    assert small < middle < large


def test_naswot_grows_with_the_last_hidden_layer(supernet: Supernet, batches: list) -> None:
    # Extra units of the last hidden layer leave every other activation code unchanged and add a
    # positive semi-definite term to the kernel, so its determinant grows.
    arch = middle_arch(supernet)
    narrow = naswot(supernet, batches, arch={**arch, "fc": supernet.space["fc"].min})
    wide = naswot(supernet, batches, arch={**arch, "fc": supernet.space["fc"].max})
    assert wide > narrow


def test_sigeo_loss_term_prefers_a_trained_model(supernet: Supernet, batches: list) -> None:
    arch = middle_arch(supernet)
    untrained = supernet.extract(arch)
    trained = supernet.extract(arch)
    optimizer = torch.optim.AdamW(trained.parameters(), lr=1e-2)
    for _ in range(3):
        for x, y in batches:
            loss = F.cross_entropy(trained(x), y)
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
    assert sigeo_terms(trained, batches).loss < sigeo_terms(untrained, batches).loss
    only_loss = (0.0, 0.0, 1.0)
    assert sigeo(trained, batches, weights=only_loss) > sigeo(untrained, batches, weights=only_loss)


def test_warmup_trains_the_supernet_and_switches_sigeo_weights(data: DigitsDataModule, batches: list) -> None:
    net = make_supernet(seed=1)
    archs = [net.max_arch(), net.min_arch(), *(net.sample_arch(i) for i in range(3))]

    def mean_loss() -> float:
        losses = []
        with torch.no_grad(), net.batchnorm_snapshot():
            for arch in archs:
                with net.use(arch):
                    losses += [float(F.cross_entropy(net.model(x), y)) for x, y in batches]
        return sum(losses) / len(losses)

    terms = sigeo_terms(net, batches, arch=archs[2])
    assert not is_warmed_up(net)
    assert sigeo(net, batches, arch=archs[2]) == pytest.approx(terms.score(SIGEO_ZERO_SHOT_WEIGHTS))
    before_loss = mean_loss()
    before = [p.detach().clone() for p in net.model.parameters()]
    loader = DataLoader(data.train_set, batch_size=16, shuffle=True, generator=torch.Generator().manual_seed(0))
    result = warmup(net, loader, fraction=0.1, epochs=2, lr=1e-2, seed=0)

    assert result.num_batches == math.ceil(0.1 * len(loader))
    assert result.steps == len(result.losses) == len(result.archs) == 2 * result.num_batches
    assert len({tuple(sorted(a.items())) for a in result.archs}) > 1  # a new sub-network per step
    assert any(not torch.equal(p, q) for p, q in zip(net.model.parameters(), before))
    assert all(p.grad is None for p in net.model.parameters())
    assert net.arch == net.max_arch()
    assert mean_loss() < before_loss
    assert is_warmed_up(net)
    warm_terms = sigeo_terms(net, batches, arch=archs[2])
    assert sigeo(net, batches, arch=archs[2]) == pytest.approx(warm_terms.score(SIGEO_WARMED_UP_WEIGHTS))


def test_warmup_with_the_sandwich_strategy(batches: list) -> None:
    net = make_supernet(seed=2)
    before = [p.detach().clone() for p in net.model.parameters()]
    result = warmup(net, batches, steps=2, strategy="sandwich")
    assert result.archs == [net.max_arch()] * 2
    assert result.num_batches == 2
    # The largest sub-network is the teacher every step: every weight moves.
    assert all(not torch.equal(p, q) for p, q in zip(net.model.parameters(), before) if p.requires_grad)


def test_proxy_objective_in_a_sqlite_study(supernet: Supernet, batches: list, tmp_path) -> None:
    storage = f"sqlite:///{tmp_path / 'proxies.db'}"
    objective = ProxyObjective(supernet, "sigeo", batches)
    study = optuna.create_study(
        study_name="proxy", storage=storage, direction=objective.direction, sampler=optuna.samplers.RandomSampler(0)
    )
    study.optimize(objective, n_trials=3)

    reloaded = optuna.load_study(study_name="proxy", storage=storage)
    assert reloaded.direction == optuna.study.StudyDirection.MAXIMIZE
    trials = reloaded.get_trials(states=(optuna.trial.TrialState.COMPLETE,))
    assert len(trials) == 3
    for trial in trials:
        arch = trial.user_attrs["arch"]
        assert arch == supernet.space.arch_from_params(trial.params)
        assert trial.user_attrs["params"] == supernet.num_params(arch)
        assert trial.user_attrs["flops"] == supernet.flops(arch)
        assert trial.user_attrs["proxy"] == "sigeo"
        assert trial.value == trial.user_attrs["sigeo"] == pytest.approx(sigeo(supernet, batches, arch=arch))


def test_rank_archs_sorts_best_first(supernet: Supernet, batches: list) -> None:
    archs = [supernet.min_arch(), middle_arch(supernet), supernet.max_arch()]
    ranked = rank_archs(supernet, archs, batches, proxy="params")
    assert [arch for arch, _ in ranked] == archs[::-1]
    assert [score for _, score in ranked] == sorted((score for _, score in ranked), reverse=True)


def test_bad_input_gets_a_clear_error(supernet: Supernet, batches: list) -> None:
    with pytest.raises(KeyError, match="unknown proxy 'nope'"):
        compute_proxy("nope", supernet, batches)
    with pytest.raises(ValueError, match="at least 2 batch"):
        zico(supernet, batches[:1])
    with pytest.raises(ValueError, match="selects a sub-network of a Supernet"):
        zico(supernet.extract(), batches, arch=supernet.min_arch())
    with pytest.raises(ValueError, match="cannot find labels"):
        zico(supernet, [x for x, _ in batches])
    with pytest.raises(ValueError, match="fraction"):
        warmup(supernet, batches, fraction=1.5)
