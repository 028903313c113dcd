"""A small CNN on scikit-learn's bundled digits, as a user would write it: ordinary Lightning code.

Nothing here knows about lightning_nas: ``DigitsCNN`` and ``DigitsClassifier`` are an ordinary
model and LightningModule. ``lightning-nas demo`` (:func:`lightning_nas.demo.run_demo`) adds the
supernet, search and export with two callbacks.
"""

from __future__ import annotations

import lightning as L
import numpy as np
import torch
import torch.nn.functional as F
import torchmetrics
from sklearn.datasets import load_digits
from sklearn.model_selection import train_test_split
from torch import Tensor, nn
from torch.utils.data import DataLoader, TensorDataset

__all__ = ["DigitsCNN", "DigitsClassifier", "DigitsDataModule"]


class DigitsDataModule(L.LightningDataModule):
    """scikit-learn's 8x8 digits (1,797 images, 10 classes) as train / validation / test splits.

    The split is stratified and fixed by ``seed``; pixels are scaled to [0, 1].

    Example:
        >>> data = DigitsDataModule()
        >>> data.setup()
        >>> len(data.train_set), len(data.val_set), len(data.test_set)
        (1257, 270, 270)
    """

    def __init__(self, batch_size: int = 64, seed: int = 0) -> None:
        super().__init__()
        self.save_hyperparameters()  # a checkpoint then rebuilds the data (``lightning-nas search``)
        self.batch_size = batch_size
        self.seed = seed

    def setup(self, stage: str | None = None) -> None:
        digits = load_digits()
        images = (digits.images / 16.0).astype(np.float32)[:, None]
        labels = digits.target.astype(np.int64)
        x_train, x_rest, y_train, y_rest = train_test_split(
            images, labels, test_size=0.3, stratify=labels, random_state=self.seed
        )
        x_val, x_test, y_val, y_test = train_test_split(
            x_rest, y_rest, test_size=0.5, stratify=y_rest, random_state=self.seed
        )
        self.train_set = TensorDataset(torch.from_numpy(x_train), torch.from_numpy(y_train))
        self.val_set = TensorDataset(torch.from_numpy(x_val), torch.from_numpy(y_val))
        self.test_set = TensorDataset(torch.from_numpy(x_test), torch.from_numpy(y_test))

    def train_dataloader(self) -> DataLoader:
        generator = torch.Generator().manual_seed(self.seed)
        return DataLoader(self.train_set, batch_size=self.batch_size, shuffle=True, generator=generator)

    def val_dataloader(self) -> DataLoader:
        return DataLoader(self.val_set, batch_size=256)

    def test_dataloader(self) -> DataLoader:
        return DataLoader(self.test_set, batch_size=256)


class _ResidualBlock(nn.Module):
    def __init__(self, channels: int, kernel_size: int) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(channels, channels, kernel_size, padding=kernel_size // 2, bias=False)
        self.bn1 = nn.BatchNorm2d(channels)
        self.conv2 = nn.Conv2d(channels, channels, 3, padding=1, bias=False)
        self.bn2 = nn.BatchNorm2d(channels)

    def forward(self, x: Tensor) -> Tensor:
        out = F.relu(self.bn1(self.conv1(x)))
        return F.relu(x + self.bn2(self.conv2(out)))


class DigitsCNN(nn.Module):
    """A small ResNet for 8x8 images: stem, residual stages, pooled linear head.

    Example:
        >>> DigitsCNN()(torch.zeros(2, 1, 8, 8)).shape
        torch.Size([2, 10])
    """

    def __init__(self, width: int = 64, blocks: int = 3, hidden: int = 128, num_classes: int = 10) -> None:
        super().__init__()
        self.stem = nn.Sequential(nn.Conv2d(1, width, 3, padding=1, bias=False), nn.BatchNorm2d(width), nn.ReLU())
        self.stage1 = nn.Sequential(*(_ResidualBlock(width, 5) for _ in range(blocks)))
        self.down = nn.Sequential(
            nn.Conv2d(width, 2 * width, 3, stride=2, padding=1, bias=False), nn.BatchNorm2d(2 * width), nn.ReLU()
        )
        self.stage2 = nn.Sequential(*(_ResidualBlock(2 * width, 3) for _ in range(blocks)))
        self.fc = nn.Linear(2 * width * 4 * 4 // 4, hidden)
        self.head = nn.Linear(hidden, num_classes)

    def forward(self, x: Tensor) -> Tensor:
        x = self.stage2(self.down(self.stage1(self.stem(x))))
        x = F.avg_pool2d(x, 2).flatten(1)
        return self.head(F.relu(self.fc(x)))


class ImageClassifierSteps(L.LightningModule):
    """The steps of an image classifier: ``self.model`` trained with cross-entropy, ``val_acc`` and
    ``val_loss`` logged, AdamW with the ``lr`` / ``weight_decay`` hyperparameters. Subclasses build
    ``self.model`` and ``self.val_acc``."""

    def forward(self, x: Tensor) -> Tensor:
        return self.model(x)

    def training_step(self, batch: tuple[Tensor, Tensor], batch_idx: int) -> Tensor:
        x, y = batch
        loss = F.cross_entropy(self(x), y)
        self.log("train_loss", loss, prog_bar=True)
        return loss

    def validation_step(self, batch: tuple[Tensor, Tensor], batch_idx: int) -> None:
        x, y = batch
        logits = self(x)
        self.val_acc(logits, y)
        self.log("val_loss", F.cross_entropy(logits, y))
        self.log("val_acc", self.val_acc, prog_bar=True)

    def configure_optimizers(self) -> torch.optim.Optimizer:
        return torch.optim.AdamW(self.parameters(), lr=self.hparams.lr, weight_decay=self.hparams.weight_decay)


class DigitsClassifier(ImageClassifierSteps):
    """An ordinary LightningModule: cross-entropy training, accuracy logged as ``val_acc``."""

    def __init__(self, lr: float = 3e-3, weight_decay: float = 1e-4, **model_kwargs: int) -> None:
        super().__init__()
        self.save_hyperparameters()
        self.model = DigitsCNN(**model_kwargs)
        self.val_acc = torchmetrics.Accuracy(task="multiclass", num_classes=10)
        self.example_input_array = torch.zeros(1, 1, 8, 8)
