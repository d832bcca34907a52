"""What an analysis runs on when the caller says little: a model's own input size, one
``torch.Size`` as one tensor, whole-number figures in every convention, and Python's own error for
a misspelt keyword.

Oracles: the sizes the model libraries publish for these models (timm's ``_384`` ViTs, torchvision's
Inception v3 at 299 and EfficientNet-B7 at 600, as their documentation gives them), PyTorch's
``FlopCounterMode`` on the same input, and hand counts.
"""

import pytest
import torch
from torch import nn
from torch.utils.flop_counter import FlopCounterMode

import burden


def _flop_counter(model, size):
    with torch.device("meta"):
        x = torch.zeros(1, *size)
    with FlopCounterMode(display=False) as counter, torch.no_grad():
        model.eval()(x)
    return counter.get_total_flops()


def test_a_timm_model_fixed_at_384_is_analysed_at_384():
    timm = pytest.importorskip("timm")
    e = burden.estimate("timm:vit_tiny_patch16_384", convention="torch")
    assert e.input == (3, 384, 384)
    with torch.device("meta"):
        model = timm.create_model("vit_tiny_patch16_384")
    assert e.flops == _flop_counter(model, (3, 384, 384))


def test_a_timm_module_given_as_an_object_says_its_own_size_too():
    timm = pytest.importorskip("timm")
    with torch.device("meta"):
        model = timm.create_model("vit_tiny_patch16_384")
    assert burden.estimate(model).input == (3, 384, 384)
    assert burden.estimate(model, 384).input == (3, 384, 384)


@pytest.mark.parametrize("name,side", [("inception_v3", 299), ("efficientnet_b7", 600), ("resnet18", 224),
                                       ("vit_b_16", 224)])
def test_torchvision_models_at_their_default_weights_size(name, side):
    pytest.importorskip("torchvision")
    assert burden.estimate(f"torchvision:{name}").input == (3, side, side)


def test_an_explicit_size_wins_over_the_models_own():
    pytest.importorskip("torchvision")
    assert burden.estimate("torchvision:inception_v3", 320).input == (3, 320, 320)


def test_a_module_that_says_nothing_runs_at_224():
    model = nn.Sequential(nn.Conv2d(3, 4, 3), nn.AdaptiveAvgPool2d(1))
    e = burden.estimate(model, convention="macs")
    assert e.input == (3, 224, 224)
    assert e.flops == 4 * 3 * 9 * 222 * 222  # multiply-accumulates of the 3x3 convolution, no bias


def test_a_top_level_torch_size_is_one_tensor():
    model = nn.Linear(15, 4)
    one = burden.estimate(model, inputs=torch.Size([1, 4, 15]), convention="macs")
    assert one.flops == 4 * 15 * 4  # one 4x15 input times a 15x4 weight
    assert burden.estimate(model, inputs=(torch.Size([1, 4, 15]),), convention="macs").flops == one.flops
    assert burden.estimate(model, inputs={"input": torch.Size([1, 4, 15])}, convention="macs").flops == one.flops


class _Einsum(nn.Module):
    def forward(self, x):
        return torch.einsum("bij,bjk->bik", x, x)


@pytest.mark.parametrize("convention", burden.list_conventions())
def test_every_figure_is_an_integer_in_every_convention(convention):
    e = burden.estimate(_Einsum(), inputs=torch.Size([1, 3, 3]), convention=convention)
    figures = [e.flops, e.params, e.feature_bytes] + [v for layer in e.layers for v in (layer.flops,)]
    assert all(type(v) is int for v in figures), figures
    flops = e.to_dict()["flops"]
    assert type(flops) is int
    if convention == "fvcore":
        assert flops == 27  # fvcore's multiply-adds of a 3x3 by 3x3 product: 3 * 3 * 3


def test_a_misspelt_keyword_is_pythons_type_error():
    with pytest.raises(TypeError, match="optimizer_imp"):
        burden.estimate(nn.Linear(2, 2), optimizer_imp="foreach")
