"""The recipes in ``recipes/`` run end to end at a tiny size, through their own entry points."""

from __future__ import annotations

import importlib.util
from pathlib import Path
from types import ModuleType

import pytest
import torch

pytest.importorskip("jsonargparse")
timm = pytest.importorskip("timm")

# The tests pass the recipe's arguments explicitly; pytest's own command line is not meant for it.
pytestmark = pytest.mark.filterwarnings("ignore:LightningCLI's args parameter")

RECIPES = Path(__file__).resolve().parents[1] / "recipes"


def _load(name: str) -> ModuleType:
    spec = importlib.util.spec_from_file_location(f"_recipe_{name}", RECIPES / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_timm_recipe_fine_tunes_a_supernet_searches_and_exports(tmp_path: Path) -> None:
    from lightning_nas.callbacks import OneShotSearch
    from lightning_nas.export import load_module

    cli = _load("run").main(
        [
            "fit",
            "--config",
            str(RECIPES / "timm_digits.yaml"),
            "--trainer.max_steps=2",
            "--trainer.limit_val_batches=1",
            "--trainer.enable_progress_bar=false",
            "--trainer.enable_model_summary=false",
            f"--trainer.default_root_dir={tmp_path}",
            "--model.image_size=16",
            "--model.model_kwargs={channels: [8, 16, 32, 64], stem_width: 8}",  # ResNet-18 at 1/8 width
            "--data.image_size=16",
            "--data.batch_size=8",
            "--trainer.callbacks.n_trials=2",
            "--trainer.callbacks.calibration_batches=1",
        ]
    )
    assert cli.trainer.global_step == 2
    assert type(cli.model.model).__name__ == "ResNet"
    search = next(c for c in cli.trainer.callbacks if isinstance(c, OneShotSearch))
    full = timm.create_model("resnet18", num_classes=10, in_chans=1, channels=(8, 16, 32, 64), stem_width=8)
    assert search.n_trials == 2
    assert search.limits_used == {"params": pytest.approx(0.5 * sum(p.numel() for p in full.parameters()), abs=1)}
    assert (tmp_path / "nas.db").is_file()
    assert search.export_path == tmp_path / "best_subnet"
    reloaded = load_module(search.export_path)
    assert sum(p.numel() for p in reloaded.parameters()) <= search.limits_used["params"]
    assert reloaded(torch.zeros(2, 1, 16, 16)).shape == (2, 10)


def _joint_args(tmp_path: Path, *extra: str) -> list[str]:
    return [
        "--config",
        str(RECIPES / "joint_digits.yaml"),
        "--n_trials=2",
        f"--out={tmp_path}",
        "--model.width=8",
        "--model.hidden=16",
        "--trainer={max_epochs: 1, limit_train_batches: 2, limit_val_batches: 1}",
        *extra,
    ]


def test_joint_recipe_searches_architecture_and_hyperparameters(tmp_path: Path) -> None:
    study = _load("joint_search").run(_joint_args(tmp_path))
    trials = study.get_trials()
    assert len(trials) == 2 and (tmp_path / "joint.db").is_file()
    for trial in trials:
        assert 1e-4 <= trial.params["model.lr"] <= 3e-2
        assert 1e-6 <= trial.params["model.weight_decay"] <= 1e-2
        assert trial.params["data.batch_size"] in (32, 64, 128)
        assert trial.params["fc"] <= 16  # the space is that of the width-8 model given on the command line
        assert trial.state.name == "COMPLETE"


def test_joint_recipe_refuses_an_unknown_hyperparameter_before_training(tmp_path: Path) -> None:
    momentum = '{"class_path": "optuna.distributions.FloatDistribution", "init_args": {"low": 0.1, "high": 0.9}}'
    bad = f'--hyperparameters={{"model.momentum": {momentum}}}'
    with pytest.raises(SystemExit, match="has no init argument 'momentum'"):
        _load("joint_search").run(_joint_args(tmp_path, bad))
    assert not (tmp_path / "joint.db").exists()


@pytest.mark.slow
def test_minilm_recipe_compresses_the_pretrained_transformer(tmp_path: Path) -> None:
    from transformers import AutoModelForSequenceClassification

    from lightning_nas.callbacks import OneShotSearch
    from lightning_nas.datasets import minilm_model_dir

    model_dir = minilm_model_dir()
    cli = _load("run").main(
        [
            "fit",
            "--config",
            str(RECIPES / "compress_minilm.yaml"),
            f"--model.model_dir={model_dir}",
            f"--data.model_dir={model_dir}",
            "--data.max_train=64",
            "--data.max_test=16",
            "--data.batch_size=8",
            "--trainer.max_steps=2",
            "--trainer.limit_val_batches=1",
            "--trainer.enable_progress_bar=false",
            f"--trainer.default_root_dir={tmp_path}",
            "--trainer.callbacks.n_trials=2",
            "--trainer.callbacks.calibration_batches=1",
        ]
    )
    assert cli.trainer.global_step == 2
    search = next(c for c in cli.trainer.callbacks if isinstance(c, OneShotSearch))
    assert search.export_path == tmp_path / "best_subnet"
    reloaded = AutoModelForSequenceClassification.from_pretrained(search.export_path)
    assert reloaded.config.id2label == {0: "rotten", 1: "fresh"}
    assert sum(p.numel() for p in reloaded.parameters()) <= search.limits_used["params"]
    batch = cli.datamodule.tokenizer(["a fine film"], return_tensors="pt")
    assert reloaded(**batch).logits.shape == (1, 2)


def test_minilm_recipe_without_a_model_dir_is_refused_before_loading_anything(
    capsys: pytest.CaptureFixture[str],
) -> None:
    with pytest.raises(SystemExit):
        _load("run").main(["fit", "--config", str(RECIPES / "compress_minilm.yaml")])
    assert "model_dir" in capsys.readouterr().err
