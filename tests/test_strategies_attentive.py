"""AttentiveNAS's Pareto-aware sampling (BestUp / WorstUp) inside real Trainer.fit runs."""

from __future__ import annotations

import lightning as L
import pytest
import torch
import torch.nn.functional as F
from lightning.pytorch.utilities.exceptions import MisconfigurationException

from lightning_nas import Supernet
from lightning_nas.callbacks import SupernetCallback
from lightning_nas.demo import DigitsClassifier, DigitsDataModule
from lightning_nas.proxies import warmup
from lightning_nas.strategies import Attentive, resolve_strategy


def _trainer(tmp_path, callbacks, steps: int = 3) -> L.Trainer:
    return L.Trainer(
        max_steps=steps,
        limit_val_batches=0,
        num_sanity_val_steps=0,
        default_root_dir=tmp_path,
        logger=False,
        enable_checkpointing=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        callbacks=callbacks,
    )


class RecordingClassifier(DigitsClassifier):
    """Keeps each training batch and counts the network's forward calls."""

    def __init__(self) -> None:
        torch.manual_seed(0)
        super().__init__(width=8, hidden=16, blocks=2)
        self.batches: list = []
        self.calls = 0
        self.model.register_forward_hook(lambda *args: setattr(self, "calls", self.calls + 1))

    def on_train_start(self) -> None:
        self.calls = 0  # the supernet ran the model while tracing it at setup

    def training_step(self, batch, batch_idx):
        self.batches.append(batch)
        return super().training_step(batch, batch_idx)


def label_loss(output, batch):
    return F.cross_entropy(output, batch[1])


class CheckedAttentive(Attentive):
    """Records every step's choices and, independently of the strategy's scorer, each candidate's
    label loss: the candidate is extracted as a dense model and run on the step's batch."""

    def __init__(self, module: RecordingClassifier, **kwargs) -> None:
        super().__init__(**kwargs)
        self.module = module
        self.steps: list = []
        self.trained: list = []

    def select(self, supernet, students, score, rng, where=None):
        chosen = super().select(supernet, students, score, rng, where)
        x, y = self.module.batches[-1]
        calls = self.module.calls  # extraction runs the supernet too: not part of the step
        independent = []
        for choice in self.last_choices:
            losses = []
            for arch in choice.candidates:
                dense = supernet.extract(arch).train()  # batch statistics, as in the step
                with torch.no_grad():
                    losses.append(float(F.cross_entropy(dense(x), y)))
            independent.append(losses)
        self.module.calls = calls
        self.steps.append((list(self.last_choices), independent))
        self.trained.append(chosen)
        return chosen


@pytest.mark.parametrize("mode", ["bestup", "worstup"])
def test_attentive_trains_the_best_or_worst_candidate_near_the_target_cost(tmp_path, mode) -> None:
    module = RecordingClassifier()
    before = {k: v.clone() for k, v in module.state_dict().items()}
    strategy = CheckedAttentive(module, mode=mode, k=3, cost="params", tolerance=0.05, criterion=label_loss)
    callback = SupernetCallback(strategy=strategy, module="model", seed=1)
    trainer = _trainer(tmp_path, [callback])
    trainer.fit(module, DigitsDataModule())
    supernet = callback.supernet
    assert trainer.global_step == 3 and len(strategy.steps) == 3
    low, high = supernet.num_params(supernet.min_arch()), supernet.num_params(supernet.max_arch())
    for (choices, independent), trained in zip(strategy.steps, strategy.trained):
        assert len(choices) == 2
        for choice, losses in zip(choices, independent):
            # Every candidate lies within the tolerance band around its target.
            for arch, cost in zip(choice.candidates, choice.costs):
                assert cost == supernet.num_params(arch)
                assert abs(cost - choice.target) <= 0.05 * (high - low)
            # The scorer's losses are those of the extracted candidates on the step's batch...
            torch.testing.assert_close(list(choice.losses), losses, rtol=1e-4, atol=1e-5)
            # ...and the trained one is the lowest-loss (BestUp) or highest-loss (WorstUp) candidate.
            best = (min if mode == "bestup" else max)(range(3), key=losses.__getitem__)
            assert choice.chosen == choice.candidates[best]
        assert trained == [c.chosen for c in choices] + [supernet.min_arch()]
    # Per step: the teacher, 2 x 3 scored candidates, 2 attentive students and the smallest net.
    assert module.calls == 3 * (1 + 2 * 3 + 2 + 1)
    assert any(not torch.equal(v, before[k]) for k, v in module.state_dict().items())
    assert "nas/distill_loss" in trainer.callback_metrics


