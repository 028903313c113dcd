"""Search throughput: trials per minute with 1, 2 and 4 worker processes on one study, on SQLite,
a journal file and PostgreSQL.

Each worker is the real command ``lightning-nas search CKPT --storage ... --n-trials N`` on the
checkpoint of a small digits supernet trained first. Throughput is counted from the study itself:
evaluated COMPLETE trials (copies of known architectures excluded) divided by the time from the
first trial's start to the last trial's end, so process start-up (importing torch and Lightning)
is not counted.

    PYTHONPATH=. .venv/bin/python benchmarks/search_throughput.py --trials 24
"""

from __future__ import annotations

import argparse
import contextlib
import os
import subprocess
import sys
import tempfile
from pathlib import Path

import lightning as L
import optuna
from lightning.pytorch.callbacks import ModelCheckpoint

from lightning_nas._table import format_table
from lightning_nas.callbacks import OneShotSearch, SupernetCallback
from lightning_nas.demo import DigitsClassifier, DigitsDataModule
from lightning_nas.search import open_storage

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
from tests.postgres import PostgresUnavailable, postgres_server  # noqa: E402


def train_checkpoint(folder: Path, width: int) -> Path:
    search = OneShotSearch(metric="val_acc", n_trials=1, export_dir=False, calibration_batches=1, study_name="fit")
    trainer = L.Trainer(
        max_epochs=1,
        limit_train_batches=4,
        default_root_dir=folder,
        logger=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        callbacks=[SupernetCallback(module="model"), search, ModelCheckpoint(dirpath=folder, save_last=True)],
    )
    trainer.fit(DigitsClassifier(width=width, hidden=2 * width, blocks=1), DigitsDataModule(batch_size=256))
    return folder / "last.ckpt"


def run_workers(checkpoint: Path, storage: str, study: str, trials: int, workers: int) -> float:
    env = {**os.environ, "PYTHONPATH": str(REPO), "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1"}
    command = [sys.executable, "-m", "lightning_nas.cli", "search", str(checkpoint), "--storage", storage]
    command += ["--study", study, "--n-trials", str(trials)]
    processes = [subprocess.Popen(command, env=env, stdout=subprocess.DEVNULL) for _ in range(workers)]
    for process in processes:
        if process.wait() != 0:
            raise RuntimeError(f"a worker failed: {' '.join(command)}")
    complete = optuna.load_study(study_name=study, storage=open_storage(storage)).get_trials(
        states=(optuna.trial.TrialState.COMPLETE,)
    )
    done = [t for t in complete if "copy_of" not in t.user_attrs]  # evaluated, not copied
    span = max(t.datetime_complete for t in done) - min(t.datetime_start for t in done)
    return len(done) / (span.total_seconds() / 60)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--trials", type=int, default=24, help="trials per study (all workers together)")
    parser.add_argument("--workers", default="1,2,4")
    parser.add_argument("--width", type=int, default=8)
    args = parser.parse_args()
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    with tempfile.TemporaryDirectory() as tmp, contextlib.ExitStack() as stack:
        folder = Path(tmp)
        checkpoint = train_checkpoint(folder / "ckpt", args.width)
        storages = {
            "sqlite": lambda study: f"sqlite:///{folder / f'{study}.db'}",
            "journal": lambda study: str(folder / f"{study}.log"),
        }
        (folder / "pg").mkdir()
        try:
            postgres = stack.enter_context(postgres_server(folder / "pg"))
            storages["postgresql"] = lambda study: postgres
        except PostgresUnavailable as err:
            print(f"PostgreSQL skipped: {err}")
        rows = []
        for name, storage in storages.items():
            row = [name]
            for workers in (int(w) for w in args.workers.split(",")):
                study = f"{name}-{workers}"
                rate = run_workers(checkpoint, storage(study), study, args.trials, workers)
                row.append(f"{rate:.1f}")
                print(f"{name}, {workers} workers: {rate:.1f} trials/min", flush=True)
            rows.append(row)
    header = ["storage", *(f"{w} worker(s), trials/min" for w in args.workers.split(","))]
    print("\n" + format_table(header, rows))


if __name__ == "__main__":
    main()
