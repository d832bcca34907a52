"""Peak inference memory, training-step memory and backward FLOPs.

Two kinds of check. Small models whose figures are worked out by hand in each test. And
predictions on the meta device against the same model run on real CPU tensors, measured by the
CPU allocator itself (``allocator_oracle.py``: the profiler's allocation and free events, oneDNN
off, kernel workspaces told apart), which shares nothing with burden's method. The allocator's
tensor figures and burden's predictions agree to the byte on these models; the one documented
difference is the integer buffers (BatchNorm's ``num_batches_tracked``), which burden's parameter
memory leaves out by convention and the allocator holds.
"""

import pytest
import torch
from torch import nn

import burden
from allocator_oracle import measure, measure_step
from burden.errors import InputSpecError
from burden.memory import inference_peak, trace_lifetimes
from burden.api import request
from burden.trace import trace_forward
from burden.training import training_step
from test_untouched import Net, assert_same, prepare, snapshot

aten = torch.ops.aten


def meta(*shape):
    return torch.zeros(shape, device="meta")


def inference(model, shape, elsize=4):
    model.eval()
    with torch.no_grad():
        return inference_peak(trace_lifetimes(model, (meta(*shape),)), elsize)


def mlp(inplace=False):
    return nn.Sequential(nn.Linear(4, 8), nn.ReLU(inplace=inplace), nn.Linear(8, 3))


def step(model, args, optimizer="adam", kwargs=None, **options):
    """burden's figures for one whole training step (``training_step`` under a training request)."""
    return training_step(model, args, kwargs, request(mode="training", optimizer=optimizer, **options)).figures


# The same optimizers built for the oracle by torch.optim itself, each left to choose its
# implementation as PyTorch does on the CPU.
OPTIMIZERS = {"sgd": lambda ps: torch.optim.SGD(ps, lr=0.1),
              "momentum": lambda ps: torch.optim.SGD(ps, lr=0.1, momentum=0.9),
              "adam": lambda ps: torch.optim.Adam(ps),
              "adamw": lambda ps: torch.optim.AdamW(ps)}
# PyTorch passes a Python number to an op that takes a tensor as an 8-byte CPU tensor made outside
# any op (single-tensor Adam's division by the bias correction, momentum's factor): burden does not
# see it, and the oracle does when it is alive at the peak.
WRAPPED_NUMBER = 8


# --- the oracle itself, against figures worked out by hand --------------------------------------

def test_allocator_oracle_by_hand_convolution():
    # Conv2d(3, 4, 3, padding=1) on 1 x 3 x 8 x 8. Inference: the output, 4 x 8 x 8 floats = 1024
    # bytes; the non-oneDNN kernel's im2col columns, (3 x 3 x 3) x 64 floats = 6912 bytes, are
    # taken and given back inside the call: workspace, not tensor memory.
    torch.manual_seed(0)
    m = measure(nn.Conv2d(3, 4, 3, padding=1), (torch.randn(1, 3, 8, 8),), optimizer="sgd")
    assert (m.inference_peak, m.inference_workspace) == (1024, 6912)
    # Training with plain SGD (no state): weights 4 x 27 + 4 = 112 floats = 448 bytes; nothing is
    # saved but the input; backward holds the output (1024), the seed of ones (1024), the weight
    # gradient (432) and the bias gradient (16); the image needs no gradient.
    assert m.saved_activations == 0
    assert m.training_peak == 448 + 1024 + 1024 + 432 + 16
    assert m.training_workspace == 6912


def test_allocator_oracle_by_hand_linear():
    # Linear(4, 3), batch 2, SGD: 15 parameters = 60 bytes; output 2 x 3 = 24 bytes; backward adds
    # the seed (24), the weight gradient (48) and the bias gradient (12).
    m = measure(nn.Linear(4, 3), (torch.randn(2, 4),), optimizer="sgd")
    assert (m.inference_peak, m.saved_activations, m.training_peak) == (24, 0, 60 + 24 + 24 + 48 + 12)
    assert (m.inference_workspace, m.training_workspace) == (0, 0)


