"""Bytes each op moves to and from memory: the other half of a roofline (``rulebook.TRAFFIC``).

An op reads each distinct tensor argument once and writes each output; a view moves nothing.
Counted from the trace's records alone, at the analysis dtype's size per floating value.
"""

from __future__ import annotations

from .op_groups import ALIAS_OPS, existing_ops
from .records import OpEvent, Trace

_METADATA = frozenset(ALIAS_OPS)  # views, and in-place changes of shape or strides (as_strided_)
# ops that write their output without reading what it held (copy_ reads its source, not its target)
_OVERWRITE = frozenset(existing_ops("copy_", "fill_", "zero_", "normal_", "uniform_", "bernoulli_", "random_",
                                    "exponential_", "set_"))


def op_bytes(event: OpEvent, elsize: int | None) -> tuple[int, int]:
    """(bytes read, bytes written) by one op."""
    if event.packet in _METADATA or (event.outputs and not event.inplace and not any(event.fresh)):
        return 0, 0  # a view or a change of strides: nothing is read or written
    written = sum(t.nbytes(elsize) for t in event.outputs)
    inputs = event.inputs
    if event.packet in _OVERWRITE and inputs:
        inputs = inputs[1:]  # the target is written, not read
    seen: set[tuple] = set()
    read = 0
    for t in inputs:
        key = (t.storage, t.shape)
        if key not in seen:  # x * x reads x once
            seen.add(key)
            read += t.nbytes(elsize)
    return read, written


def trace_bytes(trace: Trace, elsize: int | None) -> list[int]:
    """Bytes moved (read + written) by every op of the trace, in order."""
    return [sum(op_bytes(event, elsize)) for event in trace.events]
