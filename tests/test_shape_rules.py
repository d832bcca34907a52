"""burden's own shape rules against torch's meta kernels: same shapes, strides and dtypes.

The oracle is torch's own kernel for each case (the meta kernel; for batch norm, which follows
the CPU, the CPU kernel on real tensors). A rule may decline a case (None): then the meta kernel
runs, so only an answer can be wrong, and the test checks that the rules do answer the common
cases rather than declining everything.
"""

from __future__ import annotations

import pytest
import torch
from torch import nn

import burden
from burden import meta_kernels
from burden.containers import map_tensors
from burden.shape_rules import CPU_RULES, NO_META_KERNEL, RETURNS_NOTHING, RULES, shape_rule

aten = torch.ops.aten
CL = torch.channels_last


def t(*shape, dtype=torch.float32, fmt=None, transpose=False, expand=None):
    x = torch.randn(*shape).to(dtype) if dtype.is_floating_point else torch.randint(0, 3, shape, dtype=dtype)
    if fmt is not None:
        x = x.contiguous(memory_format=fmt)
    if transpose:
        x = x.t()
    if expand is not None:
        x = x.expand(*expand)
    return x


def _layout(out):
    return map_tensors(lambda x: (tuple(x.shape), x.stride(), x.dtype), out)


def _meta(value):
    return map_tensors(lambda x: torch.empty_strided(x.shape, x.stride(), dtype=x.dtype, device="meta"), value)


