"""Backward-pass FLOP rules for the convnet-burden convention, and the convention itself.

The reference tool counts inference only; these rules extend it to the ops autograd runs in
backward, with the same unit (a fused multiply-add is one FLOP) and the forward rules as the
yardstick: a gradient that is a convolution or a matrix product costs what the forward one
did. ``mm``, ``bmm``, ``addmm``, ``add`` and ``mul`` already have forward rules, which apply
unchanged to the backward calls. Ops that only move data (slices, views, zero-filled
gradients) cost nothing; anything else stays uncounted and is reported as such.

The rules live in a table of their own that falls back to the forward table, so counting a
forward pass never depends on whether backward rules were loaded.
"""

from __future__ import annotations

import torch

from .. import rulebook
from ..formulas import FormulaTable, prod
from .base import Convention
from .convnet_burden import table as forward_table

aten = torch.ops.aten
table = FormulaTable("convnet-burden backward", base=forward_table)


@table.register(aten.convolution_backward, strict=False)
def convolution_backward(grad_out, x, w, bias_sizes, stride, padding, dilation, transposed, output_padding,
                         groups, output_mask, *, out_shape, **kwargs) -> int:
    # the forward rule's MACs: [C_out, C_in/groups, kh, kw] per output element (input element if transposed)
    macs = prod(w[1:]) * (prod(x) if transposed else prod(grad_out))
    grad_input, grad_weight, grad_bias = output_mask
    return macs * grad_input + macs * grad_weight + prod(grad_out) * grad_bias


@table.register(aten.threshold_backward, aten.hardtanh_backward, aten.leaky_relu_backward, strict=False)
def relu_backward(grad_out, *rest, out_shape, **kwargs) -> int:
    return 2 * prod(grad_out)  # compare and multiply, as the forward ReLU


def _norm_backward(elements: int, output_mask, batch_statistics: bool) -> int:
    grad_input, grad_weight, grad_bias = output_mask
    with_stats = grad_input and batch_statistics  # the input gradient needs both reductions
    flops = elements if (grad_bias or with_stats) else 0  # sum(grad)
    flops += 2 * elements if (grad_weight or with_stats) else 0  # sum(grad * x_hat), x_hat rebuilt
    if grad_input:
        flops += (3 if batch_statistics else 1) * elements
    return flops


@table.register(aten.native_batch_norm_backward, strict=False)
def batch_norm_backward(grad_out, x, w, running_mean, running_var, save_mean, save_invstd, train, eps,
                        output_mask, *, out_shape, **kwargs) -> int:
    return _norm_backward(prod(x), output_mask, bool(train))


@table.register(aten.native_layer_norm_backward, strict=False)
def layer_norm_backward(grad_out, x, normalized_shape, mean, rstd, w, b, output_mask, *, out_shape,
                        **kwargs) -> int:
    return _norm_backward(prod(x), output_mask, True)


@table.register(aten.native_group_norm_backward, strict=False)
def group_norm_backward(grad_out, x, mean, rstd, w, n, c, hxw, group, output_mask, *, out_shape,
                        **kwargs) -> int:
    return _norm_backward(prod(x), output_mask, True)


@table.register(aten.max_pool2d_with_indices_backward, aten.max_pool3d_with_indices_backward,
           aten.adaptive_max_pool2d_backward, aten.adaptive_max_pool3d_backward, aten.embedding_dense_backward,
           strict=False)
def scatter_backward(grad_out, *rest, out_shape, **kwargs) -> int:
    return prod(grad_out)  # each output gradient is added at one place


def _window(kernel_size, dims: int) -> int:
    kernel = list(kernel_size) if isinstance(kernel_size, (list, tuple)) else [kernel_size]
    return prod(kernel * dims if len(kernel) == 1 else kernel)


@table.register(aten.avg_pool2d_backward, strict=False)
def avg_pool2d_backward(grad_out, x, kernel_size, *rest, out_shape, **kwargs) -> int:
    return prod(grad_out) * _window(kernel_size, 2)


@table.register(aten.avg_pool3d_backward, strict=False)
def avg_pool3d_backward(grad_out, x, kernel_size, *rest, out_shape, **kwargs) -> int:
    return prod(grad_out) * _window(kernel_size, 3)


@table.register(aten._adaptive_avg_pool2d_backward, aten._adaptive_avg_pool3d_backward, strict=False)
def adaptive_avg_pool_backward(grad_out, x, *rest, out_shape, **kwargs) -> int:
    return prod(x)


@table.register(aten.sigmoid_backward, aten.tanh_backward, strict=False)
def sigmoid_backward(grad_out, *rest, out_shape, **kwargs) -> int:
    return 2 * prod(grad_out)  # grad * y * (1 - y): one multiply-add, one multiply


@table.register(aten._softmax_backward_data, strict=False)
def softmax_backward(grad_out, *rest, out_shape, **kwargs) -> int:
    return 3 * prod(grad_out)  # y * (grad - sum(grad * y))


@table.register(aten._log_softmax_backward_data, strict=False)
def log_softmax_backward(grad_out, *rest, out_shape, **kwargs) -> int:
    return 2 * prod(grad_out)  # grad - exp(y) * sum(grad); exp is not counted


@table.register(aten.native_dropout_backward, strict=False)
def dropout_backward(grad_out, *rest, out_shape, **kwargs) -> int:
    return prod(grad_out)


@table.register(aten.sum, strict=False)
def sum_(x, *rest, out_shape, **kwargs) -> int:
    return prod(x)


@table.register(aten.div, aten.div_, strict=False)
def div(*args, out_shape, **kwargs) -> int:
    return prod(out_shape)


table.zero(aten.slice_backward, aten.select_backward, strict=False)


# The convnet-burden convention: the forward rules of convnet_burden and the backward rules here.
CONVENTION = Convention(name="convnet-burden", summary=rulebook.FLOPS["convnet-burden"].summary,
                        rules=rulebook.FLOPS["convnet-burden"].rules,
                        flops=forward_table, backward=table)