# --- models run for real ----------------------------------------------------------------------

class Residual(nn.Module):
    """A ResNet basic block with a strided projection shortcut and an in-place sum."""

    def __init__(self, cin, cout):
        super().__init__()
        self.conv1 = nn.Conv2d(cin, cout, 3, stride=2, padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(cout)
        self.conv2 = nn.Conv2d(cout, cout, 3, padding=1, bias=False)
        self.bn2 = nn.BatchNorm2d(cout)
        self.relu = nn.ReLU(inplace=True)
        self.downsample = nn.Sequential(nn.Conv2d(cin, cout, 1, stride=2, bias=False), nn.BatchNorm2d(cout))

    def forward(self, x):
        identity = self.downsample(x)
        out = self.relu(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        out += identity
        return self.relu(out)


class SEBlock(nn.Module):
    """Squeeze-and-excitation with the rescale and residual sum fused into one addcmul."""

    def __init__(self, channels, reduction=4):
        super().__init__()
        self.conv = nn.Conv2d(channels, channels, 3, padding=1, bias=False)
        self.bn = nn.BatchNorm2d(channels)
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.down = nn.Conv2d(channels, channels // reduction, 1)
        self.up = nn.Conv2d(channels // reduction, channels, 1)

    def forward(self, x):
        out = self.bn(self.conv(x))
        scale = torch.sigmoid(self.up(torch.relu(self.down(self.pool(out)))))
        return torch.relu(torch.addcmul(x, out, scale))


def head(channels, classes=5):
    return [nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(channels, classes)]


REAL_MODELS = {
    "conv_bn_relu_pool_linear": (lambda: nn.Sequential(
        nn.Conv2d(3, 8, 3, padding=1), nn.BatchNorm2d(8), nn.ReLU(inplace=True), nn.MaxPool2d(2),
        nn.Conv2d(8, 16, 3, padding=1, bias=False), nn.BatchNorm2d(16), nn.ReLU(), nn.AvgPool2d(2),
        *head(16)), (2, 3, 16, 16)),
    "residual": (lambda: nn.Sequential(nn.Conv2d(3, 8, 3, padding=1), Residual(8, 16), *head(16)), (2, 3, 16, 16)),
    "se_addcmul": (lambda: nn.Sequential(nn.Conv2d(3, 16, 3, padding=1), SEBlock(16), *head(16)), (2, 3, 16, 16)),
    "mlp_dropout": (lambda: nn.Sequential(nn.Flatten(), nn.Linear(48, 32), nn.ReLU(), nn.Dropout(0.5),
                                          nn.Linear(32, 10)), (2, 3, 4, 4)),
}


def build(name):
    factory, shape = REAL_MODELS[name]
    torch.manual_seed(0)
    return factory(), shape


@pytest.mark.parametrize("name", REAL_MODELS)
def test_inference_peak_matches_the_allocator(name):
    model, shape = build(name)
    predicted = inference(model, shape).peak_feature_bytes
    measured = measure(model, (torch.randn(shape),))
    assert measured.inference_peak > 0
    assert predicted == measured.inference_peak


@pytest.mark.parametrize("name", REAL_MODELS)
@pytest.mark.parametrize("optimizer", ["momentum", "adam"])
def test_training_step_matches_the_allocator(name, optimizer):
    model, shape = build(name)
    predicted = step(model, (meta(*shape),), optimizer)
    x = torch.randn(shape)
    measured = measure(model, (x,), optimizer=optimizer)
    assert measured.saved_activations > 0
    assert predicted.saved_activation_bytes == measured.saved_activations
    whole = measure_step(model, (x,), optimizer=OPTIMIZERS[optimizer])
    assert predicted.param_bytes + predicted.optimizer_bytes + predicted.input_bytes == whole.resident
    assert 0 <= whole.peak - predicted.training_peak_bytes <= WRAPPED_NUMBER
    assert predicted.peak_phase.startswith({"optimizer": "optimizer step"}.get(whole.peak_phase.name,
                                                                                 whole.peak_phase.name))


def test_training_step_on_real_tensors_matches_the_allocator():
    model, shape = build("residual")
    x = torch.randn(shape)
    on_cpu = step(model, (x,), device="cpu")
    measured = measure_step(model, (x,), optimizer=OPTIMIZERS["adam"])
    assert 0 <= measured.peak - on_cpu.training_peak_bytes <= WRAPPED_NUMBER
    # and the meta device gives the same figures as real tensors
    on_meta = step(model, (meta(*shape),))
    for figure in ("saved_activation_bytes", "backward_peak_bytes", "optimizer_step_peak_bytes",
                   "training_peak_bytes", "backward_flops"):
        assert getattr(on_cpu, figure) == getattr(on_meta, figure), figure


@pytest.mark.parametrize("name", ["se_resnet50", "se_resnext50_32x4d"])
def test_se_network_matches_the_allocator(name):
    """A whole SE network through the public API, at a small size to keep the real run short.
    SE-ResNeXt has grouped convolutions, whose CPU backward computes each group apart: the
    allocator counts those pieces as the kernel's workspace, burden does not predict them."""
    e = burden.estimate(name, (3, 64, 64), batch_size=1, mode="training")
    torch.manual_seed(0)
    model = burden.create_model(name)
    x = torch.randn(1, 3, 64, 64)
    measured = measure(model, (x,))
    assert measured.inference_workspace > 0  # im2col columns: seen, and kept apart
    assert e.peak_bytes - e.input_bytes - e.held_bytes == e.peak_feature_bytes == measured.inference_peak
    assert e.training.saved_activation_bytes == measured.saved_activations
    whole = measure_step(model, (x,), optimizer=OPTIMIZERS["adam"])
    assert 0 <= whole.peak - e.training.training_peak_bytes <= WRAPPED_NUMBER
    assert e.training.peak_phase == "optimizer step" and whole.peak_phase.name == "optimizer"


class Branches(nn.Module):
    """One activation read by two branches: its gradient is the sum of the branches' gradients."""

    def __init__(self):
        super().__init__()
        self.stem = nn.Conv2d(3, 8, 3, padding=1)
        self.a = nn.Conv2d(8, 4, 1)
        self.b = nn.Conv2d(8, 4, 3, padding=1)

    def forward(self, x):
        y = torch.relu(self.stem(x))
        return torch.cat([self.a(y), self.b(y)], 1)


# One training step of Branches on 1 x 3 x 16 x 16 with SGD, worked out by hand. Parameters
# 8 x 27 + 8 + 4 x 8 + 4 + 4 x 72 + 4 = 552 floats = 2208 bytes. A 8 x 16 x 16 map is 8192 bytes.
# Forward end: the ReLU output (saved by relu, a and b; the stem's output is gone) and the output:
# 16384, of which 8192 saved. Backward: the seed 8192 (cat's backward hands out views of it); b's
# backward makes its input gradient 8192 and weight and bias gradients 1152 + 16, then a's makes
# 8192 + 128 + 16: live 16384 + 8192 + 9360 + 8336 = 42272. Autograd adds a's input gradient into
# b's in place (``add_``: nothing else holds b's), so there is no third 8192-byte buffer, and a's
# dies: 34080. The ReLU backward then makes its 8192: 42272 again. Peak 2208 + 42272.
BRANCHES_STEP_PEAK = 2208 + 42272


def test_branch_gradients_by_hand_allocator():
    torch.manual_seed(0)
    measured = measure(Branches(), (torch.randn(1, 3, 16, 16),), optimizer="sgd")
    assert measured.saved_activations == 8192
    assert measured.training_peak == BRANCHES_STEP_PEAK


def test_branch_gradients_by_hand_burden():
    x = meta(1, 3, 16, 16)  # 3072 bytes, held through the step
    figures = step(Branches(), (x,), "sgd")
    assert figures.saved_activation_bytes == 8192
    assert figures.input_bytes == 3072
    assert figures.training_peak_bytes == BRANCHES_STEP_PEAK + 3072
    assert figures.peak_phase == "backward"


# --- inference peaks worked out by hand ---------------------------------------------------------

class Chain(nn.Module):
    """Three 1x1 convolutions whose results are kept in locals until the function returns."""

    def __init__(self):
        super().__init__()
        self.c1, self.c2, self.c3 = nn.Conv2d(3, 8, 1), nn.Conv2d(8, 8, 1), nn.Conv2d(8, 8, 1)

    def forward(self, x):
        a = self.c1(x)
        b = self.c2(a)
        c = self.c3(b)
        return c


def test_locals_keep_buffers_alive_past_their_last_read():
    # each output is 8 x 4 x 4 = 128 floats = 512 bytes; ``a`` and ``b`` live until return
    live = inference(Chain(), (1, 3, 4, 4))
    assert live.observed
    assert live.peak_feature_bytes == 3 * 512
    assert (live.peak_op.op, live.peak_op.module) == ("aten.convolution", "c3")
    # freeing at the last read instead (a plain trace) would drop ``a`` before c3 runs
    with torch.no_grad():
        plain = inference_peak(trace_forward(Chain().eval(), (meta(1, 3, 4, 4),)), 4)
    assert not plain.observed
    assert plain.peak_feature_bytes == 2 * 512


@pytest.mark.parametrize("from_plain_trace", [False, True])
def test_mlp_inference_peak_by_hand(from_plain_trace):
    # batch 2: hidden 2 x 8 = 64 bytes, output 2 x 3 = 24 bytes. The ReLU output and its input
    # coexist while it runs (128); the input dies as Sequential moves on; then 64 + 24.
    model = mlp().eval()
    with torch.no_grad():
        trace = (trace_forward if from_plain_trace else trace_lifetimes)(model, (meta(2, 4),))
    live = inference_peak(trace, 4)
    assert live.peak_feature_bytes == 128
    assert (live.peak_op.op, live.peak_op.module) == ("aten.relu", "1")
    assert live.curve[-1] == 64 + 24


def test_inplace_relu_allocates_nothing():
    # the hidden buffer is reused by relu_; peak is the hidden buffer plus the output
    live = inference(mlp(inplace=True), (2, 4))
    assert live.peak_feature_bytes == 64 + 24
    assert (live.peak_op.op, live.peak_op.module) == ("aten.addmm", "2")


@pytest.mark.parametrize("elsize, expected", [(4, 448), (2, 288), (8, 768), (None, 448)])
def test_element_size_applies_to_floating_storages(elsize, expected):
    # conv 4 x 4 x 4 = 64 floats, pooled 4 x 2 x 2 = 16 floats and 16 int64 indices, all live at the pool
    model = nn.Sequential(nn.Conv2d(3, 4, 1), nn.MaxPool2d(2))
    live = inference(model, (1, 3, 4, 4), elsize)
    assert live.peak_feature_bytes == expected
    assert live.peak_op.module == "1"


# --- training steps worked out by hand ----------------------------------------------------------

# Linear(4, 3), batch 2: 15 parameters (weight 48 bytes, bias 12) = 60 bytes, all trainable; the
# input 2 x 4 = 32 bytes. The optimizers' state, made by their own first step: SGD none; SGD with
# momentum a buffer per parameter (60); Adam and AdamW two moments per parameter (120) and a
# float32 step counter per parameter on the CPU (2 x 4).
LINEAR_STATE = {"sgd": 0, "momentum": 60, "adam": 128, "adamw": 128}
# What the step itself makes: SGD (with or without momentum) updates in place; single-tensor Adam
# makes ``exp_avg_sq.sqrt()`` and its division by the bias correction, both the parameter's size,
# alive together (the weight's: 2 x 48), then adds eps and updates in place. AdamW decays in place.
LINEAR_STEP_TEMPORARIES = {"sgd": 0, "momentum": 0, "adam": 96, "adamw": 96}


@pytest.mark.parametrize("optimizer", LINEAR_STATE)
def test_single_linear_step_by_hand(optimizer):
    # Nothing is saved but the input (not an activation). Forward: the output (24). Backward: the
    # output and the seed of ones (24) stay live; the weight gradient is computed as seed^T @ x,
    # 3 x 4 in W's own layout (48), and goes into .grad as it is; the bias gradient is the seed
    # summed over the batch (12): 108 at the end. Then the output and seed go, the gradients (60)
    # stay for the optimizer's step.
    figures = step(nn.Linear(4, 3), (meta(2, 4),), optimizer)
    state = LINEAR_STATE[optimizer]
    held = 60 + state + 32
    assert (figures.param_bytes, figures.optimizer_bytes, figures.input_bytes) == (60, state, 32)
    assert figures.gradient_bytes == 60
    assert figures.saved_activation_bytes == 0
    assert figures.forward_peak_bytes == held + 24
    assert figures.backward_peak_bytes == held + 24 + 24 + 48 + 12
    assert figures.optimizer_step_peak_bytes == held + 60 + LINEAR_STEP_TEMPORARIES[optimizer]
    assert figures.training_peak_bytes == max(held + 108, held + 60 + LINEAR_STEP_TEMPORARIES[optimizer])
    assert figures.peak_phase == ("optimizer step" if optimizer.startswith("adam") else "backward")
    assert sum(n for _, n in figures.peak_parts) == figures.training_peak_bytes
    # forward: 6 outputs x 4 inputs + 6 bias adds; backward: the 4 x 3 x 2 product, 6 adds for the bias
    assert figures.forward_flops == 30
    assert figures.backward_flops == 24 + 6


@pytest.mark.parametrize("optimizer", ["sgd", "adam"])
def test_single_linear_step_against_the_allocator(optimizer):
    torch.manual_seed(0)
    measured = measure_step(nn.Linear(4, 3), (torch.randn(2, 4),), optimizer=OPTIMIZERS[optimizer])
    assert measured.resident == 60 + LINEAR_STATE[optimizer] + 32
    assert measured.peak - WRAPPED_NUMBER * (optimizer == "adam") == step(
        nn.Linear(4, 3), (meta(2, 4),), optimizer).training_peak_bytes


@pytest.mark.parametrize("impl, temporaries", [
    ("single", 2 * 4_000_000),  # sqrt and its division, the weight's size, alive together
    ("foreach", 4_004_000),  # _foreach_sqrt of every parameter at once, then divided in place
    ("fused", 0),  # one kernel updates everything in place
])
def test_optimizer_implementations_by_hand(impl, temporaries):
    # Linear(1000, 1000) on 4 x 1000: weight 4,000,000 bytes, bias 4,000; Adam's state 2 x 4,004,000
    # and two float32 step counters (on the CPU; on the device for fused).
    figures = step(nn.Linear(1000, 1000), (meta(4, 1000),), "adam", optimizer_impl=impl)
    held = 4_004_000 + 2 * 4_004_000 + 8 + 16_000
    assert figures.optimizer_impl == impl
    assert figures.optimizer_bytes == 2 * 4_004_000 + 8
    assert figures.optimizer_step_peak_bytes == held + 4_004_000 + temporaries
    # backward: the output and its seed (16,000 each) with both gradients
    assert figures.backward_peak_bytes == held + 2 * 16_000 + 4_004_000
    assert figures.peak_phase == ("backward" if impl == "fused" else "optimizer step")


def test_mlp_step_by_hand():
    # Linear(4, 8) ReLU Linear(8, 3), batch 2, Adam. Parameters 32 + 8 + 24 + 3 = 67 -> 268 bytes;
    # Adam's state 2 x 268 + 4 step counters x 4 = 552; the input 32.
    figures = step(mlp(), (meta(2, 4),), "adam")
    assert (figures.param_bytes, figures.gradient_bytes, figures.optimizer_bytes) == (268, 268, 552)
    held = 268 + 552 + 32
    # ReLU saves its output, the second linear saves the same tensor: 2 x 8 floats, once
    assert figures.saved_activation_bytes == 64
    assert figures.forward_peak_bytes == held + 128  # hidden and ReLU output while ReLU runs
    # Backward ends with the output 24, the seed 24 and every gradient (268) live; the first
    # layer's gradients are made from the ReLU's input gradient (2 x 8 = 64), which is freed only
    # after both: 24 + 24 + 268 + 64. (Earlier, at the ReLU backward: 24 + 24 + 108 of the second
    # layer's gradients + its input gradient 64 + the saved ReLU output 64 + the new one 64 = 348.)
    assert figures.backward_peak_bytes == held + 24 + 24 + 268 + 64
    # The step: the gradients (268), and for each parameter in turn its sqrt and quotient, with the
    # previous parameter's quotient (denom) still alive: first weight 2 x 128; first bias 128 + 2 x 32;
    # second weight 32 + 2 x 96; second bias 96 + 2 x 12. The largest is the first weight's, 256.
    assert figures.optimizer_step_peak_bytes == held + 268 + 256
    assert figures.training_peak_bytes == held + 268 + 256
    # second linear: grad input 2x8x3 + grad weight 8x3x2 + bias 6; ReLU 2 x 16;
    # first linear: grad weight 4x8x2 + bias 16 (its input needs no gradient)
    assert figures.backward_flops == 48 + 48 + 6 + 32 + 64 + 16
    assert dict(figures.backward_flops_by_module) == {"2": 102, "1": 32, "0": 80}


def test_frozen_parameters_get_no_gradient_or_state():
    model = mlp()
    model[0].requires_grad_(False)
    figures = step(model, (meta(2, 4),), "adam")
    assert figures.param_bytes == 268
    assert figures.gradient_bytes == (24 + 3) * 4
    assert figures.optimizer_bytes == 2 * 108 + 2 * 4
    # the ReLU output needs no gradient, so only the second linear saves it, for its weight
    assert figures.saved_activation_bytes == 64
    assert figures.backward_flops == 48 + 6


def test_gradient_accumulation_by_hand():
    # Linear(1000, 1000, bias=False) on 4 x 1000, SGD, two micro-batches. The first backward makes
    # the gradient (4,000,000) beside the output and its seed (16,000 each); the second makes a new
    # one beside the first, which holds on, and AccumulateGrad adds it in place: 8,000,000 + 32,000.
    model = nn.Linear(1000, 1000, bias=False)
    one = step(model, (meta(4, 1000),), "sgd")
    two = step(model, (meta(4, 1000),), "sgd", grad_accum=2)
    held = 4_000_000 + 16_000
    assert one.backward_peak_bytes == held + 32_000 + 4_000_000
    assert two.backward_peak_bytes == held + 32_000 + 8_000_000
    assert two.peak_phase == "backward (micro-batch 2)"
    assert two.gradient_bytes == one.gradient_bytes == 4_000_000
    assert two.forward_flops == 2 * one.forward_flops
    torch.manual_seed(0)
    measured = measure_step(nn.Linear(1000, 1000, bias=False), (torch.randn(4, 1000),),
                            optimizer=OPTIMIZERS["sgd"], accum=2)
    assert measured.peak == two.training_peak_bytes
    assert measured.peak_phase.micro_batch == 1


class WithLoss(nn.Module):
    """Returns its loss beside its output, as a Hugging Face model does when given labels."""

    def __init__(self):
        super().__init__()
        self.linear = nn.Linear(1000, 1000)

    def forward(self, x, labels):
        logits = self.linear(x)
        return {"loss": nn.functional.mse_loss(logits, labels), "logits": logits}


def test_the_backward_starts_from_the_models_loss():
    x, labels = meta(8, 1000), meta(8, 1000)
    figures = step(WithLoss(), (x, labels), "sgd")
    assert figures.loss.startswith("the model's loss")
    torch.manual_seed(0)
    measured = measure_step(WithLoss(), (torch.randn(8, 1000), torch.randn(8, 1000)), optimizer=OPTIMIZERS["sgd"])
    assert measured.peak == figures.training_peak_bytes
    scalar = step(nn.Sequential(nn.Linear(4, 1), nn.Flatten(0)), (meta(1, 4),), "sgd")
    assert scalar.loss == "the model's one-element output"
    assert step(mlp(), (meta(2, 4),), "sgd").loss.startswith("a gradient of ones")


def test_convolution_backward_flops_by_hand():
    # 1 x 3 x 8 x 8. conv2 (4 -> 2, 3x3, no bias): 128 outputs x 36 MACs for the input gradient and
    # again for the weight gradient; ReLU 2 x 256; conv1 (3 -> 4): weight gradient 256 x 27 plus
    # 256 bias adds, no input gradient (the image needs none).
    model = nn.Sequential(nn.Conv2d(3, 4, 3, padding=1), nn.ReLU(), nn.Conv2d(4, 2, 3, padding=1, bias=False))
    figures = step(model, (meta(1, 3, 8, 8),))
    assert dict(figures.backward_flops_by_module) == {"2": 2 * 4608, "1": 512, "0": 6912 + 256}
    assert figures.backward_flops == 16896
    assert figures.backward_uncounted_ops == ()


@pytest.mark.parametrize("layer, flops", [
    (nn.MaxPool2d(2), 32),  # one add per output gradient (2 x 4 x 2 x 2)
    (nn.AvgPool2d(2), 32 * 4),  # each output gradient spread over its 2 x 2 window
    (nn.AdaptiveAvgPool2d(1), 128),  # one per input element
    (nn.Sigmoid(), 2 * 128),
    (nn.BatchNorm2d(4), 6 * 128),  # bias 1, weight 2, input 3 per element with batch statistics
])
def test_backward_rules_by_hand(layer, flops):
    # a 1x1 convolution first (input 2 x 3 x 4 x 4, 128 outputs x 3 MACs for its weight gradient)
    figures = step(nn.Sequential(nn.Conv2d(3, 4, 1, bias=False), layer), (meta(2, 3, 4, 4),))
    assert figures.backward_flops == 384 + flops
    assert figures.backward_uncounted_ops == ()


def test_ops_without_a_backward_rule_are_reported():
    figures = step(nn.Sequential(nn.Linear(4, 4), nn.GELU()), (meta(2, 4),))
    assert [(u.op, u.calls, u.layers) for u in figures.backward_uncounted_ops] == [("aten.gelu_backward", 1, ("1",))]
    assert [u.op for u in figures.forward_uncounted_ops] == ["aten.gelu"]
    assert figures.backward_flops == 4 * 4 * 2 + 8  # the linear layer's weight and bias gradients


def test_forward_rules_are_not_replaced():
    from burden.conventions import convnet_burden

    table = burden.get_convention("convnet-burden").flops
    assert table is convnet_burden.table
    assert table.lookup(aten.mm.default) is convnet_burden.mm
    assert table.lookup(aten.add.Tensor) is convnet_burden.residual_sum


def test_unknown_optimizer():
    with pytest.raises(InputSpecError, match="adamw"):
        step(mlp(), (meta(2, 4),), "lamb")


def test_nothing_to_train():
    with pytest.raises(InputSpecError, match="nothing to train"):
        step(mlp().requires_grad_(False), (meta(2, 4),))


# --- the user's model is left as it was ---------------------------------------------------------

@pytest.mark.parametrize("on_meta", [True, False])
def test_model_untouched_after_training_step(on_meta):
    model = prepare(Net())
    before = snapshot(model)
    x = meta(2, 3, 8, 8) if on_meta else torch.randn(2, 3, 8, 8)
    step(model, (x,), device=None if on_meta else "cpu")
    assert_same(before, snapshot(model))
    assert all(p.grad is None for p in model.parameters())


def test_model_untouched_after_failed_training_step():
    model = prepare(Net(fail=True))
    before = snapshot(model)
    with pytest.raises(burden.BurdenError, match="boom"):
        step(model, (meta(2, 3, 8, 8),))
    assert_same(before, snapshot(model))
    assert all(p.grad is None for p in model.parameters())
