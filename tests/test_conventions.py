"""Named conventions that agree exactly with the tools they name, and user-registered formulas."""

import copy

import pytest
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from torch import nn

import burden
from burden.errors import InputSpecError

SE_NETWORKS = ["se_resnet50", "se_resnet101", "se_resnet152", "se_resnext50_32x4d", "se_resnext101_32x4d",
               "senet154", "se_bn_inception"]


def flop_counter_total(model, x):
    from torch.utils.flop_counter import FlopCounterMode

    with FlopCounterMode(display=False) as counter, torch.no_grad():
        model.eval()(x)
    return counter.get_total_flops()


def fvcore_total(model, x):
    from fvcore.nn import FlopCountAnalysis

    real = copy.deepcopy(model).to_empty(device="cpu") if x.device.type == "meta" else model
    analysis = FlopCountAnalysis(real.eval(), (torch.zeros(x.shape),))
    return int(analysis.unsupported_ops_warnings(False).uncalled_modules_warnings(False).total())


@pytest.mark.parametrize("name", SE_NETWORKS)
def test_se_networks_equal_the_tools(name):
    with torch.device("meta"):
        model = burden.create_model(name)
    x = torch.zeros(1, 3, 224, 224, device="meta")
    assert burden.estimate(name, 224, convention="torch").flops == flop_counter_total(model, x)
    assert burden.estimate(name, 224, convention="fvcore").flops == fvcore_total(model, x)


@st.composite
def small_networks(draw):
    """A random conv / pool / activation stack with residual sums, then a linear head."""
    layers, c, size = [], draw(st.sampled_from([2, 4])), draw(st.integers(6, 12))
    spec = {"in": (c, size, size), "layers": layers}
    for _ in range(draw(st.integers(1, 4))):
        kind = draw(st.sampled_from(["conv", "conv", "pool", "act", "res"]))
        if kind == "conv":
            groups = draw(st.sampled_from([g for g in (1, 2) if c % g == 0]))
            cout = groups * draw(st.integers(1, 3))
            k = draw(st.sampled_from([1, 3]))
            layers.append(("conv", c, cout, k, groups, draw(st.booleans())))
            c = cout
        elif kind == "pool" and size >= 4:
            layers.append(("pool", draw(st.sampled_from(["max", "avg"]))))
            size //= 2
        elif kind == "act":
            layers.append(("act", draw(st.sampled_from(["relu", "sigmoid"]))))
        else:
            layers.append(("res", c))
    spec["out"] = (c, size)
    spec["head"] = (c, draw(st.integers(1, 5)), draw(st.booleans()))
    return spec


class Residual(nn.Module):
    def __init__(self, c):
        super().__init__()
        self.conv = nn.Conv2d(c, c, 3, padding=1, bias=False)

    def forward(self, x):
        return x + self.conv(x)


