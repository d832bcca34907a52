"""Small models whose figures are worked out by hand in each test, under convnet-burden."""

import pytest
import torch
from torch import nn

import burden


def est(model, size, batch=1, **kw):
    return burden.estimate(model, size, batch_size=batch, **kw)


def test_conv_with_bias():
    # 1x3x8x8 -> 8x8x8 = 512 outputs, each 3*3*3 = 27 multiply-adds, plus 512 bias adds
    e = est(nn.Conv2d(3, 8, 3, padding=1), (3, 8, 8))
    assert e.flops == 512 * 27 + 512 == 14336
    assert e.params == 8 * 27 + 8 == 224
    assert e.param_bytes == 224 * 4
    assert e.feature_bytes == 512 * 4


def test_conv_without_bias_and_batch():
    e = est(nn.Conv2d(3, 8, 3, padding=1, bias=False), (3, 8, 8), batch=3)
    assert e.flops == 3 * 512 * 27 == 41472
    assert e.params == 216
    assert e.feature_bytes == 3 * 512 * 4


def test_grouped_strided_conv():
    # 4 -> 8 channels in 2 groups, 3x3, stride 2 on 6x6: 8x3x3 = 72 outputs, each 2*3*3 = 18
    e = est(nn.Conv2d(4, 8, 3, stride=2, padding=1, groups=2, bias=False), (4, 6, 6))
    assert e.flops == 72 * 18 == 1296
    assert e.params == 8 * 2 * 9 == 144
    assert e.feature_bytes == 72 * 4


def test_linear():
    # 10 -> 5 on a batch of 2: 10 outputs x 10 inputs, plus 10 bias adds
    e = burden.estimate(nn.Linear(10, 5), (10,), batch_size=2)
    assert e.flops == 10 * 10 + 10 == 110
    assert e.params == 55
    assert e.feature_bytes == 10 * 4


def test_max_pool_window_rule():
    # 3x3 stride 2 with ceil on 7x7: 3x3 outputs per channel, 2 channels = 18; 2 x 18 x 2 x 2
    e = est(nn.MaxPool2d(3, 2, ceil_mode=True), (2, 7, 7))
    assert e.flops == 2 * 18 * 4 == 144
    assert e.feature_bytes == 18 * 4  # the indices PyTorch keeps are not a feature


def test_global_average_pool():
    e = est(nn.AdaptiveAvgPool2d(1), (4, 8, 8))
    assert e.flops == 4 * 8 * 8  # one per input element
    assert e.feature_bytes == 4 * 4


def test_relu_counts_two_flops_and_no_buffer():
    for inplace in (False, True):
        e = est(nn.ReLU(inplace=inplace), (4, 8, 8))
        assert e.flops == 2 * 256
        assert e.feature_bytes == 0


class Residual(nn.Module):
    def __init__(self, inplace):
        super().__init__()
        self.conv = nn.Conv2d(4, 4, 1, bias=False)
        self.inplace = inplace

    def forward(self, x):
        out = self.conv(x)
        if self.inplace:
            out += x
            return out
        return out + x


@pytest.mark.parametrize("inplace", [False, True])
def test_residual_sum(inplace):
    # conv: 100 outputs x 4 = 400; sum: 100. Buffers: conv 400 B + sum 400 B, even in place.
    e = est(Residual(inplace), (4, 5, 5))
    assert e.flops == 400 + 100
    assert e.feature_bytes == 400 + 400
    assert e.layer("").self_flops == 100 and e.layer("conv").flops == 400


class SERescale(nn.Module):
    def __init__(self, style):
        super().__init__()
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.fc = nn.Conv2d(4, 4, 1)
        self.gate = nn.Sigmoid()
        self.style = style

    def forward(self, x):
        s = self.gate(self.fc(self.pool(x)))
        if self.style == "addcmul":
            return torch.addcmul(x, x, s)
        if self.style == "mul-add":
            return x * s + x
        return x * s  # SE-BN-Inception: a scale with no sum


@pytest.mark.parametrize("style", ["addcmul", "mul-add"])
def test_se_rescale_with_sum_is_one_fused_op(style):
    # x: 1x4x5x5 = 100 values. pool 100 FLOPs -> 4 values; fc 4 x 4 + 4 bias = 20 FLOPs -> 4;
    # sigmoid 0 -> 4; fused scale + sum 2 x 100 = 200 -> 100 values (one buffer).
    e = est(SERescale(style), (4, 5, 5))
    assert e.flops == 100 + 20 + 200
    assert e.feature_bytes == (4 + 4 + 4 + 100) * 4
    assert e.params == 20


def test_se_rescale_alone():
    e = est(SERescale("scale"), (4, 5, 5))
    assert e.flops == 100 + 20 + 100
    assert e.feature_bytes == (4 + 4 + 4 + 100) * 4


def test_batch_norm_is_folded_but_its_output_is_a_buffer():
    e = est(nn.BatchNorm2d(4), (4, 5, 5))
    assert e.flops == 0
    assert e.feature_bytes == 100 * 4
    assert e.params == 16  # weight, bias, running mean, running var; not num_batches_tracked


def test_flatten_and_dropout_add_nothing():
    e = est(nn.Sequential(nn.Flatten(), nn.Dropout(0.5)), (4, 5, 5))
    assert (e.flops, e.feature_bytes) == (0, 0)


class Unruled(nn.Module):
    def forward(self, x):
        return torch.nn.functional.gelu(x)


def test_op_without_rule_is_listed_not_dropped():
    e = est(Unruled(), (4, 5, 5))
    assert e.flops == 0
    assert e.feature_bytes == 400  # its output memory still counts
    assert [(u.op, u.calls, u.layers) for u in e.uncounted_ops] == [("aten.gelu", 1, ("",))]


def test_dtype_sets_bytes_per_value():
    model = nn.Conv2d(3, 8, 3, padding=1)
    for dtype, size in (("float16", 2), ("bfloat16", 2), ("int8", 1), ("float64", 8), (torch.float32, 4)):
        e = est(model, (3, 8, 8), dtype=dtype)
        assert e.param_bytes == 224 * size
        assert e.feature_bytes == 512 * size
        assert e.flops == 14336


class Tied(nn.Module):
    def __init__(self):
        super().__init__()
        self.a = nn.Linear(4, 4, bias=False)
        self.b = nn.Linear(4, 4, bias=False)
        self.b.weight = self.a.weight

    def forward(self, x):
        return self.b(self.a(x))


def test_shared_weight_counts_once_for_memory_and_per_call_for_flops():
    e = burden.estimate(Tied(), (4,))
    assert e.params == 16
    assert e.flops == 2 * (4 * 4)
    assert e.layer("a").params == 16 and e.layer("b").params == 0