x4 = t(2, 8, 9, 9)
w4 = t(16, 8, 3, 3)
CASES = [
    # elementwise
    (aten.relu.default, (x4,)), (aten.sigmoid.default, (t(3, 5),)), (aten.gelu.default, (t(4, 6),)),
    (aten.hardtanh.default, (t(2, 3), -1.0, 1.0)), (aten.relu.default, (t(2, 8, 9, 9, fmt=CL),)),
    (aten.relu.default, (t(2, 3, dtype=torch.int64),)), (aten.sigmoid.default, (t(3, 4, transpose=True),)),
    (aten.relu_.default, (t(2, 3),)), (aten.relu_.default, (t(2, 8, 5, 5, fmt=CL),)),
    (aten.sigmoid_.default, (t(2, 3, dtype=torch.int64),)), (aten.bernoulli_.float, (t(4, 4), 0.5)),
    (aten.add.Tensor, (x4, t(2, 8, 9, 9))), (aten.mul.Tensor, (x4, t(2, 8, 1, 1))),
    (aten.mul.Tensor, (t(2, 8, 1, 1), x4)), (aten.add.Tensor, (t(8, 1, 1), x4)),
    (aten.mul.Tensor, (x4, t(2, 8, 1, 1, fmt=CL))), (aten.mul.Tensor, (t(2, 8, 9, 9, fmt=CL), t(2, 8, 1, 1))),
    (aten.add.Tensor, (x4, torch.tensor(2.0, dtype=torch.float64))), (aten.mul.Tensor, (t(3, 4), 2)),
    (aten.add.Tensor, (t(3, 4, dtype=torch.float16), t(3, 4))), (aten.div.Tensor, (t(3, 4, dtype=torch.int64), 2)),
    (aten.add.Tensor, (t(3, 4), t(5, 4))), (aten.div.Scalar, (t(2, 8, 1, 1), 49)),
    (aten.div.Scalar, (t(2, 8, 1, 1, expand=(2, 8, 7, 7)), 49)), (aten.mul.Scalar, (t(1, 352, 7, 7), 0.5)),
    (aten.threshold_backward.default, (t(2, 8, 9, 9), x4, 0)),
    (aten.sigmoid_backward.default, (t(2, 8, 1, 1), t(2, 8, 1, 1))),
    (aten.threshold_backward.default, (x4[:1], t(4, 8, 9, 9)[1:2], 0)),  # size-1 dims with odd strides
    (aten.add_.Tensor, (t(2, 8, 9, 9), x4)), (aten.add_.Tensor, (t(2, 8, 9, 9), t(8, 1, 1))),
    (aten.add_.Tensor, (torch.tensor(3), 1)), (aten.add_.Tensor, (t(2, 3, dtype=torch.int64), t(2, 3))),
    (aten.mul_.Tensor, (t(2, 3), t(4, 2, 3))), (aten.div_.Scalar, (t(2, 3), 3)),
    (aten.addcmul.default, (t(2, 8, 9, 9), t(2, 8, 1, 1), x4)),
    # reductions and products
    (aten.mean.dim, (x4, [2, 3], True)), (aten.mean.dim, (x4, [-1, -2])), (aten.sum.dim_IntList, (x4, [0])),
    (aten.mean.dim, (t(2, 8, 9, 9, fmt=CL), [2, 3], True)), (aten.sum.dim_IntList, (t(3, 4, dtype=torch.int64), [1])),
    (aten.mm.default, (t(5, 7), t(7, 3))), (aten.mm.default, (t(5, 7), t(3, 7, transpose=True))),
    (aten.mm.default, (t(1000, 1), t(1, 2048))), (aten.bmm.default, (t(2, 5, 7), t(2, 7, 3))),
    (aten.addmm.default, (t(3), t(5, 7), t(3, 7, transpose=True))), (aten.addmm.default, (t(5, 3), t(5, 7), t(7, 3))),
    (aten.cat.default, ([x4, t(2, 4, 9, 9)], 1)), (aten.cat.default, ([t(3, 4), t(2, 4)],)),
    (aten.cat.default, ([t(2, 8, 9, 9, fmt=CL), t(2, 8, 9, 9, fmt=CL)], 1)),
    (aten.ones_like.default, (x4,)), (aten.empty_like.default, (t(2, 8, 5, 5, fmt=CL),)),
    (aten.zeros_like.default, (t(3, 4),)),
    # convolution and pooling
    (aten.convolution.default, (x4, w4, t(16), [1, 1], [1, 1], [1, 1], False, [0, 0], 1)),
    (aten.convolution.default, (x4, t(16, 2, 3, 3), None, [2, 2], [0, 0], [2, 2], False, [0, 0], 4)),
    (aten.convolution.default, (t(1, 64, 1, 1), t(4, 64, 1, 1), t(4), [1, 1], [0, 0], [1, 1], False, [0, 0], 1)),
    (aten.convolution.default, (t(2, 8, 9, 9, fmt=CL), w4, None, [1, 1], [1, 1], [1, 1], False, [0, 0], 1)),
    (aten.convolution.default, (t(2, 3, 17), t(6, 3, 5), None, [2], [2], [1], False, [0], 1)),
    (aten.convolution.default, (t(1, 2, 5, 6, 7), t(4, 2, 3, 3, 3), None, [1, 2, 1], [1, 0, 1], [1, 1, 1], False,
                                [0, 0, 0], 1)),
    (aten.convolution_backward.default, (t(2, 16, 9, 9), x4, w4, [16], [1, 1], [1, 1], [1, 1], False, [0, 0], 1,
                                         [True, True, True])),
    (aten.convolution_backward.default, (t(2, 16, 9, 9), x4, w4, None, [1, 1], [1, 1], [1, 1], False, [0, 0], 1,
                                         [False, True, False])),
    (aten.max_pool2d_with_indices.default, (t(1, 4, 112, 112), [3, 3], [2, 2], [1, 1])),
    (aten.max_pool2d_with_indices.default, (t(1, 4, 14, 14), [3, 3], [2, 2], [0, 0], [1, 1], True)),
    (aten.max_pool2d_with_indices.default, (t(1, 4, 13, 13), [3], [2])),
    (aten.max_pool2d_with_indices.default, (t(1, 4, 8, 8, fmt=CL), [2, 2], [2, 2])),
    (aten.avg_pool2d.default, (t(2, 4, 7, 7), [7, 7], [1, 1])),
    (aten.avg_pool2d.default, (t(2, 4, 15, 15), [3, 3], [2, 2], [1, 1], True, False)),
    (aten.max_pool2d_with_indices_backward.default, (t(1, 4, 7, 7), t(1, 4, 14, 14), [3, 3], [2, 2], [0, 0], [1, 1],
                                                     True, t(1, 4, 7, 7).long())),
    (aten.avg_pool2d_backward.default, (t(2, 4, 1, 1), t(2, 4, 7, 7), [7, 7], [1, 1], [0, 0], False, True, None)),
    # batch norm backward (the forward follows the CPU: below)
    (aten.native_batch_norm_backward.default, (x4, t(2, 8, 9, 9), t(8), t(8), t(8), t(8), t(8), True, 1e-5,
                                               [True, True, True])),
    (aten.native_batch_norm_backward.default, (x4, t(2, 8, 9, 9), None, None, None, t(8), t(8), True, 1e-5,
                                               [True, False, False])),
    (aten.empty_like.default, (x4,)), (aten.div.Tensor, (t(3, 4), t(3, 4))), (aten.div_.Tensor, (t(2, 3), t(3))),
    (aten.mul_.Tensor, (t(2, 3), t(2, 3))), (aten.sub.Tensor, (t(2, 3), t(3))), (aten.add.Scalar, (t(2, 3), 1)),
    (aten.sub.Scalar, (t(2, 3), 1.5)), (aten.tanh_backward.default, (t(2, 3), t(2, 3))),
    (aten.sub_.Tensor, (t(2, 3), t(2, 3))), (aten.add_.Scalar, (t(2, 3), 2)), (aten.sub_.Scalar, (t(2, 3), 2)),
    (aten.mul_.Scalar, (t(2, 3), 2)), (aten.leaky_relu.default, (t(2, 3), 0.1)),
    (aten.leaky_relu_.default, (t(2, 3), 0.1)), (aten.hardtanh_.default, (t(2, 3), 0.0, 6.0)),
]
BF16 = torch.bfloat16
CASES += [  # _grouped_mm's meta kernel takes bfloat16 only: its rule is checked there (torch >= 2.8 has the op)
    (aten._grouped_mm.default, (t(128, 256, dtype=BF16), t(4, 256, 64, dtype=BF16), t(4, dtype=torch.int32))),
    (aten._grouped_mm.default, (t(4, 32, 256, dtype=BF16), t(4, 256, 64, dtype=BF16))),
] if hasattr(torch.ops.aten, "_grouped_mm") else []
CASES += [
    (aten.addcmul_.default, (t(2, 3), t(2, 3), t(3))), (aten.addcdiv_.default, (t(2, 3), t(2, 3), t(2, 3))),
    (aten.lerp_.Scalar, (t(2, 3), t(2, 3), 0.1)), (aten.lerp_.Tensor, (t(2, 3), t(2, 3), t(2, 3))),
    (aten.addcmul_.default, (t(3), t(2, 3), t(2, 3))),  # would broadcast self: the meta kernel's error
]
# the foreach ops of torch.optim's multi-tensor steps: lists of parameters, gradients and states
PARAMS = [t(3, 4), t(5)]
CASES += [
    (aten._foreach_lerp_.Scalar, (PARAMS, [t(3, 4), t(5)], 0.1)),
    (aten._foreach_mul_.Scalar, (PARAMS, 0.9)),
    (aten._foreach_mul_.Tensor, (PARAMS, t(1).reshape(()))),
    (aten._foreach_add_.List, (PARAMS, [t(3, 4), t(5)])),
    (aten._foreach_add_.Scalar, (PARAMS, 1.0)),
    (aten._foreach_addcmul_.Scalar, (PARAMS, [t(3, 4), t(5)], [t(3, 4), t(5)], 0.5)),
    (aten._foreach_addcdiv_.ScalarList, (PARAMS, [t(3, 4), t(5)], [t(3, 4), t(5)], [0.1, 0.2])),
    (aten._foreach_div_.ScalarList, (PARAMS, [2.0, 3.0])),
    (aten._foreach_sqrt.default, (PARAMS,)),
    (aten._foreach_sqrt.default, ([t(4, 3, transpose=True)],)),  # a transposed parameter keeps its strides
    (aten._foreach_add_.List, (PARAMS, [t(1, 4), t(5)])),  # would broadcast: declined
    (aten._foreach_addcmul_.Scalar, (PARAMS, [t(3, 4), t(5)], [t(4), t(5)], 0.5)),  # would broadcast: declined
    (aten._foreach_add_.List, (PARAMS, [t(3, 4, dtype=torch.float16), t(5)])),  # another dtype: declined
]


