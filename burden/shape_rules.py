"""burden's own shape rules for the ops that make up most networks.

torch's meta kernels for these ops run in Python: 50-500 us a call, and the first call imports
``torch._dynamo`` and sympy, about half of a cold ``burden estimate``. In-place ops are never
remembered by ``meta_kernels`` (they write), so a ReLU network pays that cost on every ReLU.

A rule answers only the case it is sure of: inputs laid out plainly (contiguous, not taken for
channels-last), floating-point dtypes, shapes that fit. In every other case it returns None and
torch's own meta kernel runs, with torch's own error messages. ``tests/test_shape_rules.py`` and
``benches/zoo.py --check-rules`` compare every rule's outputs (shape, strides, dtype) with the
meta kernel's. The one deliberate difference is batch norm, whose rule returns what the CPU
kernels return (no saved statistics outside training), and is checked against those.
"""

from __future__ import annotations

from typing import Any, Callable, Sequence

import torch

from .op_groups import existing_ops

aten = torch.ops.aten
Rule = Callable[[tuple, dict], Any]


# --- what a rule may assume -----------------------------------------------------------------------

def _contiguous_strides(shape: Sequence[int]) -> tuple[int, ...]:
    strides, step = [], 1
    for size in reversed(shape):
        strides.append(step)
        step *= max(int(size), 1)
    return tuple(reversed(strides))


def _channels_last_like(shape: Sequence[int], stride: Sequence[int]) -> bool:
    """c10's ``is_channels_last_strides_2d/3d``: what ``suggest_memory_format`` reads."""
    order = {4: (1, 3, 2, 0), 5: (1, 4, 3, 2, 0)}.get(len(shape))
    if order is None or stride[1] == 0:
        return False
    low = 0
    for d in order:
        if shape[d] == 0 or stride[d] < low:
            return False
        if d == 0 and low == stride[1]:
            return False
        low = stride[d] * (shape[d] if shape[d] > 1 else 1)
    return True


def _plain(t: Any) -> bool:
    """A floating-point tensor that is contiguous (the strides of size-1 dimensions do not matter),
    not taken for channels-last, and not empty: the layout every rule below assumes."""
    return (isinstance(t, torch.Tensor) and t.is_floating_point() and t.numel() > 0
            and t.is_contiguous() and not _channels_last_like(t.shape, t.stride()))


def _new(t: torch.Tensor, shape: Sequence[int], dtype: torch.dtype | None = None) -> torch.Tensor:
    return torch.empty(tuple(shape), dtype=dtype or t.dtype, device="meta")


def _broadcast(*shapes: Sequence[int]) -> tuple[int, ...] | None:
    ndim = max(len(s) for s in shapes)
    out = [1] * ndim
    for shape in shapes:
        for i, size in enumerate(shape, ndim - len(shape)):
            if size != 1:
                if out[i] not in (1, size):
                    return None
                out[i] = size
    return tuple(out)


def _scalar(value: Any) -> bool:
    return type(value) in (int, float, bool)


# --- elementwise ------------------------------------------------------------------------------------

def _unary(args: tuple, kwargs: dict) -> Any:
    x = args[0]
    return _new(x, x.shape) if _plain(x) else None


def _inplace_unary(args: tuple, kwargs: dict) -> Any:
    x = args[0]
    return x if isinstance(x, torch.Tensor) and x.is_floating_point() else None


def _binary(args: tuple, kwargs: dict) -> Any:
    """Two operands (tensors or numbers) under broadcasting and type promotion."""
    a, b = args[0], args[1]
    tensors = [t for t in (a, b) if isinstance(t, torch.Tensor)]
    if not all(_plain(t) or (t.dim() == 0 and t.dtype.is_floating_point) for t in tensors):
        return None
    if not all(isinstance(v, torch.Tensor) or _scalar(v) for v in (a, b)) or tensors[0].dim() == 0:
        return None
    dtype = torch.result_type(a, b)
    if not dtype.is_floating_point:
        return None
    shape = _broadcast(*(t.shape for t in tensors))
    return None if shape is None else _new(tensors[0], shape, dtype)


def _inplace_binary(args: tuple, kwargs: dict) -> Any:
    x, other = args[0], args[1]
    if not isinstance(x, torch.Tensor) or x.is_complex():  # integer counters too (num_batches_tracked += 1)
        return None
    if isinstance(other, torch.Tensor):
        if _broadcast(x.shape, other.shape) != tuple(x.shape) or other.is_complex():
            return None
    elif not _scalar(other):
        return None
    return x if torch.can_cast(torch.result_type(x, other), x.dtype) else None