def build(spec):
    mods = []
    for layer in spec["layers"]:
        if layer[0] == "conv":
            _, cin, cout, k, groups, bias = layer
            mods.append(nn.Conv2d(cin, cout, k, padding=k // 2, groups=groups, bias=bias))
        elif layer[0] == "pool":
            mods.append(nn.MaxPool2d(2) if layer[1] == "max" else nn.AvgPool2d(2))
        elif layer[0] == "act":
            mods.append(nn.ReLU() if layer[1] == "relu" else nn.Sigmoid())
        else:
            mods.append(Residual(layer[1]))
    c, n, bias = spec["head"]
    mods += [nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(c, n, bias=bias)]
    return nn.Sequential(*mods)


def expected_macs(spec, batch):
    """Conv and linear multiply-adds, worked out from the spec's shapes (padding keeps sizes)."""
    c, size, _ = spec["in"]
    macs = 0
    for layer in spec["layers"]:
        if layer[0] == "conv":
            _, cin, cout, k, groups, _ = layer
            macs += batch * cout * size * size * (cin // groups) * k * k
            c = cout
        elif layer[0] == "pool":
            size //= 2
        elif layer[0] == "res":
            macs += batch * c * size * size * c * 9
    hc, n, _ = spec["head"]
    return macs + batch * n * hc


@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(spec=small_networks(), batch=st.integers(1, 3))
def test_random_networks_equal_the_tools_and_macs_by_hand(spec, batch):
    model = build(spec)
    size = spec["in"]
    x = torch.zeros(batch, *size)
    assert burden.estimate(model, size, batch_size=batch, convention="macs").flops == expected_macs(spec, batch)
    assert burden.estimate(model, size, batch_size=batch, convention="torch").flops == 2 * expected_macs(spec, batch)
    assert burden.estimate(model, size, batch_size=batch, convention="torch").flops == flop_counter_total(model, x)
    assert burden.estimate(model, size, batch_size=batch, convention="fvcore").flops == fvcore_total(model, x)


def test_fvcore_per_module_figures_are_fvcores():
    from fvcore.nn import FlopCountAnalysis

    model = nn.Sequential(nn.Conv2d(3, 4, 3), nn.ReLU(), nn.Sequential(nn.Conv2d(4, 2, 1), nn.BatchNorm2d(2)))
    e = burden.estimate(model, (3, 9, 9), convention="fvcore")
    by_module = FlopCountAnalysis(model.eval(), (torch.zeros(1, 3, 9, 9),)).by_module()
    for layer in e.layers:
        assert layer.flops == by_module[layer.name], layer.name


def test_every_output_names_its_convention():
    e = burden.estimate("se_resnet50", 64, convention="macs", memory="all-outputs")
    assert (e.convention, e.memory_convention) == ("macs", "all-outputs")
    assert e.to_dict()["convention"] == "macs" and e.to_dict()["memory_convention"] == "all-outputs"
    assert "macs (memory: all-outputs)" in e.summary()


def test_all_outputs_memory_counts_what_pytorch_allocates():
    # ReLU not in place allocates; max pooling also allocates its int64 indices.
    model = nn.Sequential(nn.Conv2d(1, 2, 1, bias=False), nn.ReLU(), nn.MaxPool2d(2))
    # conv 2x4x4 = 32 values, relu 32, pool 2x2x2 = 8 values + 8 int64 indices
    e = burden.estimate(model, (1, 4, 4), memory="all-outputs")
    assert e.feature_bytes == 32 * 4 + 32 * 4 + 8 * 4 + 8 * 8
    assert burden.estimate(model, (1, 4, 4)).feature_bytes == 32 * 4 + 8 * 4


def test_unknown_convention_suggests():
    with pytest.raises(InputSpecError, match="fvcore"):
        burden.estimate("se_resnet50", convention="fvcor")
    with pytest.raises(InputSpecError, match="all-outputs"):
        burden.estimate("se_resnet50", memory="all-output")


@torch.library.custom_op("burdentest::triple", mutates_args=())
def triple(x: torch.Tensor) -> torch.Tensor:
    return x * 3


@triple.register_fake
def _(x):
    return torch.empty_like(x)


class Triple(nn.Module):
    def forward(self, x):
        return triple(x)


def test_register_formula_for_a_custom_op():
    before = burden.estimate(Triple(), (2, 5))
    assert before.flops == 0 and [u.op for u in before.uncounted_ops] == ["burdentest.triple"]

    @burden.register_formula(torch.ops.burdentest.triple)
    def triple_flops(x, out_shape):
        return x[0] * x[1] * x[2]  # one multiply per element

    after = burden.estimate(Triple(), (2, 5), batch_size=3)
    assert after.flops == 3 * 2 * 5 and after.uncounted_ops == ()
    with pytest.raises(ValueError, match="already registered"):
        burden.register_formula(torch.ops.burdentest.triple)(triple_flops)


class Fancy(nn.Module):
    def __init__(self):
        super().__init__()
        self.inner = nn.Linear(4, 4)

    def forward(self, x):
        return torch.tanh(self.inner(x))


def test_register_formula_for_a_module_type():
    @burden.register_formula(Fancy, convention="macs")
    def fancy(module, x, out_shape):
        return 1000 * x[0]  # a made-up figure per sample that replaces everything inside

    shared = Fancy()
    model = nn.Sequential(shared, nn.Linear(4, 4, bias=False), shared)  # the same module called twice
    e = burden.estimate(model, (4,), batch_size=2, convention="macs")
    # Fancy twice at 2 x 1000 each; the plain linear 2 x 4 x 4 = 32
    assert e.flops == 2 * 2000 + 32
    assert e.layer("0").self_flops == 4000 and e.layer("0.inner").flops == 0
    with pytest.raises(ValueError, match="already registered"):
        burden.register_formula(Fancy, convention="macs")(fancy)


def test_register_formula_needs_a_known_convention():
    with pytest.raises(InputSpecError):
        burden.register_formula(torch.ops.aten.tanh, convention="nope")