def _foreach_case(op):
    """Arguments for every other foreach overload with a rule, by the overload's kind."""
    name, overload = op._schema.name.removeprefix("aten::"), op._overloadname
    same = [t(3, 4), t(5)]
    last = {"Scalar": 0.5, "List": same, "ScalarList": [0.5, 0.25], "Tensor": t(1).reshape(())}.get(overload)
    if name in ("_foreach_lerp_",):
        return (PARAMS, same, last)
    if name in ("_foreach_addcmul_", "_foreach_addcdiv_"):
        return (PARAMS, same, [t(3, 4), t(5)], last)
    return (PARAMS,) if overload == "default" else (PARAMS, last)


CASES += [(op, _foreach_case(op)) for op in RULES if "_foreach_" in str(op) and op not in {c[0] for c in CASES}]
CASES += [(getattr(aten, name).default, (t(2, 3, 4),)) for name in (
    "sigmoid_", "tanh_", "silu_", "hardswish_", "hardsigmoid_", "zero_", "tanh", "silu", "hardswish", "hardsigmoid",
    "exp", "neg", "sqrt", "rsqrt")]


@pytest.mark.parametrize("func,args", CASES, ids=[f"{i}-{c[0]}" for i, c in enumerate(CASES)])
def test_a_rule_gives_what_the_meta_kernel_gives(func, args):
    assert func in RULES and func not in CPU_RULES
    meta_args = _meta(args)
    answer = shape_rule(func, meta_args, {})
    if answer is None:
        return  # declined: the meta kernel runs
    expected = func(*_meta(args))
    if answer is RETURNS_NOTHING:
        assert expected is None  # written in place, nothing returned
    else:
        assert _layout(answer) == _layout(expected)


