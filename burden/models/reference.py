"""Published figures to set beside burden's: convnet-burden's estimates for the SE networks.

The table is the "computational burdens" table of the mcnSENets README (the MatConvNet import of
the SE authors' Caffe models), made with convnet-burden: one 224 x 224 image (batch 1), float32.
Its "MB" are mebibytes (2^20 bytes) rounded to a whole number, and its GFLOPs are rounded to a
whole number too. Plain data: nothing here imports torch or counts anything.
"""

from __future__ import annotations

SOURCE = ("convnet-burden's estimates for the SE authors' Caffe models, as published in the mcnSENets "
          "README (224 x 224, batch 1, float32; MB = 2^20 bytes, rounded to whole numbers)")
SOURCE_SHORT = "convnet-burden (mcnSENets README)"

# the settings the published figures are for
INPUT = (3, 224, 224)
BATCH = 1
DTYPE = "float32"

# burden's model name -> the figures as the table prints them
REFERENCE: dict[str, dict[str, object]] = {
    "se_resnet50": {"model": "SE-ResNet-50", "param_mb": 107, "feature_mb": 103, "gflops": 4},
    "se_resnet101": {"model": "SE-ResNet-101", "param_mb": 189, "feature_mb": 155, "gflops": 8},
    "se_resnet152": {"model": "SE-ResNet-152", "param_mb": 255, "feature_mb": 220, "gflops": 11},
    "se_bn_inception": {"model": "SE-BN-Inception", "param_mb": 46, "feature_mb": 43, "gflops": 2},
    "se_resnext50_32x4d": {"model": "SE-ResNeXt-50-32x4d", "param_mb": 105, "feature_mb": 132, "gflops": 4},
    "se_resnext101_32x4d": {"model": "SE-ResNeXt-101-32x4d", "param_mb": 187, "feature_mb": 197, "gflops": 8},
    "senet154": {"model": "SENet", "param_mb": 440, "feature_mb": 347, "gflops": 21},
}


def reference_for(name: str | None) -> dict[str, object] | None:
    """The published figures of a registered model name, or None."""
    return REFERENCE.get(name) if isinstance(name, str) else None
