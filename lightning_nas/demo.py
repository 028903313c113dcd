"""The embedded default job (``lightning-nas demo``): a small CNN on scikit-learn's digits, compressed.

The model and data are ordinary Lightning code (:mod:`lightning_nas.apps.digits`); the supernet,
search and export come from two callbacks in :func:`run_demo`.
"""

from __future__ import annotations

from pathlib import Path

import lightning as L
import torch

# Importable from here too, where the demo's model was defined before ``apps`` existed.
from lightning_nas.apps.digits import DigitsClassifier, DigitsCNN, DigitsDataModule

__all__ = ["DigitsCNN", "DigitsClassifier", "DigitsDataModule", "run_demo"]


def run_demo(
    out_dir: str = "nas_runs/demo",
    epochs: int = 8,
    n_trials: int = 40,
    max_params: float = 0.25,
    width: int = 32,
    seed: int = 0,
) -> dict[str, float]:
    """Train a supernet on digits, search it, export the best sub-network under a budget, reload it.

    Prints the search space, then :class:`~lightning_nas.callbacks.OneShotSearch`'s summary (Pareto
    front, export, how to load it and open the study), then a before/after table on the test set.
    Returns the test accuracy and size of the full and exported networks.

    Raises:
        ValueError: ``epochs``, ``n_trials`` or ``width`` not > 0, or ``max_params`` outside (0, 1],
            before any training.

    Training is checkpointed every epoch to ``<out_dir>/checkpoints/last.ckpt``; a run killed
    midway resumes from it when started again with the same ``out_dir``, and so does the
    search, from its study. A different network (``width``) in the same directory is refused
    before training.
    """
    from lightning.pytorch.callbacks import ModelCheckpoint

    from lightning_nas import _jobs
    from lightning_nas._table import format_table
    from lightning_nas.callbacks import OneShotSearch, SupernetCallback
    from lightning_nas.callbacks._quiet import quiet_lightning
    from lightning_nas.metrics import count_flops, count_params

    _jobs.check_positive(epochs=epochs, n_trials=n_trials, width=width)
    if not 0 < max_params <= 1:
        raise ValueError(f"max_params is a fraction in (0, 1], got {max_params}")
    out = Path(out_dir).resolve()
    _jobs.check_out_dir(out)
    L.seed_everything(seed, verbose=False)
    data = DigitsDataModule(seed=seed)
    module = DigitsClassifier(width=width, hidden=2 * width)
    supernet_callback = SupernetCallback(strategy="sandwich", module="model", seed=seed)
    search = OneShotSearch(
        metric="val_acc",
        objectives=("params", "flops"),
        n_trials=n_trials,
        max_params=max_params,
        study_name="digits-demo",
        seed=seed,
    )
    supernet = supernet_callback.build(module)
    print("Search space\n" + supernet.describe() + "\n", flush=True)
    checkpoints = ModelCheckpoint(dirpath=out / "checkpoints", save_last=True, save_top_k=0)
    last = out / "checkpoints" / "last.ckpt"
    with quiet_lightning():  # the Trainer's banners and tips; the search prints its own summary
        trainer = L.Trainer(
            max_epochs=epochs,
            callbacks=[supernet_callback, search, checkpoints],
            default_root_dir=str(out),
            logger=False,
            enable_model_summary=False,
        )
        trainer.fit(module, data, ckpt_path=last if last.exists() else None, weights_only=True)

    data.setup()
    test_x = torch.cat([x for x, _ in data.test_dataloader()])
    test_y = torch.cat([y for _, y in data.test_dataloader()])
    full = supernet.extract(supernet.max_arch()).eval()
    best = search.best_model  # the search's export, reloaded from its safetensors into DigitsCNN
    example = torch.zeros(1, 1, 8, 8)
    rows, results = [], {}
    for name, model in (("full supernet", full), ("exported best", best)):
        with torch.no_grad():
            accuracy = float((model(test_x).argmax(-1) == test_y).float().mean())
        params, flops = count_params(model), count_flops(model, example)
        results[f"{name.split()[0]}_test_acc"] = accuracy
        results[f"{name.split()[0]}_params"] = params
        rows.append([name, f"{accuracy:.4f}", f"{params:,}", f"{flops:,}"])
    print("\nTest set (270 held-out digits)\n" + format_table(["model", "test_acc", "params", "flops"], rows))
    print(
        f"\n{search.export_path} holds model.pt2 (torch.export program: loads with plain torch, none of this "
        "model's code, no pickle), model.safetensors (weights), arch.json (architecture, checksums)"
    )
    print(f"More search workers on this study: {_jobs.cli_command()} search {last} --n-trials N")
    return results
