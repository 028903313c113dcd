"""Quiet libraries around the project's own calls: scoped, narrow, restored afterwards.

Only what the project's own Trainers and studies cause is filtered, by message, category and
module, inside the scope; the user's logging levels and warning filters are as they were after it,
and a warning the user's own code raises still shows.
"""

from __future__ import annotations

import logging
import warnings
from collections.abc import Iterator
from contextlib import contextmanager

__all__ = ["QUIET_TRAINER", "quiet_lightning", "quiet_optuna"]

#: Library warnings our Trainers trigger on every run, by (message regex, category, module regex).
_LIBRARY_NOISE: tuple[tuple[str, type[Warning], str], ...] = (
    # Lightning's own pytree helper uses a torch class deprecated since torch 2.10.
    (r"`isinstance\(treespec, LeafSpec\)` is deprecated", FutureWarning, r"lightning\.pytorch\.utilities\._pytree"),
    # A tip about DataLoader workers, for every short-lived evaluation Trainer of a search.
    (r"The '\w+' does not have many workers", UserWarning, r"lightning\.pytorch\.trainer\.connectors\.data_connector"),
)

#: ``Trainer`` options of the short-lived Trainers that evaluate or train one architecture: no
#: logger, checkpoints, progress bar or model summary of their own.
QUIET_TRAINER = {
    "logger": False,
    "enable_checkpointing": False,
    "enable_progress_bar": False,
    "enable_model_summary": False,
}


@contextmanager
def quiet_lightning() -> Iterator[None]:
    """Silence the banners and tips a Trainer prints (one per evaluated sub-network or trial).

    Lightning's INFO lines (accelerator banner, logger tips) are off and the library warnings in
    :data:`_LIBRARY_NOISE` are ignored inside the scope; warnings and errors of the user's code still show.

    Example:
        >>> import logging, warnings
        >>> before = logging.getLogger("lightning.pytorch").level
        >>> with warnings.catch_warnings(record=True) as caught, quiet_lightning():
        ...     warnings.warn("the user's own warning")
        >>> [str(w.message) for w in caught], logging.getLogger("lightning.pytorch").level == before
        (["the user's own warning"], True)
    """
    logger = logging.getLogger("lightning.pytorch")
    level = logger.level
    logger.setLevel(logging.WARNING)
    try:
        with warnings.catch_warnings():
            for message, category, module in _LIBRARY_NOISE:
                warnings.filterwarnings("ignore", message=message, category=category, module=module)
            yield
    finally:
        logger.setLevel(level)


@contextmanager
def quiet_optuna() -> Iterator[None]:
    """Optuna's per-trial INFO lines off inside the scope; the user's Optuna verbosity restored after it.

    Example:
        >>> import optuna
        >>> before = optuna.logging.get_verbosity()
        >>> with quiet_optuna():
        ...     optuna.logging.get_verbosity() == optuna.logging.WARNING
        True
        >>> optuna.logging.get_verbosity() == before
        True
    """
    import optuna

    verbosity = optuna.logging.get_verbosity()
    optuna.logging.set_verbosity(max(verbosity, optuna.logging.WARNING))
    try:
        yield
    finally:
        optuna.logging.set_verbosity(verbosity)
