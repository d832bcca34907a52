"""The headline result: the seven SE networks reproduce the convnet-burden reference table."""

import pytest
import torch

import burden
from caffe_reference import PROTOTXT, PROTOTXT_DIR, burden_of, prototxt_path

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


def test_the_caffe_definitions_ship_with_the_tests():
    """tests/data/prototxt holds all seven definitions and their licence notice, so that a fresh
    clone runs every Caffe cross-check below: none of them may skip for want of a file."""
    shipped = sorted(p.name for p in PROTOTXT_DIR.glob("*.prototxt"))
    assert shipped == sorted(f"{v}.prototxt" for v in PROTOTXT.values())
    notice = (PROTOTXT_DIR / "NOTICE").read_text(encoding="utf-8")
    assert "hujie-frank/SENet" in notice and "Apache License, Version 2.0" in notice
    assert all(name in notice for name in shipped)
    assert "Apache License" in (PROTOTXT_DIR / "LICENSE").read_text(encoding="utf-8")
    for name in PROTOTXT:
        assert prototxt_path(name).read_text(encoding="utf-8").lstrip().startswith("name:")


@pytest.mark.parametrize("name", sorted(PROTOTXT))
def test_the_caffe_walk_reproduces_the_reference_table(name):
    """The two oracles agree with each other before either is used on burden: the independent
    walk over the Caffe layers gives the published table's figures and the parameter counts."""
    expected = burden_of(name)
    param_mb, feature_mb, gflops = REFERENCE[name]
    assert expected["params"] == PROTOTXT_PARAMS[name]
    assert round(4 * expected["params"] / MiB) == param_mb
    assert round(expected["feature_bytes"] / MiB) == feature_mb
    assert round(expected["flops"] / 1e9) == gflops


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


@pytest.mark.parametrize("name", sorted(PROTOTXT))
def test_exact_figures_match_the_caffe_definition(estimates, name):
    """Exact integers, not display rounding: an independent walk over the Caffe layers."""
    expected = burden_of(name)
    e = estimates[name]
    assert (e.params, e.feature_bytes, e.flops) == (expected["params"], expected["feature_bytes"], expected["flops"])


def test_batch_and_dtype_scale_the_caffe_figures():
    expected = burden_of("se_resnet50", batch=8, elsize=2)
    e = burden.estimate("se_resnet50", 224, batch_size=8, dtype="float16")
    assert (e.feature_bytes, e.flops) == (expected["feature_bytes"], expected["flops"])
    assert e.param_bytes == 2 * PROTOTXT_PARAMS["se_resnet50"]
