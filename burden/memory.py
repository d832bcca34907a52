"""Peak memory by liveness replay: which buffers are alive at each op of a traced run.

What "last use" means here. Eager PyTorch frees a storage when the last tensor that references
it dies, and Python decides when that is, not the last op that reads it:
- a local variable holds its tensor until it is rebound or its function returns
  (``out = bn(conv(out))`` keeps the old ``out`` alive until ``bn`` has produced the new one);
- ``Module.__call__`` holds its arguments until the module returns, so a block's input lives
  through the whole block, shortcut or not;
- a list of branch outputs lives as long as the list, past the ``cat`` that read them;
- autograd holds what it saved for backward until the node that needs it has run;
- views and in-place results share their base's storage: they neither allocate nor free, and
  any of them keeps the whole storage alive;
- the model's outputs go to the caller and stay live.
So a storage's last use is the moment its last reference dies, never before its last read and
often after it. An op's inputs and outputs are live together while it runs; a storage that dies
between op ``i`` and op ``i + 1`` counts as freed after op ``i``.

``trace_lifetimes`` runs the traced pass with a finalizer on every storage an op allocates and
records the op after which it really died. The meta device runs the same Python code as a real
one, so these are the eager frees. ``inference_peak`` replays them. Given a plain ``Trace`` (from
``trace_forward``) it falls back to freeing each storage after the last op that reads it, which
is a lower bound of the eager peak (``inferred_lifetimes``).
"""

from __future__ import annotations

from collections import defaultdict
from dataclasses import dataclass, field, fields
from typing import Callable, Mapping

import torch
from torch import nn

from .figures import PeakOp
from .kernels import Kernels
from .op_groups import ALIAS_OPS, INPUT_SIZED_LOSSES
from .records import OpEvent, Trace, value_bytes
from .trace import Tracer, trace_forward


@dataclass(frozen=True)
class Allocation:
    """A new storage: the op that made it, and its size in elements of its dtype."""

    event: int
    elements: int
    dtype: torch.dtype
    shape: tuple[int, ...] = ()  # of the tensor that made it (the planner reads whether it leads with the batch)
    # host memory in a trace on meta: a real CPU tensor of burden's own (an optimizer's step counter),
    # which the CPU target holds and a GPU target does not
    host: bool = False
    gradient: bool = False  # it became a parameter's .grad (set by the training step)

    def nbytes(self, elsize: int | None) -> int:
        """Bytes under an analysis element size (floating storages), native size otherwise.

        ``elsize=None`` uses the native size for every dtype."""
        return self.elements * value_bytes(self.dtype, elsize)


@dataclass
class LiveTrace(Trace):
    """A trace that also knows when every storage it allocated was freed."""

    allocations: dict[int, Allocation] = field(default_factory=dict)  # storage -> allocation
    released: dict[int, int] = field(default_factory=dict)  # storage -> index of the op after which it died


@dataclass(frozen=True)
class LiveMemory:
    """Live feature memory along a run.

    ``curve[i]`` is the memory held while op ``i`` finishes: every buffer allocated so far
    and not yet freed, the op's own outputs included, before anything it was the last to
    use is freed. ``peak_feature_bytes`` is its maximum, at ``peak_op`` (the first op that
    reaches it). Features are the storages the ops allocate; model inputs, parameters and
    buffers are not features (the inference peak is ``param_bytes + peak_feature_bytes``).
    """

    peak_feature_bytes: int
    peak_op: PeakOp | None  # None when the trace has no op
    curve: tuple[int, ...]
    observed: bool  # True: frees observed during the run; False: inferred from last reads


