"""LightningCLI entry for the recipes: the YAML names the LightningModule, datamodule and callbacks.

Run:
    python recipes/run.py fit --config recipes/timm_digits.yaml
    python recipes/run.py fit --config recipes/timm_digits.yaml --trainer.max_steps=20 --model.backbone=resnet10t
    python recipes/run.py fit --config recipes/compress_minilm.yaml --model.model_dir=/path/to/minilm
"""

from __future__ import annotations

from lightning.pytorch.cli import ArgsType, LightningCLI


def main(args: ArgsType = None) -> LightningCLI:
    """Parse ``args`` (default: the command line) and run the subcommand (``fit``, ``validate``, ...)."""
    # subclass_mode: ``model:`` and ``data:`` give a class_path, so one entry serves every recipe.
    return LightningCLI(
        subclass_mode_model=True,
        subclass_mode_data=True,
        save_config_kwargs={"overwrite": True},
        args=args,
    )


if __name__ == "__main__":
    main()
