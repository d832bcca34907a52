"""The models burden ships, as data: name, one-line summary, trunk and input size.

The builders live in ``burden.models``, registered under their function names; this table holds
what describes them, so that ``burden list`` answers without importing torch. A builder whose
name is not here cannot be registered without its own summary and trunk.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class ModelCard:
    summary: str
    # Module path whose output is the network's last convolutional feature map (before global
    # pooling): the default "trunk" of the feature-extraction scale table.
    trunk: str
    input_size: tuple[int, int, int] = (3, 224, 224)


MODELS: dict[str, ModelCard] = {
    "se_resnet50": ModelCard("SE-ResNet-50: ResNet-50 bottlenecks with squeeze-and-excitation", "layer4"),
    "se_resnet101": ModelCard("SE-ResNet-101: ResNet-101 bottlenecks with squeeze-and-excitation", "layer4"),
    "se_resnet152": ModelCard("SE-ResNet-152: ResNet-152 bottlenecks with squeeze-and-excitation", "layer4"),
    "se_resnext50_32x4d": ModelCard("SE-ResNeXt-50 (32x4d): grouped 3x3 bottlenecks with squeeze-and-excitation",
                                    "layer4"),
    "se_resnext101_32x4d": ModelCard("SE-ResNeXt-101 (32x4d): grouped 3x3 bottlenecks with squeeze-and-excitation",
                                     "layer4"),
    "senet154": ModelCard("SENet-154: 64-group ResNeXt-152 with a deep stem, ILSVRC 2017 winner", "layer4"),
    "se_bn_inception": ModelCard("SE-BN-Inception: BN-Inception with squeeze-and-excitation on every block",
                                 "inception_5b"),
}
