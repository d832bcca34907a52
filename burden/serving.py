"""Will it serve? The largest batch, or the longest prompt, whose generation fits a memory budget.

A generation's peak grows with the batch and with the context, almost on a line in each (the
cache and the activations grow; the weights do not). Two traced generations predict the answer
from the line through them; the answer and the next size are then traced to confirm it, and
where a prediction was off the search narrows between the largest size known to fit and the
smallest known not to (a secant step, or halving the gap where that does not move). Every answer
is confirmed by traces of its own: the size fits and the next one does not.

On the CPU target a size fits when its whole run's peak is within the budget; on the CUDA
target when the simulated caching allocator, given the budget less the CUDA context, never runs
out in either phase.
"""

from __future__ import annotations

from typing import Callable

from torch import nn

from .errors import InputSpecError
from .figures import GenerateFitFigures
from .generation import Generation, generate_figures, generation
from .request import Request

MAX_BATCH = 1 << 20


def _fits(g: Generation, req: Request, budget: int) -> bool:
    if not req.accounting.cuda:
        return max(g.prefill.peak_bytes, g.decode.peak_bytes if g.decode else 0) <= budget
    capacity = budget - req.accounting.context_bytes
    return all(p.reserved_bytes(capacity) is not None for p in (g.prefill, g.decode) if p is not None)


def _reserved(g: Generation | None, req: Request, budget: int) -> int:
    """What the caching allocator reserves within the budget (it frees its cache before it gives up)."""
    if g is None or not req.accounting.cuda:
        return 0
    capacity = budget - req.accounting.context_bytes
    return max(p.reserved_bytes(capacity) or 0 for p in (g.prefill, g.decode) if p is not None)


def _peak(g: Generation) -> int:
    return max(g.prefill.peak_bytes, g.decode.peak_bytes if g.decode else 0)


def _level(g: Generation, req: Request) -> int:
    """What the budget bounds: the peak, or on the CUDA target what the caching allocator reserves
    with no limit (more than the peak, by the blocks its cache keeps)."""
    if not req.accounting.cuda:
        return _peak(g)
    return max(p.reserved_bytes() or 0 for p in (g.prefill, g.decode) if p is not None)


def _search(probe: Callable[[int], Generation], fits: Callable[[Generation], bool],
            level: Callable[[Generation], int], budget: int, limit: int) -> tuple[int, dict[int, Generation]]:
    """The largest size in [1, limit] that fits (0 if none), and every traced size's generation.
    ``level`` is what ``budget`` bounds, from which the line predicts; ``fits`` decides."""
    known: dict[int, Generation] = {}

    def at(x: int) -> Generation:
        if x not in known:
            known[x] = probe(x)
        return known[x]

    if not fits(at(1)):
        return 0, known
    lo, hi = 1, limit + 1  # lo fits; hi is the smallest size known not to fit (or past the limit)
    x, steps = 2, 0
    while hi - lo > 1:
        if fits(at(min(max(x, lo + 1), hi - 1))):
            lo = min(max(x, lo + 1), hi - 1)
        else:
            hi = min(max(x, lo + 1), hi - 1)
        steps += 1
        other = min((k for k in known if k != lo), key=lambda k: abs(k - lo), default=None)
        slope = 0.0 if other is None else (level(known[other]) - level(known[lo])) / (other - lo)
        if slope <= 0:
            x = hi - 1 if hi <= limit else min(limit, lo * 2)
        else:
            x = lo + int((budget - level(known[lo])) / slope)
        if steps % 4 == 0:  # a line that keeps missing: halve the gap instead
            x = (lo + hi) // 2 if hi <= limit else min(limit, lo * 2)
        x = min(max(x, lo + 1), hi - 1) if hi - lo > 1 else x
    return lo, known


def fit_generation(name: str, module: nn.Module, budget: int, req: Request, prompt: int | None, new_tokens: int,
                   cache: str = "dynamic", search_prompt: bool = False) -> GenerateFitFigures:
    """The figures of ``burden.fit_generate`` (which documents the options) for a checked request."""
    if budget <= 0:
        raise InputSpecError(f"the memory budget must be positive, got {budget}")
    if search_prompt:
        limit = getattr(getattr(module, "config", None), "max_position_embeddings", None) or MAX_BATCH
        limit = max(limit - new_tokens, 1)

        def probe(x: int) -> Generation:
            return generation(module, req, x, new_tokens, cache)
    else:
        limit = MAX_BATCH

        def probe(x: int) -> Generation:
            return generation(module, req.at_batch(x), prompt, new_tokens, cache)

    target = budget - req.accounting.context_bytes
    answer, known = _search(probe, lambda g: _fits(g, req, budget), lambda g: _level(g, req), target, limit)
    traces = sum(1 + (g.decode is not None and new_tokens > 2) for g in known.values())
    notes = []
    if answer == limit:
        notes.append(f"stopped at {limit:,}: " + ("the model's max_position_embeddings less the new tokens"
                                                  if search_prompt else "memory hardly grows with the batch"))
    figures = None
    if answer:
        at = req if search_prompt else req.at_batch(answer)
        figures = generate_figures(name, module, at, answer if search_prompt else prompt, new_tokens, cache)
    nxt = known.get(answer + 1)
    return GenerateFitFigures(
        model=name, budget_bytes=budget, search="prompt" if search_prompt else "batch", new_tokens=new_tokens,
        batch=req.batch if search_prompt else answer, prompt=answer if search_prompt else int(prompt or 0),
        peak_bytes=figures.peak_bytes if figures else 0, next_peak_bytes=_peak(nxt) if nxt else None,
        generation=figures, traces=traces, reserved_bytes=_reserved(known.get(answer), req, budget),
        context_bytes=req.accounting.context_bytes,
        accounting=req.accounting.describe(), notes=tuple(notes))
