"""What a trace records: plain data about ops, tensors and module calls, and nothing live.

Counting and memory rules read these records; nothing here knows about conventions.
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from typing import Any

import torch


_FACTS: dict[Any, tuple[bool, tuple[bool, ...]]] = {}


def schema_facts(func: Any) -> tuple[bool, tuple[bool, ...]]:
    """(whether the op writes to an input, per return whether its schema declares it new): read
    from the schema once per op (each ``_schema`` attribute read builds Python objects)."""
    facts = _FACTS.get(func)
    if facts is None:
        schema = func._schema
        facts = _FACTS[func] = (schema.is_mutable, tuple(r.alias_info is None for r in schema.returns))
    return facts


def local_tensor(t: torch.Tensor) -> torch.Tensor:
    """The tensor whose storage holds ``t``'s memory on this rank: a DTensor's local shard (a
    sharded parameter, its gradient, its optimizer state), or ``t`` itself."""
    local = getattr(t, "_local_tensor", None)
    return local if isinstance(local, torch.Tensor) else t


def value_bytes(dtype: torch.dtype, elsize: int | None) -> int:
    """Bytes per value under an analysis element size: ``elsize`` for floating-point values (the
    ``--dtype`` being asked about), the native size otherwise, and always with ``elsize=None``
    (mixed precision, whose features have several dtypes)."""
    return elsize if elsize is not None and dtype.is_floating_point else dtype.itemsize



@dataclass(frozen=True, eq=False, slots=True)  # a trace makes thousands: slots keep them small
class TensorInfo:
    """What counting needs to know about a tensor: its shape, dtype and which storage it lives in."""

    shape: torch.Size
    dtype: torch.dtype
    storage: int  # burden's own storage number, stable for the whole trace

    @property
    def numel(self) -> int:
        return self.shape.numel()  # torch.Size's own product: a third of a Python loop's cost, per op

    def nbytes(self, elsize: int | None) -> int:
        return self.numel * value_bytes(self.dtype, elsize)


@dataclass(frozen=True, eq=False)
class OpEvent:
    """One aten op as it ran: arguments with tensors replaced by ``TensorInfo``, and its outputs."""

    func: torch._ops.OpOverload
    module: str
    args: tuple
    kwargs: dict
    out: Any  # the op's return value with tensors replaced by TensorInfo
    outputs: tuple[TensorInfo, ...]  # the tensors in ``out``, flattened
    fresh: tuple[bool, ...]  # per output: new storage, not a view of or a write into an input
    inputs: tuple[TensorInfo, ...] = ()  # the tensors in ``args`` and ``kwargs``, flattened

    @property
    def name(self) -> str:
        return str(self.func.overloadpacket).replace("aten::", "aten.")

    @property
    def packet(self) -> torch._ops.OpOverloadPacket:
        return self.func.overloadpacket

    @property
    def inplace(self) -> bool:
        return schema_facts(self.func)[0]


@dataclass
class ModuleInfo:
    path: str
    type: str
    depth: int
    order: int  # position in execution order (first call); never-called modules come last
    calls: int = 0
    output_shape: Any = None  # shapes of the first call's output, nested like the output
    # per call: (first event index, end event index, input shapes, output shapes)
    spans: list[tuple[int, int, Any, Any]] = field(default_factory=list)


@dataclass
class Trace:
    events: list[OpEvent]
    modules: dict[str, ModuleInfo]  # path -> info, in execution order
    # model inputs as the first op saw them; feature memory never counts them
    input_storages: set[int] = field(default_factory=set)
    # storages of the tensors the forward returned (empty when the trace stopped early)
    output_storages: set[int] = field(default_factory=set)
    stopped_after: str | None = None  # the module after which the trace was cut, if any
    # what the trace assumed where a value came from the weights (burden.routing's notes)
    assumptions: tuple[str, ...] = ()

    def part(self, start: int, end: int) -> "Trace":
        """The events ``[start, end)`` as a trace of their own, with the module calls made wholly
        inside them (a phase of a longer run: generation's prefill, its last decode step)."""
        modules = {}
        for path, info in self.modules.items():
            spans = [(s - start, e - start, i, o) for s, e, i, o in info.spans if start <= s and e <= end]
            modules[path] = replace(info, calls=len(spans), spans=spans,
                                    output_shape=spans[0][3] if spans else None)
        return Trace(events=self.events[start:end], modules=modules, assumptions=self.assumptions)