def _choices_and_weights(tmp_path, seed: int):
    module = RecordingClassifier()
    strategy = CheckedAttentive(module, mode="bestup", cost="params")
    _trainer(tmp_path, [SupernetCallback(strategy=strategy, module="model", seed=seed)], steps=2).fit(
        module, DigitsDataModule()
    )
    picks = [[(c.target, c.candidates, c.chosen) for c in choices] for choices, _ in strategy.steps]
    return picks, module.state_dict()


def test_attentive_sampling_is_reproducible_from_the_seed(tmp_path) -> None:
    first, weights = _choices_and_weights(tmp_path, seed=5)
    again, weights_again = _choices_and_weights(tmp_path, seed=5)
    other, _ = _choices_and_weights(tmp_path, seed=6)
    assert first == again
    for key, value in weights.items():
        torch.testing.assert_close(weights_again[key], value, rtol=0, atol=0, msg=key)
    assert first != other


def test_default_scoring_is_the_distillation_loss_and_flops_a_cost(tmp_path) -> None:
    module = RecordingClassifier()
    strategy = Attentive(cost="flops")  # BestUp-3 on FLOPs, candidates scored against the teacher's outputs
    callback = SupernetCallback(strategy=strategy, module="model")
    _trainer(tmp_path, [callback], steps=2).fit(module, DigitsDataModule())
    supernet = callback.supernet
    band = 0.05 * (supernet.flops(supernet.max_arch()) - supernet.flops(supernet.min_arch()))
    for choice in strategy.last_choices:
        assert all(abs(supernet.flops(a) - choice.target) <= band for a in choice.candidates)
        assert all(loss >= 0 for loss in choice.losses)  # a KL divergence
        assert choice.chosen == choice.candidates[min(range(3), key=choice.losses.__getitem__)]


def test_limits_hold_for_the_attentive_candidates(tmp_path) -> None:
    module = RecordingClassifier()
    strategy = CheckedAttentive(module, cost="params")
    callback = SupernetCallback(strategy=strategy, module="model", limits={"params": 0.3})
    _trainer(tmp_path, [callback], steps=2).fit(module, DigitsDataModule())
    supernet = callback.supernet
    limit = 0.3 * supernet.num_params(supernet.max_arch())
    candidates = [a for choices, _ in strategy.steps for c in choices for a in c.candidates]
    assert len(candidates) == 2 * 2 * 3 and all(supernet.num_params(a) <= limit for a in candidates)


@pytest.mark.parametrize(
    ("options", "message"),
    [
        ({"k": 0}, "k must be an integer >= 1, got 0"),
        ({"k": 2.5}, "k must be an integer >= 1, got 2.5"),
        ({"tolerance": 0.0}, r"tolerance must be a fraction of the cost range in \(0, 1\], got 0.0"),
        ({"tolerance": 1.5}, "tolerance must be"),
        ({"mode": "best"}, "mode must be 'bestup' or 'worstup', got 'best'"),
        ({"cost": "energy"}, "cost must be 'params', 'flops', 'latency' or a callable, got 'energy'"),
        ({"prior": "beta"}, "prior must be 'arch' or 'uniform'"),
    ],
)
def test_bad_options_are_refused_in_one_line_before_training(options, message) -> None:
    with pytest.raises(ValueError, match=message) as error:
        SupernetCallback(strategy=Attentive(**options), module="model")
    assert "\n" not in str(error.value)


def test_names_and_the_warmup_use_the_same_mechanism(tmp_path) -> None:
    assert resolve_strategy("attentive").mode == "bestup" and resolve_strategy("bestup").cost == "params"
    assert resolve_strategy("worstup").mode == "worstup"
    with pytest.raises(MisconfigurationException):  # an unknown submodule still fails before training
        _trainer(tmp_path, [SupernetCallback(strategy="worstup", module="nope")]).fit(
            DigitsClassifier(width=8, hidden=16), DigitsDataModule()
        )
    torch.manual_seed(0)
    net = Supernet(
        torch.nn.Sequential(torch.nn.Linear(4, 16), torch.nn.ReLU(), torch.nn.Linear(16, 3)),
        example_input=torch.zeros(1, 4),
    )
    data = [(torch.randn(8, 4), torch.randint(0, 3, (8,))) for _ in range(3)]
    strategy = Attentive("worstup", k=2, cost="params", tolerance=0.2, prior="uniform")
    result = warmup(net, data, steps=3, strategy=strategy, seed=0)
    assert result.steps == 3 and len(strategy.last_choices) == 2
    for choice in strategy.last_choices:
        assert choice.chosen == choice.candidates[max(range(2), key=choice.losses.__getitem__)]
    assert repr(strategy).startswith("Attentive(mode='worstup', k=2")