class Lifetimes:
    """An observer of a ``Tracer`` that records which op allocated each storage and after which
    op it was freed (the tracer sees a storage die when its last reference does: views and
    autograd's saved copies share it)."""

    def __init__(self) -> None:
        self.allocations: dict[int, Allocation] = {}
        self.released: dict[int, int] = {}
        self._alive: dict[int, int] = {}  # storage address -> storage number, allocations only
        self._numbers: dict[int, int] = {}  # storage number -> address, allocations only

    def op_recorded(self, tracer: Tracer, event: OpEvent, outputs: tuple[torch.Tensor, ...]) -> None:
        if not any(event.fresh):
            return
        # on meta, a loss kernel's input-sized storage is the meta kernel's reduced one
        at_least = max(t.numel for t in event.inputs[:2]) if tracer.meta and event.packet in INPUT_SIZED_LOSSES else 0
        for tensor, info, fresh in zip(outputs, event.outputs, event.fresh):
            if fresh:
                self._allocated(tensor, info.storage, len(tracer.events) - 1, tracer.meta and not tensor.is_meta,
                                at_least)

    def _allocated(self, tensor: torch.Tensor, number: int, event: int, host: bool, at_least: int = 0) -> None:
        storage = tensor.untyped_storage()
        key = storage._cdata
        if key in self._alive:  # two outputs of one op in one storage
            return
        self._alive[key] = number
        self._numbers[number] = key
        elements = max(storage.nbytes() // tensor.element_size(), at_least)
        self.allocations[number] = Allocation(event, elements, tensor.dtype, tuple(tensor.shape), host)

    def storage_allocated(self, tracer: Tracer, tensor: torch.Tensor, storage: int) -> None:
        self._allocated(tensor, storage, len(tracer.events) - 1, False)

    def storage_freed(self, tracer: Tracer, storage: int) -> None:
        key = self._numbers.pop(storage, None)
        if key is None:
            return  # not an allocation: a parameter, a buffer, an input
        self.released[storage] = len(tracer.events) - 1
        if self._alive.get(key) == storage:
            del self._alive[key]

    def allocation_of(self, tensor: torch.Tensor) -> int | None:
        """The storage number of a live allocation that ``tensor`` uses, None for anything else
        (parameters, buffers, model inputs)."""
        return self._alive.get(tensor.untyped_storage()._cdata)


def trace_lifetimes(model: nn.Module, args: tuple, kwargs: dict | None = None, *, meta: bool = True,
                    stop_after: str | None = None, observers: tuple = (), kernels: Kernels = Kernels()) -> LiveTrace:
    """``trace_forward`` (same arguments), plus the op after which each allocated storage was freed.

    As with ``trace_forward``, the caller owns the model's mode and grad state. The model's
    outputs are dropped when the pass ends, so they count as freed after the last op: live from
    the op that made them to the end, which is what the peak needs.
    """
    lifetimes = Lifetimes()
    trace = trace_forward(model, args, kwargs, meta=meta, stop_after=stop_after, observers=(lifetimes, *observers),
                          kernels=kernels)
    base = {f.name: getattr(trace, f.name) for f in fields(Trace)}
    return LiveTrace(**base, allocations=dict(lifetimes.allocations), released=dict(lifetimes.released))


def inferred_lifetimes(trace: Trace) -> tuple[dict[int, Allocation], dict[int, int]]:
    """Allocations and frees inferred from the events alone, for a trace without observed ones.

    Each fresh output of an op that is not a view allocates; a storage is freed right after
    the last op that reads it (or that makes it, if none reads it), except the model's outputs
    (``trace.output_storages``; the final op's outputs for a trace cut short), which stay live.
    This misses everything Python keeps alive past the last read, so it is a lower bound of
    the eager peak.
    """
    allocations: dict[int, Allocation] = {}
    last_read: dict[int, int] = {}
    for i, event in enumerate(trace.events):
        for t in event.inputs:
            last_read[t.storage] = i
        if event.packet in ALIAS_OPS:
            continue
        for t, fresh in zip(event.outputs, event.fresh):
            if fresh and t.storage not in allocations and t.storage not in trace.input_storages:
                allocations[t.storage] = Allocation(i, t.numel, t.dtype, tuple(t.shape))
    outputs = set(trace.output_storages)
    if not outputs and trace.events:
        outputs = {t.storage for t in trace.events[-1].outputs}
    released = {s: max(a.event, last_read.get(s, a.event)) for s, a in allocations.items() if s not in outputs}
    return allocations, released


def replay(events: list[OpEvent], allocations: Mapping[int, Allocation], released: Mapping[int, int],
           elsize: int | None, observed: bool = True,
           size: Callable[[Allocation], int] | None = None) -> LiveMemory:
    """Walk the ops in order, adding each allocation when its op runs and dropping each storage
    after the op at which it was freed. ``size`` counts an allocation's bytes another way than
    ``nbytes(elsize)`` (an allocator's rounding, a sharded gradient)."""
    born: dict[int, int] = defaultdict(int)
    dying: dict[int, int] = defaultdict(int)
    for storage, allocation in allocations.items():
        nbytes = allocation.nbytes(elsize) if size is None else size(allocation)
        born[allocation.event] += nbytes
        if storage in released:
            dying[released[storage]] += nbytes
    live, curve = 0, []
    for i in range(len(events)):
        live += born[i]
        curve.append(live)
        live -= dying[i]
    if not curve:
        return LiveMemory(peak_feature_bytes=0, peak_op=None, curve=(), observed=observed)
    peak = max(curve)
    at = curve.index(peak)
    return LiveMemory(peak_feature_bytes=peak, peak_op=PeakOp(at, events[at].name, events[at].module),
                      curve=tuple(curve), observed=observed)


def batch_independent(allocations: Mapping[int, Allocation], batch: int,
                      constant_shapes: set[tuple[int, ...]]) -> dict[int, Allocation]:
    """The allocations that do not grow with the batch: those whose shape does not lead with it,
    and those shaped like a parameter (its gradient, a cast copy). What a planner extrapolates
    from a single trace; a misjudged one only costs it a further trace."""
    return {s: a for s, a in allocations.items()
            if not a.shape or a.shape[0] != batch or a.shape in constant_shapes}


def inference_peak(trace: Trace, elsize: int | None = 4, size: Callable[[Allocation], int] | None = None
                   ) -> LiveMemory:
    """Peak feature memory of the traced forward pass, and the op where it peaks.

    Bytes per element are ``elsize`` for floating-point storages and the native size for the
    others (pooling indices, masks); ``elsize=None`` uses native sizes throughout. With a
    ``LiveTrace`` the frees are the ones observed in the run (exact eager semantics); with a
    plain ``Trace`` they are inferred from last reads (``inferred_lifetimes``, a lower bound).
    The inference peak of the whole model is ``param_bytes + peak_feature_bytes``.
    """
    if isinstance(trace, LiveTrace):
        return replay(trace.events, trace.allocations, trace.released, elsize, observed=True, size=size)
    allocations, released = inferred_lifetimes(trace)
    return replay(trace.events, allocations, released, elsize, observed=False, size=size)
