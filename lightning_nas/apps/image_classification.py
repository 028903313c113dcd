"""A timm backbone fine-tuned for image classification, as a user would write it: ordinary Lightning code.

``ImageClassifier`` wraps any ``timm.create_model`` architecture; ``DigitsImageDataModule`` serves
scikit-learn's bundled digits upsampled to the backbone's input size, so the job runs offline.
Nothing here knows about lightning_nas: the ``recipes/timm_digits.yaml`` recipe adds the supernet and
the search with two callbacks.
"""

from __future__ import annotations

from typing import Any

import torch
import torch.nn.functional as F
import torchmetrics
from torch.utils.data import TensorDataset

from lightning_nas.apps.digits import DigitsDataModule, ImageClassifierSteps

__all__ = ["DigitsImageDataModule", "ImageClassifier"]


class DigitsImageDataModule(DigitsDataModule):
    """scikit-learn's digits as ``image_size`` x ``image_size`` images (bilinear upsampling of the 8x8 originals).

    The splits are :class:`~lightning_nas.apps.DigitsDataModule`'s.

    Example:
        >>> data = DigitsImageDataModule(image_size=32)
        >>> data.setup()
        >>> tuple(data.train_set[0][0].shape)
        (1, 32, 32)
    """

    def __init__(self, image_size: int = 32, batch_size: int = 64, seed: int = 0) -> None:
        if image_size < 8:
            raise ValueError(f"image_size must be >= 8 (the digits are 8x8), got {image_size}")
        super().__init__(batch_size=batch_size, seed=seed)
        self.image_size = image_size

    def setup(self, stage: str | None = None) -> None:
        super().setup(stage)
        for name in ("train_set", "val_set", "test_set"):
            images, labels = getattr(self, name).tensors
            size = (self.image_size, self.image_size)
            setattr(self, name, TensorDataset(F.interpolate(images, size=size, mode="bilinear"), labels))


class ImageClassifier(ImageClassifierSteps):
    """A ``timm`` model trained with cross-entropy; logs ``val_acc`` and ``val_loss``.

    Args:
        backbone: A ``timm.create_model`` name, e.g. ``"resnet18"``.
        num_classes: Classes of the new head.
        in_chans: Input channels (1 for grey images).
        image_size: Side of the square example input (for tracing and the model summary).
        pretrained: Load timm's pretrained weights; they must already be on disk, e.g. through
            ``model_kwargs={"pretrained_cfg_overlay": {"file": path}}``.
        lr: AdamW learning rate.
        weight_decay: AdamW weight decay.
        model_kwargs: Further ``timm.create_model`` arguments (``drop_rate``, ``pretrained_cfg_overlay``, ...).

    Example:
        >>> module = ImageClassifier("resnet18", num_classes=10, in_chans=1, image_size=16)
        >>> module(torch.zeros(2, 1, 16, 16)).shape
        torch.Size([2, 10])
    """

    def __init__(
        self,
        backbone: str = "resnet18",
        num_classes: int = 10,
        in_chans: int = 1,
        image_size: int = 32,
        pretrained: bool = False,
        lr: float = 1e-3,
        weight_decay: float = 1e-4,
        model_kwargs: dict[str, Any] | None = None,
    ) -> None:
        super().__init__()
        import timm

        self.save_hyperparameters()
        self.model = timm.create_model(
            backbone, pretrained=pretrained, num_classes=num_classes, in_chans=in_chans, **(model_kwargs or {})
        )
        self.val_acc = torchmetrics.Accuracy(task="multiclass", num_classes=num_classes)
        self.example_input_array = torch.zeros(1, in_chans, image_size, image_size)