def test_the_rules_answer_the_common_cases():
    answered = {func for func, args in CASES if shape_rule(func, _meta(args), {}) is not None}
    assert answered == {func for func in RULES if func not in CPU_RULES | NO_META_KERNEL}  # every rule, checked above
    declined = [(func, args) for func, args in CASES if shape_rule(func, _meta(args), {}) is None]
    assert len(declined) >= 10  # channels-last, integer and expanded cases go to the meta kernel


@pytest.mark.parametrize("training", [False, True])
@pytest.mark.parametrize("fmt", [None, CL])
def test_batch_norm_gives_what_the_cpu_gives(training, fmt):
    x, stats = t(2, 8, 5, 5, fmt=fmt), [t(8), t(8), t(8).abs(), t(8).abs()]
    for func, args in ((aten._native_batch_norm_legit_no_training.default, (x, *stats, 0.1, 1e-5)),
                       (aten._native_batch_norm_legit.default, (x, *stats, training, 0.1, 1e-5)),
                       (aten.native_batch_norm.default, (x, *stats, training, 0.1, 1e-5))):
        if func == aten._native_batch_norm_legit_no_training.default and training:
            continue
        assert func in CPU_RULES
        cpu = func(*[a.clone() if isinstance(a, torch.Tensor) else a for a in args])
        assert _layout(shape_rule(func, _meta(args), {})) == _layout(cpu)


@pytest.mark.parametrize("name", ["se_resnet50", "se_bn_inception"])
def test_models_count_the_same_without_the_rules(name, monkeypatch):
    """Every figure, both modes, with the rules and with torch's meta kernels alone (batch norm
    keeps its CPU rule, which the meta kernel does not follow)."""
    def run():
        meta_kernels.META_KERNELS.clear()
        return [burden.estimate(name, 160, memory=memory, mode=mode).to_dict()
                for memory in ("convnet-burden", "all-outputs") for mode in ("inference", "training")]

    with_rules = run()
    monkeypatch.setattr(meta_kernels, "shape_rule", lambda f, a, k: shape_rule(f, a, k) if f in CPU_RULES else None)
    try:
        assert run() == with_rules
    finally:
        meta_kernels.META_KERNELS.clear()


@pytest.mark.parametrize("name, optimizer", [
    ("momentum", lambda ps: torch.optim.SGD(ps, lr=0.1, momentum=0.9, fused=True)),
    ("adagrad", lambda ps: torch.optim.Adagrad(ps, fused=True))])
def test_fused_steps_without_a_meta_kernel_allocate_nothing(name, optimizer):
    """``_fused_sgd_`` and ``_fused_adagrad_`` have no meta kernel: burden's rule says they write in place.
    The CPU allocator runs the real fused step: nothing above the gradients while it runs."""
    from allocator_oracle import measure_step

    assert {f.overloadpacket for f in NO_META_KERNEL} == {aten._fused_sgd_, aten._fused_adagrad_}
    torch.manual_seed(0)
    measured = measure_step(nn.Linear(1000, 1000), (torch.randn(4, 1000),), optimizer=optimizer)
    step = measured.phase("optimizer")
    assert step.peak == step.start  # the fused kernel allocates nothing
    e = burden.estimate(nn.Linear(1000, 1000), inputs=(torch.Size([4, 1000]),), mode="training", device="meta",
                        optimizer=name, optimizer_impl="fused")
    assert e.training.optimizer_step_peak_bytes == step.peak
