"""Apply a convention to a trace: per-op FLOPs and feature bytes, summed per module."""

from __future__ import annotations

from collections import defaultdict
from dataclasses import dataclass, field
from typing import Iterable

import torch
from torch import nn

from .accounting import Accounting
from .figures import LayerFigures, UncountedOp
from .layer_details import describe
from .formulas import FormulaTable
from .records import Trace, local_tensor, value_bytes


@dataclass(frozen=True)
class Totals:
    params: int
    trainable_params: int
    param_bytes: int
    feature_bytes: int
    flops: int
    bytes_moved: int


def _tensor_key(t: torch.Tensor) -> tuple:
    # Tied weights are one Parameter object, or two views of one storage: either way, count once.
    return (t.untyped_storage()._cdata, t.storage_offset(), tuple(t.shape), tuple(t.stride()))


@dataclass(frozen=True)
class OwnState:
    """The state one module holds directly."""

    values: int
    bytes: int
    trainable: int  # values of parameters that require grad
    shared: int  # values of tensors another module holds too, counted there


def own_params(model: nn.Module, elsize: int) -> dict[str, OwnState]:
    """Per module path, the state it holds directly (``OwnState``).

    Parameters and floating-point buffers count; integer counters do not. A tensor reachable
    from several modules belongs to the first one in ``named_modules`` order; the others note it
    as shared.
    """
    seen: set[tuple] = set()
    out: dict[str, OwnState] = {}
    for path, module in model.named_modules():
        values = nbytes = trainable = shared = 0
        # the module's own tables, each tensor once (parameters(recurse=False) would walk named_modules)
        params = {id(p): p for p in module._parameters.values() if p is not None}
        buffers = {id(b): b for b in module._buffers.values() if b is not None and b.is_floating_point()}
        tensors = [(p, p.requires_grad) for p in params.values()] + [(b, False) for b in buffers.values()]
        for t, grad in tensors:
            key = _tensor_key(t)
            if key in seen:
                shared += t.numel()
                continue
            seen.add(key)
            n = t.numel()
            values += n
            nbytes += n * value_bytes(t.dtype, elsize)
            trainable += n if grad else 0
        out[path] = OwnState(values, nbytes, trainable, shared)
    return out


def held_sizes(model: nn.Module, elsize: int, accounts: Accounting) -> list[int]:
    """What a device holds for the model's state while it runs, tensor by tensor: every parameter
    and buffer (integer counters such as ``num_batches_tracked`` included: the allocator holds them,
    whatever the parameter-memory convention counts), each tensor once, a parameter as one device's
    share under ZeRO stage 3. Bytes as requested, before the allocator's rounding."""
    seen: set[tuple] = set()

    def sizes(tensors: Iterable[torch.Tensor], stage: int) -> list[int]:
        found = []
        for t in tensors:
            local = local_tensor(t)
            key = _tensor_key(local)
            if key in seen:
                continue
            seen.add(key)
            if local is not t:  # a sharded tensor: this rank's shard, with its padding (at its own dtype)
                found.append(local.untyped_storage().nbytes())
            else:
                found.append(accounts.share(t.numel() * value_bytes(t.dtype, elsize), stage))
        return found

    return sizes(model.parameters(), 3) + sizes(model.buffers(), 4)


def held_bytes(model: nn.Module, elsize: int, accounts: Accounting) -> int:
    """``held_sizes`` in all, as the target's allocator counts them."""
    return accounts.tensors(held_sizes(model, elsize, accounts))


def own_bytes(model: nn.Module, elsize: int) -> int:
    """Bytes of the model's parameters and floating-point buffers, shared tensors once."""
    return sum(state.bytes for state in own_params(model, elsize).values())


def _parent(path: str) -> str | None:
    if path == "":
        return None
    return path.rsplit(".", 1)[0] if "." in path else ""


