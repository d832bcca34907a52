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

from torch import nn

from .analysis import analyse, check_mode, checkpoint_paths, model_and_request
from .figures import BatchPeak, FitFigures, TrainingFigures
from .inputs import dtype_name, rebatch
from .device_memory import DeviceRun
from . import sharded
from .memory import batch_independent, replay
from .request import Request, model_dtype, model_inputs

MAX_BATCH = 1 << 24  # where a model whose memory does not grow with the batch stops
MAX_TRACES = 12


@dataclass(frozen=True)
class _Probe:
    """One traced batch: its peak, the bytes held at each op, and the part of those that does
    not grow with the batch (by the shapes of this trace's allocations)."""

    batch: int
    peak_bytes: int
    curve: tuple[int, ...]  # bytes held at each op, everything included
    fixed_curve: tuple[int, ...]
    parts: tuple[tuple[str, int], ...]  # what the peak holds
    fits: bool  # within the budget: the peak on the CPU; on CUDA the allocator never runs out
    reserved_bytes: int = 0  # on CUDA: what the caching allocator reserves on that card (0 if it runs out)
    training: TrainingFigures | None = None  # the step's figures, in training


def _prober(module: nn.Module, req: Request, inputs: Any, checkpoint: tuple[str, ...],
            budget: int, steps: sharded.Steps) -> Callable[[int], _Probe]:
    """Traces at a batch size. On the CUDA target, a batch fits when the simulated caching allocator,
    given the card less the CUDA context, never gives up (it frees its cache and retries first)."""
    accounts = req.accounting

    def fits(peak: int, run: DeviceRun) -> tuple[bool, int]:
        if not accounts.cuda:
            return peak <= budget, 0
        reserved = run.reserved(budget - accounts.context_bytes)
        return reserved is not None, reserved or 0

    def probe(batch: int) -> _Probe:
        at = req.at_batch(batch)
        spec = None if inputs is None else rebatch(inputs, batch)
        if req.mode == "training":
            args, kwargs = model_inputs(module, at, spec)
            step = steps(args, kwargs, at, checkpoint, batch=batch)
            figures = step.figures
            return _Probe(batch, figures.training_peak_bytes, step.curve, step.fixed_curve, figures.peak_parts,
                          *fits(figures.training_peak_bytes, step.device_run), figures)
        a = analyse(module, at, spec)
        features = at.feature_elsize(module)
        shapes = {tuple(p.shape) for p in module.parameters()}
        allocations = a.device_run.allocations
        fixed = batch_independent(allocations, batch, shapes)
        fixed_curve = replay(a.trace.events, fixed, a.trace.released, features, size=accounts.sizer(features)).curve
        base = a.held_bytes + a.input_bytes
        parts = (("parameters and buffers", a.held_bytes), ("input batch", a.input_bytes),
                 ("activations and temporaries", a.live.peak_feature_bytes))
        return _Probe(batch, a.peak_bytes, tuple(base + v for v in a.live.curve),
                      tuple(a.held_bytes + v for v in fixed_curve), parts, *fits(a.peak_bytes, a.device_run))

    return probe


def _allocatable(known: dict[int, _Probe], usable: int) -> int:
    """The allocated bytes to aim the lines at. On CUDA the caching allocator's reserved memory, not
    the allocated peak, must fit: aim at the budget scaled by the least allocated / reserved ratio
    of the batches traced so far that fit (rounding to blocks and segments costs a share of
    the peak that changes little with the batch), so that the search lands near the answer at once."""
    ratios = [p.peak_bytes / p.reserved_bytes for p in known.values() if p.fits and p.reserved_bytes]
    return int(usable * min(ratios)) if ratios else usable


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


def fit_figures(model: nn.Module | str, budget: int, req: Request, inputs: Any = None,
                checkpoint: Sequence[str] | str | None = None, checkpoint_depth: int | None = None) -> FitFigures:
    """The figures of ``burden.fit`` (which documents the options) for a checked request."""
    check_mode(req, checkpoint is not None or checkpoint_depth is not None)
    name, module, req = model_and_request(model, req)
    paths = checkpoint_paths(module, checkpoint, checkpoint_depth)
    with sharded.Steps(module, req) as steps:  # a sharded plan is made once for every batch traced
        return _search(name, module, req, inputs, paths, budget, steps)


def _search(name: str, module: nn.Module, req: Request, inputs: Any, paths: tuple[str, ...], budget: int,
            steps: sharded.Steps) -> FitFigures:
    probe = _prober(module, req, inputs, paths, budget, steps)
    # the peaks the lines predict are allocated bytes: on CUDA the context is not among them
    usable = budget - req.accounting.context_bytes
    known: dict[int, _Probe] = {1: probe(1)}
    notes: list[str] = []
    if not known[1].fits:
        parts = ", ".join(f"{what} {nbytes / 2**20:,.1f} MiB" for what, nbytes in known[1].parts if nbytes)
        beside = f" with the {req.accounting.context_bytes / 2**20:,.0f} MiB CUDA context" \
            if req.accounting.cuda else ""
        notes.append(f"even batch 1 does not fit: its peak is {known[1].peak_bytes / 2**20:,.1f} MiB ({parts}), "
                     f"over the {budget / 2**20:,.1f} MiB budget{beside}")
        lo, hi = 0, 1
    else:
        lo, hi = 1, None
    while hi is None or hi > lo + 1:
        n = _largest_under(_lines(known), _allocatable(known, usable))
        n = max(lo, min(n, (hi - 1) if hi is not None else MAX_BATCH))
        if n in known and (n + 1) in known or len(known) >= MAX_TRACES:  # the lines did not help: bisect
            n = (lo + hi) // 2 if hi is not None else min(2 * lo, MAX_BATCH)
        for b in (n, n + 1):
            if b not in known:
                known[b] = probe(b)
            if known[b].fits:
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
    step = (at or known[1]).training
    accum = req.training.grad_accum
    plan = step.sharding if step is not None else None
    return FitFigures(
        model=name, input=req.size if inputs is None else (), dtype=dtype_name(req.dtype or model_dtype(module)),
        mode=req.mode, optimizer=step.optimizer if step is not None else None,
        optimizer_impl=step.optimizer_impl if step is not None else "", budget_bytes=budget, max_batch=lo,
        grad_accum=accum, effective_batch=lo * accum * (plan.data_parallel if plan is not None
                                                         else req.accounting.world_size),
        peak_bytes=known[lo].peak_bytes if lo in known else 0, next_peak_bytes=known[lo + 1].peak_bytes,
        peak_phase=at.training.peak_phase if at is not None and at.training is not None else "",
        reserved_bytes=at.reserved_bytes if at is not None else 0, context_bytes=req.accounting.context_bytes,
        breakdown=at.parts if lo in known else (),
        around=tuple(BatchPeak(b, known[b].peak_bytes, True, known[b].fits) if b in known
                     else BatchPeak(b, _predicted(lines, b), False, _predicted(lines, b) <= usable) for b in around),
        traces=len(known), notes=tuple(notes), checkpointed=paths,
        amp=dtype_name(req.amp) if req.amp is not None else None, accounting=req.accounting.describe(),
        sharding=plan)
