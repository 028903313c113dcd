"""SupernetCallback inside real Trainer.fit runs, on an unchanged LightningModule."""

from __future__ import annotations

import lightning as L
import pytest
import torch
import torch.nn.functional as F
from lightning.pytorch.callbacks import ModelCheckpoint
from lightning.pytorch.plugins import MixedPrecision
from lightning.pytorch.utilities.exceptions import MisconfigurationException
from torch.utils.data import DataLoader, TensorDataset

from lightning_nas import Supernet
from lightning_nas.callbacks import SupernetCallback
from lightning_nas.demo import DigitsClassifier, DigitsDataModule
from lightning_nas.elastic import ElasticModule
from lightning_nas.proxies import warmup
from lightning_nas.strategies import InstaTune, Sandwich, SinglePath, distillation_loss, output_tensor


def _trainer(tmp_path, callbacks, **kwargs) -> L.Trainer:
    options = dict(
        max_epochs=1,
        limit_train_batches=4,
        limit_val_batches=1,
        num_sanity_val_steps=0,
        default_root_dir=tmp_path,
        logger=False,
        enable_checkpointing=False,
        enable_progress_bar=False,
        enable_model_summary=False,
    )
    options.update(kwargs)
    return L.Trainer(callbacks=callbacks, **options)


def _module() -> DigitsClassifier:
    return DigitsClassifier(width=8, hidden=16, blocks=2)


class CountingClassifier(DigitsClassifier):
    """Counts forward calls of the network per training step."""

    def __init__(self, **kwargs) -> None:
        super().__init__(**kwargs)
        self.calls = 0
        self.model.register_forward_hook(lambda *args: setattr(self, "calls", self.calls + 1))

    def on_train_start(self) -> None:
        self.calls = 0  # the supernet ran the model while tracing it at setup


@pytest.mark.parametrize(
    ("strategy", "nets_per_step"),
    [(Sandwich(num_random=2), 4), (InstaTune(), 2), (SinglePath(), 1), ("sandwich", 4)],
)
def test_each_strategy_trains_in_a_real_fit(tmp_path, strategy, nets_per_step) -> None:
    module = CountingClassifier(width=8, hidden=16, blocks=2)
    before = {k: v.clone() for k, v in module.state_dict().items()}
    callback = SupernetCallback(strategy=strategy, module="model")
    trainer = _trainer(tmp_path, [callback], limit_val_batches=0)
    trainer.fit(module, DigitsDataModule())
    assert trainer.global_step == 4
    assert module.calls == 4 * nets_per_step
    assert any(isinstance(m, ElasticModule) for m in module.model.modules())
    changed = [k for k, v in module.state_dict().items() if not torch.equal(v, before[k])]
    assert changed
    if nets_per_step > 1:
        assert "nas/distill_loss" in trainer.callback_metrics


class ZeroLossClassifier(DigitsClassifier):
    """training_step's loss has no gradient: only the distilled students can move the weights."""

    def training_step(self, batch, batch_idx):
        return super().training_step(batch, batch_idx) * 0.0

    def configure_optimizers(self):
        return torch.optim.SGD(self.parameters(), lr=0.5)


def test_students_are_backpropagated_inside_automatic_optimization(tmp_path) -> None:
    module = ZeroLossClassifier(width=8, hidden=16, blocks=2)
    before = module.model.fc.weight.detach().clone()
    trainer = _trainer(tmp_path, [SupernetCallback(strategy=Sandwich(num_random=0), module="model")])
    trainer.fit(module, DigitsDataModule())
    assert not torch.equal(module.model.fc.weight, before)
    assert trainer.callback_metrics["nas/distill_loss"] > 0


@pytest.mark.parametrize("precision", ["bf16-mixed", "16-mixed with a GradScaler"])
def test_accumulation_clipping_and_mixed_precision(tmp_path, precision) -> None:
    module = _module()
    options: dict = {"precision": precision}
    if precision.endswith("GradScaler"):
        # Lightning only scales fp16 losses on CUDA; force the scaler so the students' scaled
        # backward goes through the same path as on a GPU.
        options = {
            "plugins": [MixedPrecision("16-mixed", "cpu", scaler=torch.amp.GradScaler("cpu", init_scale=2.0**8))]
        }
    steps = []
    module.on_before_optimizer_step = lambda optimizer: steps.append(
        max(p.grad.abs().max() for p in module.parameters() if p.grad is not None)
    )
    trainer = _trainer(
        tmp_path,
        [SupernetCallback(strategy="sandwich", module="model")],
        accumulate_grad_batches=2,
        gradient_clip_val=0.5,
        **options,
    )
    trainer.fit(module, DigitsDataModule())
    assert trainer.global_step == 2  # 4 batches, one optimizer step per 2
    assert len(steps) == 2 and all(torch.isfinite(g) for g in steps)
    assert torch.isfinite(trainer.callback_metrics["nas/distill_loss"])


