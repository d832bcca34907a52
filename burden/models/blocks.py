"""Building blocks shared by the SE networks, as the authors' Caffe files define them."""

from __future__ import annotations

import torch
from torch import nn


class ConvBN(nn.Module):
    """Convolution without bias, batch norm (Caffe's BatchNorm + Scale pair), optional ReLU."""

    def __init__(self, cin: int, cout: int, kernel: int, stride: int = 1, padding: int = 0,
                 groups: int = 1, relu: bool = True) -> None:
        super().__init__()
        self.conv = nn.Conv2d(cin, cout, kernel, stride=stride, padding=padding, groups=groups, bias=False)
        self.bn = nn.BatchNorm2d(cout)
        self.relu = nn.ReLU(inplace=True) if relu else None

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.bn(self.conv(x))
        return self.relu(x) if self.relu is not None else x


class SqueezeExcite(nn.Module):
    """The SE gate: global pool, two 1x1 convolutions with bias, sigmoid.

    It returns the per-channel scale rather than the rescaled tensor, because the Caffe
    definitions fuse the rescale with what follows it (``Axpy`` in the residual networks,
    a two-input ``Scale`` in SE-BN-Inception).
    """

    def __init__(self, channels: int, reduction: int = 16) -> None:
        super().__init__()
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.down = nn.Conv2d(channels, channels // reduction, 1)
        self.relu = nn.ReLU(inplace=True)
        self.up = nn.Conv2d(channels // reduction, channels, 1)
        self.gate = nn.Sigmoid()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.gate(self.up(self.relu(self.down(self.pool(x)))))
