"""Formula tables: per-call formulas (``formulas=``), replacing a registration, and scoping."""

from __future__ import annotations

import pytest
import torch
from torch import nn

import burden
from burden.errors import InputSpecError

aten = torch.ops.aten


def gelu_flops(x, *args, out_shape, **kwargs):
    return 8 * x.numel()


def net():
    return nn.Sequential(nn.Linear(4, 6), nn.GELU())


def test_per_call_formulas_count_for_that_call_only():
    # convnet-burden: the linear layer is 2 x 6 x 4 multiply-adds plus 2 x 6 bias adds = 60;
    # GELU has no rule: uncounted
    plain = burden.estimate(net(), (4,), batch_size=2)
    assert plain.flops == 60 and [u.op for u in plain.uncounted_ops] == ["aten.gelu"]
    # with a formula for this call: 8 per element of the 2 x 6 input to GELU
    added = burden.estimate(net(), (4,), batch_size=2, formulas={aten.gelu: gelu_flops})
    assert added.flops == 60 + 8 * 12 and added.uncounted_ops == ()
    # and the convention itself is unchanged afterwards
    assert burden.estimate(net(), (4,), batch_size=2) == plain


def test_per_call_formulas_take_precedence_over_the_conventions():
    def cheap_addmm(*args, out_shape, **kwargs):
        return 1

    e = burden.estimate(nn.Linear(4, 6), (4,), formulas={aten.addmm: cheap_addmm})
    assert e.flops == 1


def test_a_per_call_module_formula_replaces_the_ops_inside():
    e = burden.estimate(net(), (4,), formulas={nn.Linear: lambda module, x, out_shape: 1000})
    assert e.flops == 1000 and e.layer("0").flops == 1000


def test_per_call_formulas_apply_to_compare_and_training():
    c = burden.compare([net()], (4,), formulas={aten.gelu: gelu_flops})
    assert c.estimates[0].flops == 24 + 6 + 8 * 6
    t = burden.estimate(net(), (4,), mode="training", formulas={nn.Linear: lambda m, x, out_shape: 1000})
    assert t.training.forward_flops == 1000


def test_per_call_formulas_need_a_formula_table():
    with pytest.raises(InputSpecError, match="fvcore"):
        burden.estimate(net(), (4,), convention="fvcore", formulas={aten.gelu: gelu_flops})


def test_replace_lets_a_notebook_cell_run_again(formula_scope):
    table = burden.get_convention("macs").flops

    @formula_scope(aten.gelu, convention="macs")
    def first(x, *args, out_shape, **kwargs):
        return 1

    with pytest.raises(ValueError, match="already registered"):
        burden.register_formula(aten.gelu, convention="macs")(first)

    @burden.register_formula(aten.gelu, convention="macs", replace=True)
    def second(x, *args, out_shape, **kwargs):
        return 2

    assert table.lookup(aten.gelu.default) is second
    assert burden.estimate(net(), (4,), convention="macs").flops == 24 + 2


def test_the_scope_fixture_removes_its_registrations():
    assert burden.get_convention("macs").flops.lookup(aten.gelu.default)(None, out_shape=None) == 0  # default zero
