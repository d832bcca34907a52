"""The convnet-burden convention: the rules behind the reference table (shared/design/conventions.md).

A fused multiply-add is one operation. Every layer output is a new buffer and no buffer is ever
reused, except that ReLU runs in place and views, flatten and dropout add nothing.
"""

from __future__ import annotations

import torch

from .. import rulebook
from ..formulas import FormulaTable, prod
from ..records import OpEvent, Trace
from .base import MemoryConvention
from ..op_groups import (ALIAS_OPS, ATTENTION_OPS, AUX_OUTPUT_OPS, COPY_OPS, DROPOUT_OPS, FACTORY_OPS, NORM_OPS,
                         SOFTMAX_OPS)

aten = torch.ops.aten
table = FormulaTable("convnet-burden")


@table.register(aten.convolution, aten._convolution, strict=False)
def conv(x, w, bias, stride, padding, dilation, transposed, *rest, out_shape, **kwargs) -> int:
    # weight is [C_out, C_in/groups, kh, kw], or [C_in, C_out/groups, kh, kw] when transposed
    per_element = prod(w[1:])
    macs = prod(x) * per_element if transposed else prod(out_shape) * per_element
    return macs + (prod(out_shape) if bias is not None else 0)


@table.register(aten.addmm, strict=False)
def addmm(bias, a, b, *rest, out_shape, **kwargs) -> int:
    return prod(out_shape) * a[-1] + prod(out_shape)


@table.register(aten.mm, strict=False)
def mm(a, b, *rest, out_shape, **kwargs) -> int:
    return prod(out_shape) * a[-1]


@table.register(aten.bmm, strict=False)
def bmm(a, b, *rest, out_shape, **kwargs) -> int:
    return prod(out_shape) * a[-1]


@table.register(aten.baddbmm, strict=False)
def baddbmm(bias, a, b, *rest, out_shape, **kwargs) -> int:
    return prod(out_shape) * a[-1] + prod(out_shape)


@table.register(*ATTENTION_OPS, strict=False)
def fused_attention(query, key, value, *rest, out_shape, attn_mask=None, **kwargs) -> int:
    # what the math path counts: the scale on Q and K, Q K^T, the mask, softmax (0), A V
    *batch, length, width = query
    source, value_width = key[-2], value[-1]
    scores = prod(batch) * length * source
    return prod(query) + prod(key) + scores * width + (scores if attn_mask is not None else 0) \
        + scores * value_width


@table.register(aten.relu, aten.relu_, strict=False)
def relu(x, *rest, out_shape, **kwargs) -> int:
    return 2 * prod(out_shape)  # compare and multiply


def _window_pool(out_shape, stride) -> int:
    return 2 * prod(out_shape) * prod(stride)  # the reference tool's rule, kept as it is


def _first(out_shape):
    """The shape of an op's first output (pooling with indices returns two)."""
    return out_shape if isinstance(out_shape, torch.Size) else out_shape[0]


@table.register(aten.max_pool2d_with_indices, aten.max_pool3d_with_indices, strict=False)
def max_pool(x, kernel_size, stride=(), *rest, out_shape, **kwargs) -> int:
    out = _first(out_shape)
    return _window_pool(out, stride or kernel_size)


@table.register(aten.avg_pool1d, aten.avg_pool2d, aten.avg_pool3d, strict=False)
def avg_pool(x, kernel_size, stride=(), *rest, out_shape, **kwargs) -> int:
    spatial = len(kernel_size) if isinstance(kernel_size, (list, tuple)) else 1
    if all(int(d) == 1 for d in out_shape[-spatial:]):
        return prod(x)  # global average pooling: one add per input element
    return _window_pool(out_shape, stride or kernel_size)


@table.register(aten._adaptive_avg_pool2d, aten._adaptive_avg_pool3d, aten.adaptive_max_pool2d,
                aten.adaptive_max_pool3d, strict=False)
def adaptive_pool(x, output_size, *rest, out_shape, **kwargs) -> int:
    out = _first(out_shape)
    n = len(output_size)
    if all(int(d) == 1 for d in out[-n:]):
        return prod(x)
    # an adaptive window's stride is the input size over the output size
    stride = [max(int(i) // int(o), 1) for i, o in zip(x[-n:], out[-n:])]
    return _window_pool(out, stride)


@table.register(aten.mean, strict=False)
def mean(x, *rest, out_shape, **kwargs) -> int:
    return prod(x)  # global average pooling written as a mean over H and W


@table.register(aten.add, aten.add_, aten.sub, aten.sub_, aten.rsub, strict=False)
def residual_sum(*args, out_shape, **kwargs) -> int:
    return prod(out_shape)


@table.register(aten.mul, aten.mul_, strict=False)
def scale(*args, out_shape, **kwargs) -> int:
    return prod(out_shape)  # channel-wise scale: one multiply per output element


@table.register(aten.addcmul, aten.addcmul_, strict=False)
def fused_scale_sum(*args, out_shape, **kwargs) -> int:
    return 2 * prod(out_shape)  # Caffe's Axpy: scale * x + y


table.zero(*ALIAS_OPS, *COPY_OPS, *DROPOUT_OPS, *FACTORY_OPS, *NORM_OPS, *SOFTMAX_OPS,
           aten.sigmoid, aten.sigmoid_, aten.cat, aten.stack, strict=False)

# ops that never add a feature buffer under this convention
# (copy_ fills a buffer that exists: a slice of a mask, `x[...] = v`, is not a layer output)
_NO_BUFFER = {*ALIAS_OPS, *DROPOUT_OPS, *FACTORY_OPS, aten.relu, aten.relu_, aten.copy_}


def _output_bytes(event: OpEvent, elsize: int | None) -> int:
    if event.packet in _NO_BUFFER:
        return 0
    if event.packet is aten.cat and len(event.inputs) == 1:
        return 0  # a concatenation of one tensor is the identity: the reference tool has no layer there
    outputs = event.outputs[:1] if event.packet in AUX_OUTPUT_OPS else event.outputs
    fresh = event.fresh[: len(outputs)]
    # an in-place write still counts as a new layer output (``out += identity``)
    return sum(t.nbytes(elsize)
               for t, new in zip(outputs, fresh) if new or event.inplace)


_SUMS = {aten.add, aten.add_}


def _fused_scales(events: list[OpEvent]) -> set[int]:
    """Indices of channel-wise scales (``x * s``) whose only use is the residual sum that follows:
    the pair is one Axpy, whose single buffer is the sum's output."""
    uses: dict[int, list[int]] = {}
    for i, event in enumerate(events):
        for t in event.inputs:
            uses.setdefault(t.storage, []).append(i)
    fused = set()
    for i, event in enumerate(events):
        if event.packet is not aten.mul or len(event.outputs) != 1 or not event.fresh[0]:
            continue
        ins = event.inputs
        broadcast = len(ins) == 2 and tuple(ins[0].shape) != tuple(ins[1].shape)
        consumers = uses.get(event.outputs[0].storage, [])
        if broadcast and len(consumers) == 1 and events[consumers[0]].packet in _SUMS:
            fused.add(i)
    return fused


def feature_bytes(trace: Trace, elsize: int | None) -> list[int]:
    fused = _fused_scales(trace.events)
    return [0 if i in fused else _output_bytes(e, elsize) for i, e in enumerate(trace.events)]


MEMORY = MemoryConvention(
    name="convnet-burden",
    summary=rulebook.MEMORY["convnet-burden"],
    rule=feature_bytes,
)
