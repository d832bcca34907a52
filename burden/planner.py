"""Will it fit? The largest batch whose predicted peak fits a memory budget.

Memory is affine in the batch for almost every model: at every op, the live bytes are some that
do not depend on the batch (parameters, optimizer state, gradients, statistics) plus some per
sample. One trace at batch 1 says which allocations lead with the batch, so it predicts every
op's line and the largest batch under the budget. Two traces confirm the answer: the answer
fits and the answer + 1 does not. Where the prediction was off (an allocation misjudged, a model
whose memory is not affine), the traces made so far refine it (per-op lines through two traced
batches) and, failing that, bisect, so the answer is always confirmed by traces at n and n + 1.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Callable, Sequence

import torch
from torch import nn

from .analysis import analyse, check_mode, checkpoint_paths, model_dtype, model_to_analyse, request
from .containers import iter_tensors
from .figures import BatchPeak, FitFigures
from .inputs import dtype_name, materialize_inputs, parse_memory, rebatch
from .memory import batch_independent, replay
from .records import value_bytes
from .options import DEFAULT_CONVENTION, DEFAULT_OPTIMIZER
from .training import training_step

MAX_BATCH = 1 << 24  # where a model whose memory does not grow with the batch stops
MAX_TRACES = 12


@dataclass(frozen=True)
class _Probe:
    """One traced batch: its peak, the live bytes at each op, and the part of those that does
    not grow with the batch (by the shapes of this trace's allocations)."""

    batch: int
    peak_bytes: int
    curve: tuple[int, ...]  # live bytes at each op, including what is held throughout
    fixed_curve: tuple[int, ...]
    parts: tuple[tuple[str, int], ...]  # what the peak holds


def _prober(module: nn.Module, input_size: Any, inputs: Any, dtype: Any, mode: str, optimizer: str,
            convention: str, checkpoint: tuple[str, ...], amp: Any, target: str, world_size: int,
            zero: int) -> Callable[[int], _Probe]:
    def probe(batch: int) -> _Probe:
        req = request(input_size, batch, dtype, convention, "meta", amp=amp, target=target, world_size=world_size,
                       zero=zero)
        elsize, features = req.elsize(module), req.feature_elsize(module)
        if inputs is None:
            args, kwargs = (torch.zeros((batch, *req.size), dtype=model_dtype(module), device="meta"),), {}
            spec = None
        else:
            spec = rebatch(inputs, batch)
            args, kwargs = materialize_inputs(spec, device="meta", dtype=model_dtype(module))
        held = req.accounting.tensors(t.numel() * value_bytes(t.dtype, elsize) for t in iter_tensors((args, kwargs)))
        if mode == "training":
            step = training_step(module, args, kwargs, optimizer=optimizer, elsize=elsize, meta=True,
                                 convention=req.convention, batch=batch, checkpoint=checkpoint, amp=req.amp,
                                 accounting=req.accounting)
            base = step.param_bytes + step.optimizer_bytes + held
            parts = (("parameters", step.param_bytes), ("optimizer state", step.optimizer_bytes),
                     ("input batch", held), *step.peak_parts)
            return _Probe(batch, step.training_peak_bytes + held, tuple(base + v for v in step.live.curve),
                          tuple(base - held + v for v in step.fixed_curve), parts)
        a = analyse(module, req, spec)
        base = a.held_bytes + held
        shapes = {tuple(p.shape) for p in module.parameters()}
        fixed = batch_independent(a.trace.allocations, batch, shapes)
        fixed_curve = replay(a.trace.events, fixed, a.trace.released, features,
                             size=req.accounting.sizer(features)).curve
        parts = (("parameters", a.held_bytes), ("input batch", held),
                 ("activations and temporaries", a.live.peak_feature_bytes))
        return _Probe(batch, base + a.live.peak_feature_bytes, tuple(base + v for v in a.live.curve),
                      tuple(base - held + v for v in fixed_curve), parts)

    return probe


def _largest_under(lines: Sequence[tuple[float, float]], budget: int) -> int:
    """The largest batch b >= 1 with intercept + slope * b <= budget on every line (MAX_BATCH if
    none grows); 0 if batch 1 is over."""
    best = MAX_BATCH
    for intercept, slope in lines:
        if slope > 0:
            best = min(best, int((budget - intercept) // slope))
        elif intercept + slope > budget:
            return 0
    return max(best, 0)


def _lines(known: dict[int, _Probe]) -> list[tuple[float, float]]:
    """Each op's live bytes as a line in the batch: through the two largest traced batches when
    their runs have the same ops, else from one trace and the allocations that lead with the batch."""
    batches = sorted(known)
    if len(batches) >= 2:
        a, b = known[batches[-2]], known[batches[-1]]
        if len(a.curve) == len(b.curve):
            span = b.batch - a.batch
            return [(ya - (yb - ya) / span * a.batch, (yb - ya) / span) for ya, yb in zip(a.curve, b.curve)]
        return [(a.peak_bytes - (b.peak_bytes - a.peak_bytes) / (b.batch - a.batch) * a.batch,
                 (b.peak_bytes - a.peak_bytes) / (b.batch - a.batch))]
    p = known[batches[0]]
    # per op: fixed + per_sample * batch, where per_sample comes from this trace's batch
    return [(k, (y - k) / p.batch) for y, k in zip(p.curve, p.fixed_curve)]


def _predicted(lines: list[tuple[float, float]], batch: int) -> int:
    return int(max(c + s * batch for c, s in lines)) if lines else 0


def fit_figures(model: nn.Module | str, memory: int | str, input_size: Any = (3, 224, 224), *,
                inputs: Any = None, mode: str = "training", optimizer: str = DEFAULT_OPTIMIZER,
                dtype: Any = None, convention: str = DEFAULT_CONVENTION, checkpoint: Any = None,
                checkpoint_depth: int | None = None, amp: Any = None, target: str = "cpu", world_size: int = 1,
                zero: int = 0) -> FitFigures:
    """The figures of ``burden.fit`` (which documents the arguments)."""
    budget = parse_memory(memory)
    req = request(input_size, 1, dtype, convention, "meta", amp=amp, target=target, world_size=world_size, zero=zero)
    check_mode(req, mode, optimizer, checkpoint or checkpoint_depth is not None)
    name, module = model_to_analyse(model)
    paths = checkpoint_paths(module, checkpoint, checkpoint_depth)
    probe = _prober(module, input_size, inputs, dtype, mode, optimizer, convention, paths, amp, target, world_size,
                    zero)
    known: dict[int, _Probe] = {1: probe(1)}
    notes: list[str] = []
    if known[1].peak_bytes > budget:
        parts = ", ".join(f"{what} {nbytes / 2**20:,.1f} MiB" for what, nbytes in known[1].parts if nbytes)
        notes.append(f"even batch 1 does not fit: its peak is {known[1].peak_bytes / 2**20:,.1f} MiB ({parts}), "
                     f"over the {budget / 2**20:,.1f} MiB budget")
        lo, hi = 0, 1
    else:
        lo, hi = 1, None
    while hi is None or hi > lo + 1:
        n = _largest_under(_lines(known), budget)
        n = max(lo, min(n, (hi - 1) if hi is not None else MAX_BATCH))
        if n in known and (n + 1) in known or len(known) >= MAX_TRACES:  # the lines did not help: bisect
            n = (lo + hi) // 2 if hi is not None else min(2 * lo, MAX_BATCH)
        for b in (n, n + 1):
            if b not in known:
                known[b] = probe(b)
            if known[b].peak_bytes <= budget:
                lo = max(lo, b)
            else:
                hi = b if hi is None else min(hi, b)
                break
        if lo >= MAX_BATCH:
            notes.append(f"memory does not grow with the batch; stopped at {MAX_BATCH:,}")
            hi = lo + 1
            known.setdefault(hi, probe(hi))
    lines = _lines(known)
    around = sorted({b for b in (lo // 2, lo - 1, lo, lo + 1, 2 * lo) if b >= 1})
    at = known.get(lo)
    return FitFigures(
        model=name, input=req.size if inputs is None else (), dtype=dtype_name(req.dtype or model_dtype(module)),
        mode=mode, optimizer=optimizer if mode == "training" else None, budget_bytes=budget, max_batch=lo,
        peak_bytes=known[lo].peak_bytes if lo in known else 0, next_peak_bytes=known[lo + 1].peak_bytes,
        breakdown=at.parts if lo in known else (),
        around=tuple(BatchPeak(b, known[b].peak_bytes if b in known else _predicted(lines, b), b in known)
                     for b in around),
        traces=len(known), notes=tuple(notes), checkpointed=paths,
        amp=dtype_name(req.amp) if req.amp is not None else None, accounting=req.accounting.describe())
