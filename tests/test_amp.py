"""Mixed precision (``amp=``) against ``torch.autocast("cpu")`` itself: the CPU allocator's figures of
a real autocast forward (and of a training step whose forward runs under autocast) are the oracle.
"""

from __future__ import annotations

import warnings

import pytest
import torch
from torch import nn

import burden
from allocator_oracle import measure, measure_step
from burden.errors import InputSpecError


def small_cnn() -> nn.Module:
    torch.manual_seed(0)
    return nn.Sequential(nn.Conv2d(3, 16, 3, padding=1), nn.BatchNorm2d(16), nn.ReLU(), nn.Conv2d(16, 32, 3, stride=2),
                         nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(32, 10))


class TinyViT(nn.Module):
    """Patches, two encoder layers (attention through scaled_dot_product_attention), a head."""

    def __init__(self) -> None:
        super().__init__()
        torch.manual_seed(0)
        self.patch = nn.Conv2d(3, 64, 8, stride=8)
        self.encoder = nn.TransformerEncoder(nn.TransformerEncoderLayer(64, 4, 128, batch_first=True, dropout=0.0), 2,
                                             enable_nested_tensor=False)
        self.head = nn.Linear(64, 10)

    def forward(self, x):
        tokens = self.patch(x).flatten(2).transpose(1, 2)
        return self.head(self.encoder(tokens).mean(1))


def _within(predicted: int, measured: int, slack: float = 0.01) -> bool:
    return abs(predicted / measured - 1) <= slack


@pytest.mark.parametrize("build,shape", [(small_cnn, (4, 3, 32, 32)), (TinyViT, (2, 3, 32, 32))])
@pytest.mark.parametrize("amp", [torch.bfloat16, torch.float16])
def test_autocast_step_against_the_allocator(build, shape, amp):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        m = measure(build(), (torch.randn(*shape),), autocast=amp)
        whole = measure_step(build(), (torch.randn(*shape),), optimizer=torch.optim.Adam, autocast=amp)
    e = burden.estimate(build(), shape[1:], batch_size=shape[0], mode="training", amp=amp)
    if build is not TinyViT:  # in eval mode the CPU runs its fused encoder-layer kernel, which meta cannot (README)
        assert _within(e.peak_feature_bytes, m.inference_peak)
    assert _within(e.training.saved_activation_bytes, m.saved_activations)
    assert _within(e.training.training_peak_bytes, whole.peak)
    plain = burden.estimate(build(), shape[1:], batch_size=shape[0], mode="training")
    if build is small_cnn:  # (in the small transformer, autocast's copies outweigh the halved activations)
        assert e.training.saved_activation_bytes < plain.training.saved_activation_bytes
    assert e.training.gradient_bytes == plain.training.gradient_bytes  # float32 master weights and gradients


def test_se_resnet50_bf16_training_step():
    x = torch.randn(2, 3, 64, 64)
    m = measure(burden.create_model("se_resnet50"), (x,), autocast=torch.bfloat16)
    whole = measure_step(burden.create_model("se_resnet50"), (x,), optimizer=torch.optim.Adam, autocast=torch.bfloat16)
    e = burden.estimate("se_resnet50", 64, batch_size=2, mode="training", amp="bf16")
    assert _within(e.training.training_peak_bytes, whole.peak)
    assert _within(e.training.saved_activation_bytes, m.saved_activations)
    assert e.amp == "bfloat16" and e.to_dict()["amp"] == "bfloat16"


def test_the_cast_weights_are_kept_for_the_whole_forward():
    # Linear(256, 256) twice on one sample: autocast keeps each bf16 weight copy (131,072 B + bias)
    # until the forward ends, so both are live at the end, beside both outputs (bf16); the input's
    # bf16 copy died once the first layer had used it
    model = nn.Sequential(nn.Linear(256, 256), nn.Linear(256, 256))
    e = burden.estimate(model, (256,), amp="bf16")
    copies = 2 * (256 * 256 + 256) * 2
    activations = 2 * 256 * 2
    assert e.peak_feature_bytes == copies + activations
    m = measure(nn.Sequential(nn.Linear(256, 256), nn.Linear(256, 256)), (torch.randn(1, 256),), autocast=torch.bfloat16)
    assert m.inference_peak == e.peak_feature_bytes


def test_amp_mistakes():
    with pytest.raises(InputSpecError, match="bf16"):
        burden.estimate(small_cnn(), (3, 32, 32), amp="int8")
    with pytest.raises(InputSpecError, match="float32 weights"):
        burden.estimate(small_cnn(), (3, 32, 32), amp="bf16", dtype="float16")


def test_fit_under_amp_fits_more():
    assert burden.fit("se_resnet50", "4GiB", amp="bf16").max_batch > burden.fit("se_resnet50", "4GiB").max_batch


def test_the_wrapped_names_are_given_back():
    before = (functional_linear := torch.nn.functional.linear, torch.matmul, torch.Tensor.__matmul__,
              "mm" in torch.Tensor.__dict__, torch.cat)
    burden.estimate(TinyViT(), (3, 32, 32), amp="bf16", mode="training")
    after = (torch.nn.functional.linear, torch.matmul, torch.Tensor.__matmul__, "mm" in torch.Tensor.__dict__,
             torch.cat)
    assert after == before and functional_linear is torch.nn.functional.linear
