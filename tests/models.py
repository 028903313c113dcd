"""Small models of different shapes used across the tests, written as a user would."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn


class MLP(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.fc1 = nn.Linear(10, 64)
        self.norm = nn.LayerNorm(64)
        self.fc2 = nn.Linear(64, 48)
        self.bn = nn.BatchNorm1d(48)
        self.out = nn.Linear(48, 3)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = self.norm(F.gelu(self.fc1(x)))
        return self.out(F.relu(self.bn(self.fc2(h))))


class Residual(nn.Module):
    def __init__(self, channels: int, kernel: int = 3) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(channels, channels, kernel, padding=kernel // 2, bias=False)
        self.bn1 = nn.BatchNorm2d(channels)
        self.conv2 = nn.Conv2d(channels, channels, 3, padding=1, bias=False)
        self.bn2 = nn.BatchNorm2d(channels)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.relu(x + self.bn2(self.conv2(F.relu(self.bn1(self.conv1(x))))))


class ResNet(nn.Module):
    """Residual stages in an nn.Sequential and blocks in a ModuleList iterated in forward."""

    def __init__(self) -> None:
        super().__init__()
        self.stem = nn.Sequential(nn.Conv2d(3, 16, 3, padding=1), nn.BatchNorm2d(16), nn.ReLU())
        self.stage = nn.Sequential(Residual(16, 5), Residual(16), Residual(16))
        self.down = nn.Conv2d(16, 24, 3, stride=2, padding=1)
        self.blocks = nn.ModuleList([Residual(24), Residual(24)])
        self.head = nn.Linear(24, 5)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.down(self.stage(self.stem(x)))
        for block in self.blocks:
            x = block(x)
        return self.head(F.adaptive_avg_pool2d(x, 1).flatten(1))


class ConcatNet(nn.Module):
    """Two branches concatenated, a depthwise conv, then flatten into a Linear (view(-1))."""

    def __init__(self) -> None:
        super().__init__()
        self.left = nn.Conv2d(3, 8, 3, padding=1)
        self.right = nn.Conv2d(3, 12, 5, padding=2)
        self.bn = nn.BatchNorm2d(20)
        self.dw = nn.Conv2d(20, 20, 3, padding=1, groups=20)
        self.fc = nn.Linear(20 * 4 * 4, 32)
        self.cls = nn.Linear(32, 4)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = torch.cat([self.left(x), self.right(x)], dim=1)
        x = F.max_pool2d(F.relu(self.dw(self.bn(x))), 2)
        x = x.view(x.size(0), -1)
        return self.cls(F.relu(self.fc(x)))


class HardCodedView(nn.Module):
    """Reshapes to a hard-coded size, so the channels before it cannot shrink."""

    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Conv2d(1, 4, 3, padding=1)
        self.fc = nn.Linear(4 * 4 * 4, 16)
        self.out = nn.Linear(16, 2)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.out(F.relu(self.fc(self.conv(x).view(-1, 64))))


class IndexedBlocks(nn.Module):
    """Calls its ModuleList blocks by index, so their depth cannot be made elastic."""

    def __init__(self) -> None:
        super().__init__()
        self.blocks = nn.ModuleList([Residual(4), Residual(4)])
        self.stem = nn.Conv2d(1, 4, 3, padding=1)
        self.head = nn.Linear(4, 2)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.stem(x)
        for i in range(len(self.blocks)):
            x = self.blocks[i](x)
        return self.head(x.mean((2, 3)))
