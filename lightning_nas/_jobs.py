"""Pieces shared by the jobs (``compress``, ``demo``): their output, progress and checkpoints.

One place for the jobs' output, so every phase line looks the same and a log file (no TTY) still
shows progress: Lightning's bar on a terminal, a line every ``interval`` seconds otherwise.
"""

from __future__ import annotations

import os
import shutil
import sys
import time
from pathlib import Path
from typing import Any, TextIO

import lightning as L
from lightning.pytorch.callbacks import ModelCheckpoint

__all__ = [
    "Console",
    "Phases",
    "ResumableCheckpoint",
    "StepProgress",
    "check_out_dir",
    "check_positive",
    "cli_command",
    "dashboard_hint",
    "interactive",
    "module_load_instructions",
]


def check_positive(**values: Any) -> None:
    """A one-line ``ValueError`` for the first option that is not ``None`` and not > 0.

    Example:
        >>> check_positive(epochs=0)
        Traceback (most recent call last):
        ...
        ValueError: epochs must be > 0, got 0
    """
    for option, value in values.items():
        if value is not None and not value > 0:
            raise ValueError(f"{option} must be > 0, got {value}")


def check_out_dir(out: Path) -> None:
    """The output directory can be created (or is a directory): a one-line error otherwise."""
    if out.exists() and not out.is_dir():
        raise NotADirectoryError(f"output directory {out} is a file")
    for parent in out.parents:
        if parent.exists():
            if not parent.is_dir():
                raise NotADirectoryError(f"output directory {out} is under {parent}, which is a file")
            if not os.access(parent, os.W_OK | os.X_OK) and not out.exists():
                raise PermissionError(f"output directory {out} cannot be created: {parent} is not writable")
            return


def interactive(stream: TextIO | None = None) -> bool:
    """Whether ``stream`` (default stdout) is a terminal, where progress bars render."""
    stream = stream or sys.stdout
    return bool(getattr(stream, "isatty", lambda: False)())


def cli_command() -> str:
    """How to run ``lightning-nas`` as printed: works without activating the environment.

    Example:
        >>> cli_command().endswith(("lightning-nas", "lightning_nas.cli"))
        True
    """
    beside = Path(sys.executable).parent / "lightning-nas"
    if beside.is_file():
        return str(beside)
    found = shutil.which("lightning-nas")
    return found or f"{sys.executable} -m lightning_nas.cli"


def dashboard_hint(storage: object) -> str:
    """The line that opens a study storage in optuna-dashboard, as a command that works as printed.

    Example:
        >>> dashboard_hint("sqlite:////tmp/run/nas.db").endswith(" dashboard /tmp/run/nas.db")
        True
    """
    text = str(storage)
    path = text[len("sqlite:///") :] if text.startswith("sqlite:///") else text
    return f"Open the study: {cli_command()} dashboard {path}"


def module_load_instructions(path: str | os.PathLike[str]) -> list[str]:
    """The Python lines that load a plain-torch export; each runs verbatim in a fresh interpreter.

    Example:
        >>> module_load_instructions("/tmp/demo/best_subnet")[0]
        "from lightning_nas.export import load_module; model = load_module('/tmp/demo/best_subnet')"
    """
    path = str(Path(path).absolute())
    return [
        f"from lightning_nas.export import load_module; model = load_module({path!r})",
        f"import torch; model = torch.export.load({str(Path(path) / 'model.pt2')!r}).module()",
    ]


class Console:
    """Prints a job's phases as ``[job mm:ss] phase: detail`` lines, flushed at once.

    Example:
        >>> import io
        >>> console = Console("compress", stream=io.StringIO())
        >>> console.phase("search", "30 trials")
        >>> console.stream.getvalue()[:17], console.stream.getvalue().split("] ")[1]
        ('[compress 00:00] ', 'search: 30 trials\\n')
    """

    def __init__(self, job: str, stream: TextIO | None = None) -> None:
        self.job = job
        self.stream = stream or sys.stdout
        self.start = time.monotonic()

    def _stamp(self) -> str:
        minutes, seconds = divmod(int(time.monotonic() - self.start), 60)
        return f"[{self.job} {minutes:02d}:{seconds:02d}]"

    def phase(self, name: str, detail: str = "") -> None:
        """Announce a phase and its size."""
        self.say(f"{name}: {detail}" if detail else name)

    def say(self, message: str) -> None:
        print(f"{self._stamp()} {message}", file=self.stream, flush=True)


class StepProgress(L.Callback):
    """Prints ``step k/N ... min left`` through a :class:`Console` every ``interval`` seconds and at the end.

    For runs without a terminal (logs, CI, ``nohup``), where Lightning's bar does not render.
    """

    def __init__(self, console: Console, interval: float = 30.0, loss_key: str = "train_loss") -> None:
        self.console = console
        self.interval = interval
        self.loss_key = loss_key
        self._last = self._start = 0.0
        self._first_step = 0

    def on_train_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self._start = self._last = time.monotonic()
        self._first_step = trainer.global_step

    def on_train_batch_end(self, trainer: L.Trainer, pl_module: L.LightningModule, *args: Any) -> None:
        now = time.monotonic()
        total = trainer.estimated_stepping_batches
        done = trainer.global_step
        if now - self._last < self.interval and done < total:
            return
        self._last = now
        rate = (done - self._first_step) / max(now - self._start, 1e-9)
        left = f", about {(total - done) / rate / 60:.1f} min left" if rate > 0 else ""
        loss = trainer.callback_metrics.get(self.loss_key)
        shown = f", {self.loss_key} {float(loss):.4f}" if loss is not None else ""
        epochs = trainer.max_epochs
        epoch = f" (epoch {trainer.current_epoch + 1}/{epochs})" if epochs and epochs > 0 else ""
        self.console.say(f"  step {done}/{total}{epoch}{shown}, {rate:.2f} steps/s{left}")


class Phases(L.Callback):
    """Says when training resumed, and announces what follows fit (list it before ``OneShotSearch``).

    With several searches, one ``Phases`` before each announces it; ``say_resumed=False`` on all
    but the first says the resume once.
    """

    def __init__(self, console: Console, search: str, *, say_resumed: bool = True) -> None:
        self.console = console
        self.search = search
        self.say_resumed = say_resumed

    def on_train_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if self.say_resumed and trainer.global_step:
            self.console.say(f"  resumed at step {trainer.global_step} of {trainer.estimated_stepping_batches}")

    def on_fit_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if not trainer.interrupted:
            self.console.phase("search", self.search)


class ResumableCheckpoint(ModelCheckpoint):
    """``last.ckpt`` every ``every`` optimizer steps and at the end of training, written atomically.

    A kill while saving leaves the previous checkpoint intact (the new one is renamed into place).
    """

    def __init__(self, dirpath: str | Path, every: int) -> None:
        super().__init__(
            dirpath=dirpath, filename="last", every_n_train_steps=every, save_top_k=1, enable_version_counter=False
        )

    def _save_checkpoint(self, trainer: L.Trainer, filepath: str) -> None:
        partial = f"{filepath}.partial"
        super()._save_checkpoint(trainer, partial)
        if trainer.is_global_zero:
            os.replace(partial, filepath)
        self._last_checkpoint_saved = filepath

    def on_train_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if self._last_global_step_saved != trainer.global_step:
            self._save_checkpoint(trainer, str(Path(self.dirpath) / "last.ckpt"))