def test_resume_from_checkpoint_restores_callback_and_weights(tmp_path) -> None:
    checkpoint = ModelCheckpoint(dirpath=tmp_path / "ckpt", save_last=True)
    first = SupernetCallback(strategy="spos", module="model", space={"fc": [4, 16]}, seed=3)
    trainer = _trainer(tmp_path, [first, checkpoint], enable_checkpointing=True)
    module = _module()
    trainer.fit(module, DigitsDataModule())
    rng_after_first = first._rng.getstate()
    path = tmp_path / "ckpt" / "last.ckpt"
    assert path.exists()
    # The checkpoint keeps the supernet's small state as plain data (space and arch), not weights.
    saved = [s for s in torch.load(path, weights_only=True)["callbacks"].values() if "supernet" in s]
    assert saved == [first.state_dict()] and saved[0]["supernet"] == first.supernet.supernet_state()
    assert set(saved[0]["supernet"]) == {"space", "arch"} and saved[0]["supernet"]["space"]["fc"] == [4, 16]

    resumed = SupernetCallback(strategy="spos", module="model", space={"fc": [4, 16]}, seed=3)
    fresh = _module()
    trainer = _trainer(tmp_path, [resumed], max_epochs=1)
    trainer.fit(fresh, DigitsDataModule(), ckpt_path=str(path))
    # Nothing left to train in epoch 0: the restored state is untouched.
    assert resumed._rng.getstate() == rng_after_first
    assert resumed.supernet.space.to_dict() == first.supernet.space.to_dict()
    for (name, a), b in zip(module.state_dict().items(), fresh.state_dict().values()):
        torch.testing.assert_close(a, b, msg=name)

    # And training goes on from there.
    trainer = _trainer(tmp_path, [resumed], max_epochs=2)
    trainer.fit(fresh, DigitsDataModule(), ckpt_path=str(path))
    assert trainer.global_step == 8


def test_missing_example_input_fails_before_training(tmp_path) -> None:
    module = _module()
    module.example_input_array = None
    trainer = _trainer(tmp_path, [SupernetCallback(module="model")])
    with pytest.raises(MisconfigurationException, match="example_input_array"):
        trainer.fit(module, DigitsDataModule())
    assert trainer.global_step == 0


def test_unknown_submodule_and_strategy_are_named(tmp_path) -> None:
    trainer = _trainer(tmp_path, [SupernetCallback(module="backbone")])
    with pytest.raises(MisconfigurationException, match="no such submodule"):
        trainer.fit(_module(), DigitsDataModule())
    with pytest.raises(ValueError, match="unknown training strategy 'bogus'"):
        SupernetCallback(strategy="bogus")


def test_bad_space_fails_before_training(tmp_path) -> None:
    trainer = _trainer(tmp_path, [SupernetCallback(module="model", space={"fc": [8, 999]})])
    with pytest.raises(MisconfigurationException, match="cannot restrict dimension 'fc'"):
        trainer.fit(_module(), DigitsDataModule())
    assert trainer.global_step == 0


class CallsSubmodule(DigitsClassifier):
    def training_step(self, batch, batch_idx):
        x, y = batch
        return torch.nn.functional.cross_entropy(self.model(x), y)


def test_students_need_the_network_that_training_step_calls(tmp_path) -> None:
    # The supernet is the whole LightningModule, but training_step bypasses its forward.
    trainer = _trainer(tmp_path, [SupernetCallback(strategy="sandwich")])
    with pytest.raises(MisconfigurationException, match="pass `module=`"):
        trainer.fit(CallsSubmodule(width=8, hidden=16, blocks=2), DigitsDataModule())


def test_spos_validation_uses_recalibrated_statistics(tmp_path) -> None:
    module = _module()
    callback = SupernetCallback(strategy="spos", module="model")
    trainer = _trainer(tmp_path, [callback], limit_val_batches=1)
    trainer.fit(module, DigitsDataModule())
    bn = module.model.stem[1]
    snapshot = bn.running_mean.clone()
    trainer.validate(module, DigitsDataModule(), verbose=False)
    torch.testing.assert_close(bn.running_mean, snapshot)  # restored after validation


class RecordingSandwich(Sandwich):
    """The sandwich rule, remembering every student it drew."""

    def __init__(self) -> None:
        super().__init__(num_random=2)
        self.students: list[dict[str, int]] = []

    def sample(self, space, rng, where=None):
        teacher, students = super().sample(space, rng, where)
        self.students.extend(students)
        return teacher, students


def test_limits_train_only_students_the_search_may_export(tmp_path) -> None:
    probe = SupernetCallback(module="model")
    probe.build(_module())
    net = probe.supernet
    limit = 0.2 * net.num_params(net.max_arch())
    strategy = RecordingSandwich()
    callback = SupernetCallback(strategy=strategy, module="model", limits={"params": 0.2})  # a fraction
    _trainer(tmp_path, [callback], limit_val_batches=0).fit(_module(), DigitsDataModule())
    supernet = callback.supernet
    assert len(strategy.students) == 4 * 3
    assert all(supernet.num_params(arch) <= limit for arch in strategy.students)
    assert any(arch != supernet.min_arch() for arch in strategy.students)
    # Without the limit most random draws would be over it.
    unlimited = [net.sample_arch(seed) for seed in range(50)]
    assert sum(net.num_params(arch) > limit for arch in unlimited) > 25


