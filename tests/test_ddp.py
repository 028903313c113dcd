"""Supernet training under Lightning's DDP with two real CPU processes (gloo).

:mod:`tests.ddp_job` trains a tiny MLP with every training strategy, with and without gradient
accumulation, under ``strategy="ddp"`` on 2 processes; each rank must end with the same parameters
as the other and as a one-process run over the same global batches, having trained the same
architectures at every step. Tolerance: 1e-6 absolute (float32 sums in another order; the
measured difference is ~3e-8, while a students' gradient that is not averaged moves parameters by
~1e-2).
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path
from types import SimpleNamespace

import lightning as L
import pytest
import torch
from lightning.pytorch.strategies import FSDPStrategy, ModelParallelStrategy
from lightning.pytorch.utilities.exceptions import MisconfigurationException

from lightning_nas.callbacks import SupernetCallback
from lightning_nas.callbacks._ddp import check_strategy
from tests import ddp_job

ROOT = Path(__file__).resolve().parent.parent
TOLERANCE = 1e-6


def _launch(out: Path, strategy: str, runs: list[str], timeout: float) -> None:
    env = {**os.environ, "PYTHONPATH": f"{ROOT}{os.pathsep}{os.environ.get('PYTHONPATH', '')}", "OMP_NUM_THREADS": "1"}
    command = [
        sys.executable,
        "-m",
        "tests.ddp_job",
        str(out),
        "--devices",
        "2",
        "--strategy",
        strategy,
        "--runs",
        *runs,
    ]
    done = subprocess.run(command, cwd=ROOT, env=env, capture_output=True, text=True, timeout=timeout)
    assert done.returncode == 0, done.stderr[-3000:]


def _check(out: Path, name: str, strategy: str, accumulate: int) -> None:
    ranks = [torch.load(out / f"{name}-rank{r}.pt") for r in (0, 1)]
    single = ddp_job.fit(name, strategy, accumulate)
    assert ranks[0]["steps"] == ranks[1]["steps"] == single["steps"] == ddp_job.STEPS
    # The same architectures on every rank at every step, and the ones of the one-process run.
    assert ranks[0]["archs"] == ranks[1]["archs"] == single["archs"]
    assert len(ranks[0]["archs"]) == ddp_job.STEPS * accumulate
    for key, expected in single["params"].items():
        assert torch.equal(ranks[0]["params"][key], ranks[1]["params"][key]), f"{name}: ranks differ in {key}"
        torch.testing.assert_close(ranks[0]["params"][key], expected, atol=TOLERANCE, rtol=0, msg=f"{name}: {key}")
    initial = ddp_job.Tiny().model.state_dict()
    assert any(not torch.allclose(initial[k], v) for k, v in single["params"].items())


@pytest.fixture(scope="module")
def ddp_runs(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """One launch of 2 DDP processes for every run (process start-up dominates the time)."""
    out = tmp_path_factory.mktemp("ddp")
    _launch(out, "ddp", [*(name for name, _, _ in ddp_job.RUNS), "search-logged", "search-torchmetrics"], timeout=300)
    return out


def test_every_strategy_under_ddp_equals_one_process_with_the_global_batch(ddp_runs: Path) -> None:
    for name, strategy, accumulate in ddp_job.RUNS:
        _check(ddp_runs, name, strategy, accumulate)


@pytest.mark.parametrize("metric", ["logged", "torchmetrics"])
def test_the_search_after_a_ddp_fit_runs_once_on_rank_zero(ddp_runs: Path, metric: str) -> None:
    """Rank 0 searches alone while the process group is still up: its metrics must not wait on rank 1."""
    import optuna

    from lightning_nas.samplers import is_rejection

    assert (ddp_runs / f"searched-{metric}-rank0.txt").read_text() == "True"
    assert (ddp_runs / f"searched-{metric}-rank1.txt").read_text() == "False"
    study = optuna.load_study(study_name="ddp", storage=f"sqlite:///{ddp_runs / f'search-{metric}.db'}")
    evaluated = [t for t in study.trials if not is_rejection(t)]
    assert len(evaluated) == 4 and all(t.state == optuna.trial.TrialState.COMPLETE for t in evaluated)
    assert len({t.user_attrs.get("worker") for t in evaluated}) == 1  # one process searched


@pytest.mark.slow
def test_ddp_spawn_equals_one_process(tmp_path) -> None:
    _launch(tmp_path, "ddp_spawn", ["sandwich", "spos-acc2"], timeout=300)
    for name, strategy, accumulate in ddp_job.RUNS:
        if name in ("sandwich", "spos-acc2"):
            _check(tmp_path, name, strategy, accumulate)


@pytest.mark.parametrize(
    ("strategy", "match"),
    [
        (ModelParallelStrategy(), "cannot train under ModelParallelStrategy"),
        ("ddp_manual", "automatic optimization"),
        ("ddp_sync_batchnorm", "sync_batchnorm=True"),
    ],
)
def test_unsupported_parallel_training_is_refused_before_training(tmp_path, strategy, match) -> None:
    module = ddp_job.Tiny()
    if strategy == "ddp_manual":
        module.automatic_optimization = False
    sync_batchnorm = strategy == "ddp_sync_batchnorm"
    if strategy in ("ddp_manual", "ddp_sync_batchnorm"):
        strategy = "ddp"
    before = {k: v.clone() for k, v in module.state_dict().items()}
    trainer = L.Trainer(
        accelerator="cpu",
        devices=1,
        strategy=strategy,
        sync_batchnorm=sync_batchnorm,
        max_steps=1,
        callbacks=[SupernetCallback(module="model")],
        logger=False,
        enable_checkpointing=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        default_root_dir=tmp_path,
    )
    with pytest.raises(MisconfigurationException, match=match):
        trainer.fit(module, datamodule=ddp_job.Data())
    assert all(torch.equal(v, before[k]) for k, v in module.state_dict().items())


def test_fsdp_is_refused_with_the_reason() -> None:
    # Lightning builds FSDPStrategy only on GPUs; the check itself sees the real strategy object.
    trainer = SimpleNamespace(strategy=FSDPStrategy(), world_size=2)
    with pytest.raises(MisconfigurationException, match="FSDP shards the weights.*use strategy='ddp'"):
        check_strategy(trainer, ddp_job.Tiny())
