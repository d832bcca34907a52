"""SE-ResNet, SE-ResNeXt and SENet-154, written from the SE authors' Caffe definitions.

The three families share one bottleneck; they differ only in data (``SENetSpec``):
- SE-ResNet puts the stride on the first 1x1 convolution and has no groups;
- SE-ResNeXt (32x4d) puts it on the grouped 3x3 and doubles the bottleneck width;
- SENet-154 has a three-convolution stem, 64 groups, a 3x3 convolution twice as wide as the
  1x1 reduction, 3x3 stride-2 projections and dropout before the classifier.
"""

from __future__ import annotations

from collections import OrderedDict
from dataclasses import dataclass

import torch
from torch import nn

from .blocks import ConvBN, SqueezeExcite
from .registry import register_model


@dataclass(frozen=True)
class SENetSpec:
    blocks: tuple[int, int, int, int]
    reduce_width: tuple[int, int, int, int]  # output channels of each stage's 1x1 reduction
    conv_width: tuple[int, int, int, int]  # output channels of each stage's 3x3 convolution
    groups: int = 1
    stride_on_reduce: bool = False  # Caffe SE-ResNet strides the 1x1 reduction, the others the 3x3
    deep_stem: bool = False  # SENet-154: three 3x3 convolutions instead of one 7x7
    projection_kernel: int = 1  # kernel of the strided shortcut projections (stages 3 to 5)
    dropout: float = 0.0
    reduction: int = 16
    num_classes: int = 1000


_OUT_WIDTH = (256, 512, 1024, 2048)
_STAGE_STRIDE = (1, 2, 2, 2)


class SEBottleneck(nn.Module):
    def __init__(self, cin: int, reduce: int, mid: int, cout: int, stride: int, spec: SENetSpec,
                 projection_kernel: int | None) -> None:
        super().__init__()
        s1, s3 = (stride, 1) if spec.stride_on_reduce else (1, stride)
        self.conv1 = nn.Conv2d(cin, reduce, 1, stride=s1, bias=False)
        self.bn1 = nn.BatchNorm2d(reduce)
        self.conv2 = nn.Conv2d(reduce, mid, 3, stride=s3, padding=1, groups=spec.groups, bias=False)
        self.bn2 = nn.BatchNorm2d(mid)
        self.conv3 = nn.Conv2d(mid, cout, 1, bias=False)
        self.bn3 = nn.BatchNorm2d(cout)
        self.relu = nn.ReLU(inplace=True)
        self.se = SqueezeExcite(cout, spec.reduction)
        self.downsample = None
        if projection_kernel is not None:
            self.downsample = ConvBN(cin, cout, projection_kernel, stride=stride,
                                     padding=projection_kernel // 2, relu=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.relu(self.bn1(self.conv1(x)))
        out = self.relu(self.bn2(self.conv2(out)))
        out = self.bn3(self.conv3(out))
        identity = x if self.downsample is None else self.downsample(x)
        # Caffe's Axpy: the SE rescale and the residual sum in one op, one output buffer.
        return self.relu(torch.addcmul(identity, out, self.se(out)))


class SENet(nn.Module):
    def __init__(self, spec: SENetSpec) -> None:
        super().__init__()
        if spec.deep_stem:
            stem = [("conv1", ConvBN(3, 64, 3, stride=2, padding=1)),
                    ("conv2", ConvBN(64, 64, 3, padding=1)),
                    ("conv3", ConvBN(64, 128, 3, padding=1))]
            width = 128
        else:
            stem = [("conv1", ConvBN(3, 64, 7, stride=2, padding=3))]
            width = 64
        stem.append(("pool", nn.MaxPool2d(3, stride=2, ceil_mode=True)))
        self.stem = nn.Sequential(OrderedDict(stem))
        for i in range(4):
            blocks = []
            for j in range(spec.blocks[i]):
                stride = _STAGE_STRIDE[i] if j == 0 else 1
                projection = None
                if j == 0:
                    projection = 1 if i == 0 else spec.projection_kernel
                blocks.append(SEBottleneck(width, spec.reduce_width[i], spec.conv_width[i], _OUT_WIDTH[i],
                                           stride, spec, projection))
                width = _OUT_WIDTH[i]
            self.add_module(f"layer{i + 1}", nn.Sequential(*blocks))
        # Global rather than Caffe's fixed 7x7 window, so the network takes any input size.
        self.avgpool = nn.AdaptiveAvgPool2d(1)
        self.dropout = nn.Dropout(spec.dropout) if spec.dropout else None
        self.fc = nn.Linear(width, spec.num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.stem(x)
        x = self.layer4(self.layer3(self.layer2(self.layer1(x))))
        x = torch.flatten(self.avgpool(x), 1)
        if self.dropout is not None:
            x = self.dropout(x)
        return self.fc(x)


def _build(spec: SENetSpec, num_classes: int | None) -> SENet:
    if num_classes is not None:
        spec = SENetSpec(**{**spec.__dict__, "num_classes": num_classes})
    return SENet(spec)


_RESNET_WIDTH = (64, 128, 256, 512)
_RESNEXT_WIDTH = (128, 256, 512, 1024)
_SENET154_CONV = (256, 512, 1024, 2048)

SE_RESNET = dict(reduce_width=_RESNET_WIDTH, conv_width=_RESNET_WIDTH, stride_on_reduce=True)
SE_RESNEXT_32X4D = dict(reduce_width=_RESNEXT_WIDTH, conv_width=_RESNEXT_WIDTH, groups=32)

SPECS = {
    "se_resnet50": SENetSpec(blocks=(3, 4, 6, 3), **SE_RESNET),
    "se_resnet101": SENetSpec(blocks=(3, 4, 23, 3), **SE_RESNET),
    "se_resnet152": SENetSpec(blocks=(3, 8, 36, 3), **SE_RESNET),
    "se_resnext50_32x4d": SENetSpec(blocks=(3, 4, 6, 3), **SE_RESNEXT_32X4D),
    "se_resnext101_32x4d": SENetSpec(blocks=(3, 4, 23, 3), **SE_RESNEXT_32X4D),
    "senet154": SENetSpec(blocks=(3, 8, 36, 3), reduce_width=_RESNEXT_WIDTH, conv_width=_SENET154_CONV,
                          groups=64, deep_stem=True, projection_kernel=3, dropout=0.2),
}


@register_model()
def se_resnet50(num_classes: int | None = None) -> nn.Module:
    return _build(SPECS["se_resnet50"], num_classes)


@register_model()
def se_resnet101(num_classes: int | None = None) -> nn.Module:
    return _build(SPECS["se_resnet101"], num_classes)


@register_model()
def se_resnet152(num_classes: int | None = None) -> nn.Module:
    return _build(SPECS["se_resnet152"], num_classes)


@register_model()
def se_resnext50_32x4d(num_classes: int | None = None) -> nn.Module:
    return _build(SPECS["se_resnext50_32x4d"], num_classes)


@register_model()
def se_resnext101_32x4d(num_classes: int | None = None) -> nn.Module:
    return _build(SPECS["se_resnext101_32x4d"], num_classes)


@register_model()
def senet154(num_classes: int | None = None) -> nn.Module:
    return _build(SPECS["senet154"], num_classes)