def _inplace_pointwise(args: tuple, kwargs: dict) -> Any:
    """addcmul_, addcdiv_, lerp_: tensors of self's dtype that broadcast to self, written in place."""
    x, tensors = args[0], [t for t in args[1:3] if isinstance(t, torch.Tensor)]
    if not isinstance(x, torch.Tensor) or not x.is_floating_point() or any(t.dtype != x.dtype for t in tensors):
        return None
    return x if _broadcast(x.shape, *(t.shape for t in tensors)) == tuple(x.shape) else None


def _addcmul(args: tuple, kwargs: dict) -> Any:
    tensors = args[:3]
    if not all(_plain(t) for t in tensors) or len({t.dtype for t in tensors}) != 1:
        return None
    shape = _broadcast(*(t.shape for t in tensors))
    return None if shape is None else _new(tensors[0], shape)


# --- reductions and products ---------------------------------------------------------------------------

def _reduce(args: tuple, kwargs: dict) -> Any:
    """mean / sum over listed dimensions, no dtype change."""
    x, dims = args[0], args[1] if len(args) > 1 else kwargs.get("dim")
    keepdim = args[2] if len(args) > 2 else kwargs.get("keepdim", False)
    if not _plain(x) or kwargs.get("dtype") is not None or len(args) > 3 or not dims or x.dim() == 0:
        return None
    if any(not -x.dim() <= d < x.dim() for d in dims):
        return None
    axes = {d % x.dim() for d in dims}
    if len(axes) != len(dims):
        return None
    shape = [1 if i in axes else s for i, s in enumerate(x.shape) if keepdim or i not in axes]
    return _new(x, shape)


def _matmul(a: Any, b: Any, batched: bool) -> tuple[int, ...] | None:
    """The product's shape; any operand layout (a linear layer's weight arrives transposed), because
    the product is always a new contiguous tensor."""
    dims = 3 if batched else 2
    if not all(isinstance(t, torch.Tensor) and t.is_floating_point() and t.dim() == dims for t in (a, b)):
        return None
    if a.dtype != b.dtype or a.numel() == 0 or b.numel() == 0:
        return None
    if a.shape[-1] != b.shape[-2] or (batched and a.shape[0] != b.shape[0]):
        return None
    return (*a.shape[:-1], b.shape[-1])


def _mm(args: tuple, kwargs: dict) -> Any:
    shape = _matmul(args[0], args[1], batched=False)
    return None if shape is None else _new(args[0], shape)


def _bmm(args: tuple, kwargs: dict) -> Any:
    shape = _matmul(args[0], args[1], batched=True)
    return None if shape is None else _new(args[0], shape)


def _addmm(args: tuple, kwargs: dict) -> Any:
    bias, shape = args[0], _matmul(args[1], args[2], batched=False)
    if shape is None or not isinstance(bias, torch.Tensor) or bias.dtype != args[1].dtype \
            or _broadcast(bias.shape, shape) != shape:
        return None
    return _new(args[1], shape)


def _cat(args: tuple, kwargs: dict) -> Any:
    tensors, dim = args[0], args[1] if len(args) > 1 else kwargs.get("dim", 0)
    if not tensors or not all(_plain(t) for t in tensors) or len({t.dtype for t in tensors}) != 1:
        return None
    first = tensors[0]
    if first.dim() == 0 or any(t.dim() != first.dim() for t in tensors):
        return None
    dim %= first.dim()
    if any(t.shape[:dim] != first.shape[:dim] or t.shape[dim + 1:] != first.shape[dim + 1:] for t in tensors):
        return None
    shape = list(first.shape)
    shape[dim] = sum(t.shape[dim] for t in tensors)
    return _new(first, shape)


def _like(args: tuple, kwargs: dict) -> Any:
    """empty_like, ones_like, zeros_like with the default (preserved) layout."""
    x = args[0]
    if not _plain(x) or len(args) > 1 or set(kwargs) - {"dtype", "layout", "device", "pin_memory", "memory_format"}:
        return None
    if kwargs.get("memory_format") not in (None, torch.preserve_format, torch.contiguous_format):
        return None
    if kwargs.get("layout") not in (None, torch.strided) or kwargs.get("device") not in (None, torch.device("meta")):
        return None
    return _new(x, x.shape, kwargs.get("dtype") or x.dtype)


