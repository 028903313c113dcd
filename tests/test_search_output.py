"""What a user sees: OneShotSearch's summary in their own script, numbers that say what they are, no noise."""

from __future__ import annotations

import logging
import subprocess
import sys
import warnings
from collections import OrderedDict
from pathlib import Path

import lightning as L
import optuna
import pytest
import torch

from lightning_nas.apps.digits import DigitsClassifier, DigitsDataModule
from lightning_nas.callbacks import OneShotSearch, SupernetCallback
from lightning_nas.samplers import is_rejection
from lightning_nas.search import one_shot_search
from lightning_nas.supernet import Supernet


class _WarningClassifier(DigitsClassifier):
    """The user's own module, whose validation step warns: the search must not hide it."""

    def validation_step(self, batch, batch_idx):
        warnings.warn("the user's own validation warning", UserWarning, stacklevel=1)
        return super().validation_step(batch, batch_idx)


def _fit(tmp_path: Path, verbose: bool = True, module: L.LightningModule | None = None) -> OneShotSearch:
    L.seed_everything(0, verbose=False)
    search = OneShotSearch(
        metric="val_acc", objectives=("params",), n_trials=3, max_params=0.5, study_name="own", verbose=verbose
    )
    trainer = L.Trainer(
        max_epochs=1,
        limit_train_batches=2,
        callbacks=[SupernetCallback(strategy="sandwich", module="model"), search],
        default_root_dir=str(tmp_path),
        logger=False,
        enable_checkpointing=False,
        enable_model_summary=False,
        enable_progress_bar=False,
    )
    trainer.fit(module or DigitsClassifier(width=4, hidden=8), DigitsDataModule())
    return search


def test_own_script_gets_the_summary_not_optuna_trial_logs(tmp_path, capfd) -> None:
    previous = optuna.logging.get_verbosity()
    optuna.logging.set_verbosity(optuna.logging.INFO)  # a user who wants Optuna's INFO logs elsewhere
    try:
        search = _fit(tmp_path)
        assert optuna.logging.get_verbosity() == optuna.logging.INFO  # the user's setting, unchanged
    finally:
        optuna.logging.set_verbosity(previous)
    out, err = capfd.readouterr()
    printed = out + err
    assert "finished with value" not in printed and "A new study created" not in printed
    full = search.result.study.trials[0].user_attrs["params"]  # trial 0: the full network, enqueued first
    assert f"Pareto front of study 'own' (feasible: params <= 0.5 x full = {0.5 * full:,.0f}), best first" in out
    assert f"Best architecture (trial {search.result.best.number}): {search.result.best_arch}" in out
    assert f"Exported to {search.export_path}" in out
    assert f"load_module({str(search.export_path.absolute())!r})" in out
    assert f" dashboard {(tmp_path / 'nas.db').resolve()}" in out
    # Without a terminal, progress is one line per trial.
    assert len([line for line in out.splitlines() if line.startswith("[search ") and " of 3 done)" in line]) == 3
    assert search.summary() in out


def test_verbose_false_prints_no_summary_and_user_warnings_still_show(tmp_path, capfd) -> None:
    logger = logging.getLogger("lightning.pytorch")
    before = logger.level
    with pytest.warns(UserWarning, match="the user's own validation warning") as caught:
        search = _fit(tmp_path, verbose=False, module=_WarningClassifier(width=4, hidden=8))
    # Raised during the search's own evaluations too (3 trials), not only during fit's validation.
    assert len([w for w in caught if "the user's own validation warning" in str(w.message)]) >= 4
    assert logger.level == before
    out, _ = capfd.readouterr()
    assert "Pareto front" not in out and "Exported to" not in out
    assert search.result is not None and "Pareto front" in search.summary()


def _tiny_supernet() -> Supernet:
    model = torch.nn.Sequential(torch.nn.Linear(4, 16), torch.nn.ReLU(), torch.nn.Linear(16, 8), torch.nn.ReLU())
    model.append(torch.nn.Linear(8, 2))
    return Supernet(model, example_input=torch.randn(1, 4))


def test_pareto_table_names_arch_positions_and_explains_rejected_trial_numbers() -> None:
    net = _tiny_supernet()
    budget = 0.5 * net.num_params(net.max_arch())
    result = one_shot_search(net, lambda arch: sum(arch.values()) / 24, n_trials=6, max_params=budget, seed=0)
    table = result.table()
    rows = table.splitlines()[2 : 2 + len(result.front)]
    # Short architectures read as name=value pairs, in the space's order.
    assert all(
        row.split(maxsplit=3)[3] == " ".join(f"{n}={t.user_attrs['arch'][n]}" for n in net.space)
        for row, t in zip(rows, result.front)
    )
    total = len(result.study.trials)
    rejected = sum(is_rejection(t) for t in result.study.trials)
    assert rejected > 0  # a 50 % budget on this space makes the sampler reject proposals
    ran = f"{total - rejected} of {total} trials ran"
    assert f"include {rejected} over-budget proposals the sampler rejected unevaluated: {ran}" in table


def test_long_arch_gets_a_legend_line() -> None:
    layers = {}
    for name in ("first_projection", "second_projection", "third_projection"):
        layers[name], layers[f"{name}_act"] = torch.nn.Linear(16, 16), torch.nn.ReLU()
    model = torch.nn.Sequential(OrderedDict(layers, output=torch.nn.Linear(16, 2)))
    net = Supernet(model, example_input=torch.randn(1, 16))
    result = one_shot_search(net, lambda arch: sum(arch.values()) / 64, n_trials=3, seed=0)
    lines = result.table().splitlines()
    legend = next(line for line in lines if line.startswith("arch = "))
    assert legend == "arch = " + "/".join(net.space)
    assert lines[2].split()[-1].count("/") == len(net.space) - 1


@pytest.mark.slow
def test_demo_stderr_has_no_library_warnings_or_tips(tmp_path) -> None:
    run = subprocess.run(
        [sys.executable, "-m", "lightning_nas.cli", "demo", "--epochs", "1", "--trials", "3", "--width", "4"]
        + ["--out", str(tmp_path / "demo")],
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert run.returncode == 0, run.stderr[-2000:]
    noise = ("Warning", "deprecated", "Tip:", "litlogger", "num_workers")
    noisy = [line for line in run.stderr.splitlines() if any(word in line for word in noise)]
    assert not noisy, noisy
    assert "GPU available" not in run.stderr and "Trial 1 finished" not in run.stderr + run.stdout
    assert "Pareto front" in run.stdout