@dataclass
class FlopAttribution:
    """FLOPs per module (its own ops only) and the ops the convention has no rule for."""

    self_flops: dict[str, int] = field(default_factory=lambda: defaultdict(int))
    uncounted_calls: dict[str, int] = field(default_factory=lambda: defaultdict(int))
    uncounted_layers: dict[str, list[str]] = field(default_factory=lambda: defaultdict(list))

    def add_uncounted(self, op: str, module: str, calls: int = 1) -> None:
        self.uncounted_calls[op] += calls
        if module not in self.uncounted_layers[op]:
            self.uncounted_layers[op].append(module)

    def uncounted(self) -> tuple[UncountedOp, ...]:
        return tuple(UncountedOp(op=name, calls=n, layers=tuple(self.uncounted_layers[name]))
                     for name, n in sorted(self.uncounted_calls.items()))


def attribute_with_table(table: FormulaTable, model: nn.Module, trace: Trace) -> FlopAttribution:
    """Op formulas per event, except inside modules whose type has a formula of its own."""
    result = FlopAttribution()
    covered = [False] * len(trace.events)
    if table.has_module_formulas():
        modules = dict(model.named_modules())
        for path, info in sorted(trace.modules.items(), key=lambda kv: kv[1].depth):
            formula = table.module_formula(modules[path])
            for start, end, in_shapes, out_shape in (info.spans if formula else ()):
                if start < end and covered[start]:
                    continue  # inside a module an outer formula already counted
                result.self_flops[path] += int(formula(modules[path], *in_shapes, out_shape=out_shape))
                covered[start:end] = [True] * (end - start)
    for event, done in zip(trace.events, covered):
        if done:
            continue
        flops = table.flops(event)
        if flops is None:
            result.add_uncounted(event.name, event.module)
        else:
            result.self_flops[event.module] += flops
    return result


def per_module(trace: Trace, values: list[int]) -> dict[str, int]:
    """Per module path, the sum of a per-event figure over the ops its own forward runs."""
    sums: dict[str, int] = defaultdict(int)
    for event, value in zip(trace.events, values):
        sums[event.module] += value
    return sums


def roll_up(trace: Trace, rows: dict[str, list]) -> dict[str, list]:
    """Add each module's row of figures into its parent's, in place: a module's own figures become
    its submodules' included. ``rows`` has one list per module path of the trace."""
    # deepest first, so each child is complete before it is added to its parent
    for path in sorted(rows, key=lambda p: -trace.modules[p].depth):
        parent = _parent(path)
        if parent is not None and parent in rows:
            for i, v in enumerate(rows[path]):
                rows[parent][i] += v
    return rows


def count(model: nn.Module, trace: Trace, flops: FlopAttribution, memory: list[int], elsize: int,
          moved: list[int]) -> tuple[tuple[LayerFigures, ...], tuple[UncountedOp, ...], Totals]:
    """Per-module figures from per-module FLOPs, per-event feature bytes and per-event bytes moved."""
    self_bytes, self_moved = per_module(trace, memory), per_module(trace, moved)
    self_flops = flops.self_flops

    owned = own_params(model, elsize)
    modules = dict(model.named_modules())
    paths = list(trace.modules)
    inclusive: dict[str, list[int]] = {
        p: [owned[p].values, owned[p].bytes, self_bytes[p], self_flops.get(p, 0), owned[p].trainable, self_moved[p]]
        for p in paths}
    roll_up(trace, inclusive)

    layers = tuple(
        LayerFigures(
            name=p, type=info.type, depth=info.depth, output_shape=info.output_shape, calls=info.calls,
            params=inclusive[p][0], param_bytes=inclusive[p][1], feature_bytes=inclusive[p][2],
            flops=inclusive[p][3], self_params=owned[p].values, self_param_bytes=owned[p].bytes,
            self_feature_bytes=self_bytes[p], self_flops=self_flops.get(p, 0), details=describe(modules[p]),
            call_output_shapes=tuple(span[3] for span in info.spans), shared_params=owned[p].shared,
            bytes_moved=inclusive[p][5], self_bytes_moved=self_moved[p],
        )
        for p, info in trace.modules.items()
    )
    root = inclusive[""]
    totals = Totals(params=root[0], param_bytes=root[1], feature_bytes=root[2], flops=root[3],
                    trainable_params=root[4], bytes_moved=root[5])
    return layers, flops.uncounted(), totals