# --- convolution and pooling -------------------------------------------------------------------------

def _window(size: int, kernel: int, pad: int, stride: int, dilation: int, ceil: bool) -> int | None:
    """Output length of a sliding window (ATen's pooling_output_shape), None where torch refuses."""
    if stride <= 0 or pad < 0 or pad > ((kernel - 1) * dilation + 1) // 2:
        return None
    out = (size + 2 * pad - dilation * (kernel - 1) - 1 + (stride - 1 if ceil else 0)) // stride + 1
    if ceil and (out - 1) * stride >= size + pad:
        out -= 1
    return out if out > 0 else None


def _convolution(args: tuple, kwargs: dict) -> Any:
    x, w, bias, stride, padding, dilation, transposed, _, groups = args
    spatial = x.dim() - 2 if isinstance(x, torch.Tensor) else -1
    if transposed or spatial not in (1, 2, 3) or not (_plain(x) and _plain(w)) or w.dim() != x.dim():
        return None
    if x.dtype != w.dtype or (bias is not None and (not _plain(bias) or tuple(bias.shape) != (w.shape[0],))):
        return None
    if x.shape[1] != w.shape[1] * groups or w.shape[0] % groups or not (len(stride) == len(padding) ==
                                                                         len(dilation) == spatial):
        return None
    out = []
    for size, k, s, p, d in zip(x.shape[2:], w.shape[2:], stride, padding, dilation):
        n = (size + 2 * p - d * (k - 1) - 1) // s + 1 if s > 0 and p >= 0 and d > 0 else 0
        if n <= 0:
            return None
        out.append(n)
    return _new(x, (x.shape[0], w.shape[0], *out))


def _convolution_backward(args: tuple, kwargs: dict) -> Any:
    grad, x, w, bias_sizes = args[:4]
    mask = args[10]
    if not (_plain(grad) and _plain(x) and _plain(w)) or args[7] or grad.dtype != x.dtype:
        return None
    return (_new(grad, x.shape) if mask[0] else None, _new(grad, w.shape) if mask[1] else None,
            _new(grad, bias_sizes) if mask[2] and bias_sizes is not None else None)


def _pair(value: Sequence[int], default: Sequence[int] | None = None) -> tuple[int, int] | None:
    value = list(value) if value else list(default or [])
    if len(value) == 1:
        value = value * 2
    return (int(value[0]), int(value[1])) if len(value) == 2 else None


def _pooled(x: Any, kernel: Any, stride: Any, padding: Any, dilation: Any, ceil: bool) -> tuple[int, ...] | None:
    if not _plain(x) or x.dim() != 4:
        return None
    k, s, p, d = _pair(kernel), _pair(stride, kernel), _pair(padding), _pair(dilation)
    if None in (k, s, p, d):
        return None
    sizes = [_window(x.shape[2 + i], k[i], p[i], s[i], d[i], ceil) for i in range(2)]
    return None if None in sizes else (x.shape[0], x.shape[1], *sizes)


def _max_pool2d(args: tuple, kwargs: dict) -> Any:
    if kwargs:
        return None
    x, kernel = args[0], args[1]
    stride, padding, dilation, ceil = (list(args[2:]) + [[], [0], [1], False][len(args) - 2:])[:4]
    shape = _pooled(x, kernel, stride, padding, dilation, bool(ceil))
    return None if shape is None else (_new(x, shape), _new(x, shape, torch.int64))


def _avg_pool2d(args: tuple, kwargs: dict) -> Any:
    if kwargs:
        return None
    x, kernel = args[0], args[1]
    stride, padding, ceil = (list(args[2:5]) + [[], [0], False][len(args[2:5]):])[:3]
    shape = _pooled(x, kernel, stride, padding, [1], bool(ceil))
    return None if shape is None else _new(x, shape)


def _input_gradient(args: tuple, kwargs: dict) -> Any:
    """Backward of a pooling: a gradient of the input's shape (grad_output, input, ...)."""
    grad, x = args[0], args[1]
    return _new(x, x.shape) if _plain(grad) and _plain(x) and grad.dtype == x.dtype else None


# --- batch norm: the CPU kernels' outputs ---------------------------------------------------------------

