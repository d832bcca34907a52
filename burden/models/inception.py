"""SE-BN-Inception, written from the SE authors' Caffe definition.

BN-Inception (Inception v2) with an SE gate on every inception block's concatenated output.
Unlike the residual SE networks there is no residual sum: the gate rescales the block output.
"""

from __future__ import annotations

from collections import OrderedDict
from typing import NamedTuple

import torch
from torch import nn

from .blocks import ConvBN, SqueezeExcite
from .registry import register_model


class InceptionSpec(NamedTuple):
    name: str
    b1x1: int  # 0: no 1x1 branch (the stride-2 blocks)
    b3x3_reduce: int
    b3x3: int
    double_reduce: int
    double: int
    pool: str  # "avg" or "max"
    pool_proj: int  # 0: the pooled input is concatenated as it is
    stride: int = 1


BLOCKS = (
    InceptionSpec("inception_3a", 64, 64, 64, 64, 96, "avg", 32),
    InceptionSpec("inception_3b", 64, 64, 96, 64, 96, "avg", 64),
    InceptionSpec("inception_3c", 0, 128, 160, 64, 96, "max", 0, stride=2),
    InceptionSpec("inception_4a", 224, 64, 96, 96, 128, "avg", 128),
    InceptionSpec("inception_4b", 192, 96, 128, 96, 128, "avg", 128),
    InceptionSpec("inception_4c", 160, 128, 160, 128, 160, "avg", 128),
    InceptionSpec("inception_4d", 96, 128, 192, 160, 192, "avg", 128),
    InceptionSpec("inception_4e", 0, 128, 192, 192, 256, "max", 0, stride=2),
    InceptionSpec("inception_5a", 352, 192, 320, 160, 224, "avg", 128),
    InceptionSpec("inception_5b", 352, 192, 320, 192, 224, "max", 128),
)


class SEInceptionBlock(nn.Module):
    def __init__(self, cin: int, spec: InceptionSpec) -> None:
        super().__init__()
        s = spec.stride
        self.branch1x1 = ConvBN(cin, spec.b1x1, 1) if spec.b1x1 else None
        self.branch3x3 = nn.Sequential(ConvBN(cin, spec.b3x3_reduce, 1),
                                       ConvBN(spec.b3x3_reduce, spec.b3x3, 3, stride=s, padding=1))
        self.branch_double3x3 = nn.Sequential(ConvBN(cin, spec.double_reduce, 1),
                                              ConvBN(spec.double_reduce, spec.double, 3, padding=1),
                                              ConvBN(spec.double, spec.double, 3, stride=s, padding=1))
        if s == 1:
            # Caffe pools round up; with stride 1 and padding 1 that keeps the size.
            pool = (nn.AvgPool2d(3, 1, padding=1, ceil_mode=True) if spec.pool == "avg"
                    else nn.MaxPool2d(3, 1, padding=1, ceil_mode=True))
        else:
            pool = nn.MaxPool2d(3, stride=s, ceil_mode=True)
        layers = [pool] + ([ConvBN(cin, spec.pool_proj, 1)] if spec.pool_proj else [])
        self.branch_pool = nn.Sequential(*layers)
        self.out_channels = spec.b1x1 + spec.b3x3 + spec.double + (spec.pool_proj or cin)
        self.se = SqueezeExcite(self.out_channels)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        branches = [self.branch3x3(x), self.branch_double3x3(x), self.branch_pool(x)]
        if self.branch1x1 is not None:
            branches.insert(0, self.branch1x1(x))
        out = torch.cat(branches, 1)
        return out * self.se(out)


class SEBNInception(nn.Module):
    def __init__(self, num_classes: int = 1000) -> None:
        super().__init__()
        self.stem = nn.Sequential(OrderedDict(
            conv1=ConvBN(3, 64, 7, stride=2, padding=3),
            pool1=nn.MaxPool2d(3, stride=2, ceil_mode=True),
            conv2_reduce=ConvBN(64, 64, 1),
            conv2=ConvBN(64, 192, 3, padding=1),
            pool2=nn.MaxPool2d(3, stride=2, ceil_mode=True),
        ))
        width = 192
        for spec in BLOCKS:
            block = SEInceptionBlock(width, spec)
            self.add_module(spec.name, block)
            width = block.out_channels
        self.avgpool = nn.AdaptiveAvgPool2d(1)
        self.fc = nn.Linear(width, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.stem(x)
        for spec in BLOCKS:
            x = getattr(self, spec.name)(x)
        return self.fc(torch.flatten(self.avgpool(x), 1))


@register_model()
def se_bn_inception(num_classes: int = 1000) -> nn.Module:
    return SEBNInception(num_classes)
