"""A generation's layers by kind: each leaf module's path with its block numbers as ``*``.

An 80-block model has 80 of each projection; what a reader asks is which kind of layer is
compute-bound and which memory-bound in the prefill and in a decode step, and where the time
goes. One row per kind, in the model's order, summed over its blocks.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from ..figures import GenerateFigures, LatencyFigures

_BLOCK = re.compile(r"(?<=\.)\d+(?=\.|$)")


@dataclass(frozen=True)
class KindTime:
    """One kind of layer in one phase: its modules' summed roofline time and the bound of most of it."""

    seconds: float
    bound: str  # "compute", "memory", or "" when its ops take no time


@dataclass(frozen=True)
class LayerKind:
    kind: str  # the path with block numbers as *, such as model.layers.*.self_attn.q_proj
    modules: int
    prefill: KindTime | None
    decode: KindTime | None


def _own(latency: LatencyFigures) -> list[tuple[str, float, str]]:
    """Each module's own ops, in the model's order: (kind, seconds, bound). A leaf's are all of its
    time; a parent's are what its submodules leave (attention's product with the cache runs in the
    attention module itself), bound by their FLOPs against their bytes on the profile's roofs."""
    times = {t.name: t for t in latency.layers}
    children: dict[str, list[str]] = {}
    for name in times:
        if name:
            children.setdefault(name.rsplit(".", 1)[0] if "." in name else "", []).append(name)
    out = []
    for t in latency.layers:
        kids = [times[k] for k in children.get(t.name, [])]
        if not kids:
            out.append((_BLOCK.sub("*", t.name), t.predicted_seconds, t.bound))
            continue
        seconds = t.predicted_seconds - sum(k.predicted_seconds for k in kids)
        flops = t.flops - sum(k.flops for k in kids)
        moved = t.bytes_moved - sum(k.bytes_moved for k in kids)
        if seconds > 1e-15 and (flops > 0 or moved > 0):
            bound = "compute" if flops / latency.peak_flops > moved / latency.bandwidth else "memory"
            out.append((f"{_BLOCK.sub('*', t.name)} (own ops)" if t.name else "(outside any layer)", seconds, bound))
    return out


def _kinds(latency: LatencyFigures | None) -> dict[str, tuple[int, KindTime]]:
    if latency is None:
        return {}
    sums: dict[str, dict[str, float]] = {}
    counts: dict[str, int] = {}
    for kind, seconds, bound in _own(latency):
        counts[kind] = counts.get(kind, 0) + 1
        per_bound = sums.setdefault(kind, {})
        per_bound[bound] = per_bound.get(bound, 0.0) + seconds
    out = {}
    for kind, per_bound in sums.items():
        timed = {b: s for b, s in per_bound.items() if b}
        bound = max(timed, key=timed.get) if timed and max(timed.values()) > 0 else ""
        out[kind] = (counts[kind], KindTime(sum(per_bound.values()), bound))
    return out


def layer_kinds(g: GenerateFigures) -> list[LayerKind]:
    """The generation's kinds of layer, in the model's order, with each phase's time and bound
    (empty without a device profile)."""
    prefill = _kinds(g.prefill.latency)
    decode = _kinds(g.decode.latency if g.decode is not None else None)
    rows = []
    for kind in dict.fromkeys([*prefill, *decode]):
        count = (prefill.get(kind) or decode[kind])[0]
        rows.append(LayerKind(kind, count, prefill[kind][1] if kind in prefill else None,
                              decode[kind][1] if kind in decode else None))
    return rows