def _batch_norm(args: tuple, training: bool) -> Any:
    """Batch norm's outputs as the CPU kernels return them: statistics are saved only when
    training (the meta kernel always makes them)."""
    x = args[0]
    if not isinstance(x, torch.Tensor) or x.dim() < 2 or not x.is_floating_point():
        return None
    channels = x.shape[1]
    if any(isinstance(t, torch.Tensor) and t.numel() != channels for t in args[1:5]):
        return None
    stats_dtype = torch.float32 if x.dtype in (torch.float16, torch.bfloat16) else x.dtype
    stats = (channels,) if training else (0,)
    if _plain(x):
        out = _new(x, x.shape)
    elif x.dim() == 4 and x.is_contiguous(memory_format=torch.channels_last):
        out = torch.empty_strided(x.shape, x.stride(), dtype=x.dtype, device="meta")
    else:
        out = torch.empty_like(x)  # a Python kernel, but the layout is torch's to decide
    return out, _new(x, stats, stats_dtype), _new(x, stats, stats_dtype)


def _batch_norm_backward(args: tuple, kwargs: dict) -> Any:
    grad, x, weight, mask = args[0], args[1], args[2], args[9]
    if not (_plain(grad) and _plain(x)) or grad.dtype != x.dtype or (weight is None and (mask[1] or mask[2])):
        return None
    return (_new(x, x.shape) if mask[0] else None, _new(weight, weight.shape) if mask[1] else None,
            _new(weight, weight.shape) if mask[2] else None)


# what a rule answers for an op that returns nothing (None is "no rule here")
RETURNS_NOTHING = object()


def _grouped_mm(args: tuple, kwargs: dict) -> Any:
    """Products of groups (a mixture of experts): 2-D by 3-D rows per group, 3-D by 3-D batched,
    2-D by 2-D a product per group, 3-D by 2-D columns per group. PyTorch's meta kernel takes only
    bfloat16 where its CPU kernel also takes float32: the shape is the same in every dtype."""
    a, b = args[0], args[1]
    out_dtype = kwargs.get("out_dtype", args[4] if len(args) > 4 else None) or a.dtype
    offs = kwargs.get("offs", args[2] if len(args) > 2 else None)
    if not (isinstance(a, torch.Tensor) and isinstance(b, torch.Tensor)) or a.dtype != b.dtype:
        return None
    if a.dim() == 2 and b.dim() == 3 and a.shape[1] == b.shape[1]:
        shape = (a.shape[0], b.shape[2])
    elif a.dim() == 3 and b.dim() == 3 and a.shape[0] == b.shape[0] and a.shape[2] == b.shape[1]:
        shape = (a.shape[0], a.shape[1], b.shape[2])
    elif a.dim() == 2 and b.dim() == 2 and offs is not None and a.shape[1] == b.shape[0]:
        shape = (offs.shape[0], a.shape[0], b.shape[1])
    elif a.dim() == 3 and b.dim() == 2 and a.shape[2] == b.shape[0]:
        shape = (a.shape[1], b.shape[1])
    else:
        return None
    return torch.empty(shape, dtype=out_dtype, device="meta")


def _tensor_list(value: Any) -> bool:
    return isinstance(value, (list, tuple)) and bool(value) and all(isinstance(t, torch.Tensor) for t in value)


def _foreach_in_place(args: tuple, kwargs: dict) -> Any:
    """An in-place foreach op of an optimizer's step (``_foreach_lerp_``, ``_foreach_addcmul_``, ...):
    each tensor of the first list written in place, every other tensor list of the same shapes and
    dtypes, a tensor operand a single value; it returns nothing. Else declined (its meta kernel, in
    Python, checks broadcasting and type promotion)."""
    first = args[0] if args else None
    if not _tensor_list(first):
        return None
    for other in (*args[1:], *kwargs.values()):
        if _tensor_list(other):
            if len(other) != len(first) or any(o.shape != f.shape or o.dtype != f.dtype for o, f in zip(other, first)):
                return None
        elif isinstance(other, torch.Tensor) and other.numel() != 1:
            return None
    return RETURNS_NOTHING


def _foreach_unary(args: tuple, kwargs: dict) -> Any:
    """An out-of-place unary foreach op (``_foreach_sqrt``): a new tensor like each input."""
    first = args[0] if args else None
    if not _tensor_list(first) or kwargs or not all(t.is_floating_point() for t in first):
        return None
    return [torch.empty_like(t) for t in first]


def _in_place_only(args: tuple, kwargs: dict) -> Any:
    """A fused optimizer step: it writes its tensor lists in place and returns nothing."""
    return RETURNS_NOTHING


