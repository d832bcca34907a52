"""The headline result: the seven SE networks reproduce the convnet-burden reference table."""

import pytest
import torch

import burden
from caffe_reference import PROTOTXT, burden_of, prototxt_dir

MiB = 2**20

# shared/reference/mcnSENets-README.txt, second table: param memory (MB = MiB), feature memory, GFLOPs
# at 224 x 224, batch 1.
REFERENCE = {
    "se_resnet50": (107, 103, 4),
    "se_resnet101": (189, 155, 8),
    "se_resnet152": (255, 220, 11),
    "se_bn_inception": (46, 43, 2),
    "se_resnext50_32x4d": (105, 132, 4),
    "se_resnext101_32x4d": (187, 197, 8),
    "senet154": (440, 347, 21),
}

# Parameter counts of the Caffe definitions: every Convolution and InnerProduct blob, and 4 x C per
# BatchNorm + Scale pair (mean, variance, scale, shift). Summed from the .prototxt files.
PROTOTXT_PARAMS = {
    "se_resnet50": 28_141_144,
    "se_resnet101": 49_432_216,
    "se_resnet152": 66_973_272,
    "se_bn_inception": 11_951_654,
    "se_resnext50_32x4d": 27_628_120,
    "se_resnext101_32x4d": 49_093_272,
    "senet154": 115_336_536,
}


@pytest.fixture(scope="module")
def estimates():
    return {name: burden.estimate(name, 224) for name in REFERENCE}


def test_registry_holds_the_seven_networks():
    assert sorted(burden.list_models()) == sorted(REFERENCE)


@pytest.mark.parametrize("name", sorted(REFERENCE))
def test_reference_table_at_display_rounding(estimates, name):
    e = estimates[name]
    param_mb, feature_mb, gflops = REFERENCE[name]
    assert round(e.param_bytes / MiB) == param_mb
    assert round(e.feature_bytes / MiB) == feature_mb
    assert round(e.flops / 1e9) == gflops
    assert e.convention == "convnet-burden" and e.uncounted_ops == ()


@pytest.mark.parametrize("name", sorted(PROTOTXT_PARAMS))
def test_exact_parameter_count(estimates, name):
    e = estimates[name]
    assert e.params == PROTOTXT_PARAMS[name]
    assert e.param_bytes == 4 * PROTOTXT_PARAMS[name]


@pytest.mark.parametrize("name", sorted(PROTOTXT_PARAMS))
def test_create_model_parameter_count(name):
    with torch.device("meta"):
        model = burden.create_model(name)
    stored = sum(p.numel() for p in model.parameters())
    stored += sum(b.numel() for b in model.buffers() if b.is_floating_point())
    assert stored == PROTOTXT_PARAMS[name]


@pytest.mark.skipif(prototxt_dir() is None, reason="shared/reference/prototxt is not beside this checkout")
@pytest.mark.parametrize("name", sorted(PROTOTXT))
def test_exact_figures_match_the_caffe_definition(estimates, name):
    """Exact integers, not display rounding: an independent walk over the Caffe layers."""
    expected = burden_of(name)
    e = estimates[name]
    assert (e.params, e.feature_bytes, e.flops) == (expected["params"], expected["feature_bytes"], expected["flops"])


@pytest.mark.skipif(prototxt_dir() is None, reason="shared/reference/prototxt is not beside this checkout")
def test_batch_and_dtype_scale_the_caffe_figures():
    expected = burden_of("se_resnet50", batch=8, elsize=2)
    e = burden.estimate("se_resnet50", 224, batch_size=8, dtype="float16")
    assert (e.feature_bytes, e.flops) == (expected["feature_bytes"], expected["flops"])
    assert e.param_bytes == 2 * PROTOTXT_PARAMS["se_resnet50"]