def test_impossible_or_unknown_limits_fail_before_training(tmp_path) -> None:
    for limits, match in (({"params": 10}, "no architecture can meet"), ({"energy": 1.0}, "unknown limits")):
        module = _module()
        before = {k: v.clone() for k, v in module.state_dict().items()}
        callback = SupernetCallback(module="model", limits=limits)
        with pytest.raises(MisconfigurationException, match=match):
            _trainer(tmp_path, [callback]).fit(module, DigitsDataModule())
        assert all(torch.equal(v, before[k]) for k, v in module.state_dict().items())


def test_distill_may_use_the_training_batch(tmp_path) -> None:
    """A three-argument ``distill`` gets the batch: students can learn from labels too."""
    labels_seen = []

    def distill_with_labels(student, teacher, batch):
        _, target = batch
        labels_seen.append(target)
        return 0.5 * distillation_loss(student, teacher) + 0.5 * F.cross_entropy(output_tensor(student), target)

    callback = SupernetCallback(strategy=Sandwich(num_random=1), module="model", distill=distill_with_labels)
    trainer = _trainer(tmp_path, [callback], limit_val_batches=0)
    trainer.fit(_module(), DigitsDataModule())
    assert len(labels_seen) == 4 * 2  # 4 steps, a random student and the smallest
    assert all(t.dtype == torch.long for t in labels_seen)
    assert trainer.callback_metrics["nas/distill_loss"] > 0


class _TinyBN(L.LightningModule):
    """An MLP with batch norm, trained with plain SGD so that one step is easy to reproduce."""

    def __init__(self) -> None:
        super().__init__()
        torch.manual_seed(0)
        self.model = torch.nn.Sequential(
            torch.nn.Linear(6, 16), torch.nn.BatchNorm1d(16), torch.nn.ReLU(), torch.nn.Linear(16, 3)
        )
        self.example_input_array = torch.zeros(2, 6)

    def training_step(self, batch, batch_idx):
        x, y = batch
        return F.cross_entropy(self.model(x), y)

    def configure_optimizers(self):
        return torch.optim.SGD(self.parameters(), lr=0.1)


def test_warmup_and_the_callback_take_the_same_training_step(tmp_path) -> None:
    """One supernet step: the teacher on labels, students distilled with frozen batch-norm statistics."""
    generator = torch.Generator().manual_seed(0)
    x = torch.randn(24, 6, generator=generator)
    loader = DataLoader(TensorDataset(x, torch.randint(0, 3, (24,), generator=generator)), batch_size=8)
    module = _TinyBN()
    copy = _TinyBN().model
    callback = SupernetCallback(strategy=Sandwich(num_random=1), module="model", seed=3)
    _trainer(tmp_path, [callback], limit_val_batches=0, max_steps=3).fit(module, loader)

    net = Supernet(copy, example_input=torch.zeros(2, 6))
    optimizer = torch.optim.SGD(net.model.parameters(), lr=0.1)
    result = warmup(net, list(loader), steps=3, strategy=Sandwich(num_random=1), seed=3, optimizer=optimizer)
    assert result.steps == 3
    trained, warmed = module.model.state_dict(), net.model.state_dict()
    assert any(not torch.equal(v, _TinyBN().model.state_dict()[k]) for k, v in trained.items())
    for key, value in trained.items():  # weights and batch-norm statistics alike
        torch.testing.assert_close(warmed[key], value, atol=1e-6, rtol=0, msg=key)


def test_resume_with_another_strategy_restores_the_state_and_says_so(tmp_path) -> None:
    checkpoint = ModelCheckpoint(dirpath=tmp_path / "ckpt", save_last=True)
    first = SupernetCallback(strategy="sandwich", module="model", seed=3)
    _trainer(tmp_path, [first, checkpoint], enable_checkpointing=True).fit(_module(), DigitsDataModule())
    path = tmp_path / "ckpt" / "last.ckpt"

    resumed = SupernetCallback(strategy="spos", module="model", seed=3)
    with pytest.warns(UserWarning, match=r"trained with Sandwich\(num_random=2, include_min=True\).*SinglePath"):
        _trainer(tmp_path, [resumed]).fit(_module(), DigitsDataModule(), ckpt_path=str(path))
    assert resumed._rng.getstate() == first._rng.getstate()

    # A checkpoint of an earlier version, whose state key contains the strategy, is restored too.
    state = torch.load(path, weights_only=False)
    legacy = SupernetCallback._generate_state_key(first, module="model", strategy=repr(first.strategy))
    state["callbacks"][legacy] = state["callbacks"].pop(first.state_key)
    del state["callbacks"][legacy]["strategy"]
    torch.save(state, tmp_path / "legacy.ckpt")
    again = SupernetCallback(strategy="spos", module="model", seed=5)
    with pytest.warns(UserWarning, match="trained with Sandwich"):
        _trainer(tmp_path, [again]).fit(_module(), DigitsDataModule(), ckpt_path=str(tmp_path / "legacy.ckpt"))
    assert again._rng.getstate() == first._rng.getstate()