def _table() -> dict[Any, Rule]:
    rules: dict[Any, Rule] = {}

    def add(rule: Rule, *names: str) -> None:
        for op in existing_ops(*names):
            rules[op] = rule

    add(_unary, "relu.default", "sigmoid.default", "tanh.default", "gelu.default", "silu.default",
        "hardswish.default", "hardsigmoid.default", "hardtanh.default", "leaky_relu.default", "exp.default",
        "neg.default", "sqrt.default", "rsqrt.default")
    add(_inplace_unary, "relu_.default", "sigmoid_.default", "tanh_.default", "silu_.default",
        "hardswish_.default", "hardsigmoid_.default", "hardtanh_.default", "leaky_relu_.default",
        "bernoulli_.float", "zero_.default")
    add(_binary, "add.Tensor", "sub.Tensor", "mul.Tensor", "div.Tensor", "add.Scalar", "sub.Scalar",
        "mul.Scalar", "div.Scalar", "threshold_backward.default", "sigmoid_backward.default",
        "tanh_backward.default")
    add(_inplace_binary, "add_.Tensor", "sub_.Tensor", "mul_.Tensor", "div_.Tensor", "add_.Scalar",
        "sub_.Scalar", "mul_.Scalar", "div_.Scalar")
    add(_addcmul, "addcmul.default")
    add(_inplace_pointwise, "addcmul_.default", "addcdiv_.default", "lerp_.Scalar", "lerp_.Tensor")
    add(_reduce, "mean.dim", "sum.dim_IntList")
    add(_mm, "mm.default")
    add(_bmm, "bmm.default")
    add(_addmm, "addmm.default")
    add(_cat, "cat.default")
    add(_like, "empty_like.default", "ones_like.default", "zeros_like.default")
    add(_convolution, "convolution.default")
    add(_convolution_backward, "convolution_backward.default")
    add(_max_pool2d, "max_pool2d_with_indices.default")
    add(_avg_pool2d, "avg_pool2d.default")
    add(_input_gradient, "max_pool2d_with_indices_backward.default", "avg_pool2d_backward.default")
    add(lambda a, k: _batch_norm(a, False), "_native_batch_norm_legit_no_training.default")
    add(lambda a, k: _batch_norm(a, bool(a[5])), "native_batch_norm.default", "_native_batch_norm_legit.default")
    add(_batch_norm_backward, "native_batch_norm_backward.default")
    add(_in_place_only, *NO_META_KERNEL_NAMES)
    add(_foreach_in_place, *(f"_foreach_{name}_.{overload}" for name in ("add", "sub", "mul", "div")
                             for overload in ("Scalar", "List", "ScalarList", "Tensor")),
        "_foreach_lerp_.Scalar", "_foreach_lerp_.List", "_foreach_addcmul_.Scalar", "_foreach_addcmul_.ScalarList",
        "_foreach_addcdiv_.Scalar", "_foreach_addcdiv_.ScalarList", "_foreach_sqrt_.default", "_foreach_neg_.default",
        "_foreach_zero_.default")
    add(_foreach_unary, "_foreach_sqrt.default", "_foreach_neg.default", "_foreach_abs.default")
    add(_grouped_mm, "_grouped_mm.default")
    return rules


# Ops PyTorch has no meta kernel for, where burden's rule is all there is: the fused SGD and Adagrad
# steps (the fused Adam and AdamW steps have one). Each writes its lists in place and allocates nothing.
NO_META_KERNEL_NAMES = ("_fused_sgd_.default", "_fused_sgd_.tensor_lr", "_fused_adagrad_.default",
                        "_fused_adagrad_.tensor_lr")
RULES: dict[Any, Rule] = _table()
NO_META_KERNEL = frozenset(existing_ops(*NO_META_KERNEL_NAMES))
# rules that follow the CPU kernels rather than the meta kernels (checked against the CPU)
CPU_RULES = frozenset(existing_ops("_native_batch_norm_legit_no_training.default", "native_batch_norm.default",
                                   "_native_batch_norm_legit.default"))


def shape_rule(func: Any, args: tuple, kwargs: dict) -> Any:
    """The op's outputs by burden's own rule (``RETURNS_NOTHING`` for an op that returns nothing), or
    None where no rule is sure (run the meta kernel)."""
    rule = RULES.get(func)
    return None if rule is None else rule(args, kwargs)
