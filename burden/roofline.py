"""Roofline time of a traced forward pass on a device profile (``rulebook.LATENCY``).

Each op takes max(real FLOPs / the peak at its dtype, bytes moved / bandwidth), the cache roof
when its bytes fit in the profile's cache; a module takes the sum of its ops' times. The result is
a lower bound on time: real kernels reach a fraction of the peaks and overheads come on top.
"""

from __future__ import annotations

from collections import defaultdict

import torch

from . import rulebook
from .conventions.roofline_flops import table as real_flops
from .counting import FlopAttribution, roll_up
from .devices import TF32, DeviceProfile, Roof
from .errors import InputSpecError
from .figures import LatencyFigures, LayerTime
from .inputs import dtype_name
from .op_groups import existing_ops
from .records import OpEvent, Trace

_CONVOLUTIONS = frozenset(existing_ops("convolution", "_convolution", "cudnn_convolution"))
_PRODUCTS = frozenset(existing_ops("mm", "addmm", "bmm", "baddbmm"))


def _dtype(event: OpEvent, forced: str | None) -> str:
    """The dtype an op computes in: the analysis dtype when one was asked for, else that of its
    first floating-point tensor."""
    if forced is not None:
        return forced
    for t in event.outputs + event.inputs:
        if t.dtype.is_floating_point:
            return dtype_name(t.dtype)
    return "float32"


def _peak(roof: Roof, dtype: str, event: OpEvent, profile: DeviceProfile) -> tuple[str, float]:
    """(the mode the op computes in, its peak): float32 convolutions and products run on TF32
    tensor cores where the profile has them and PyTorch's flags allow it."""
    if dtype == "float32" and roof.peak(TF32) is not None and (
            (event.packet in _CONVOLUTIONS and torch.backends.cudnn.allow_tf32)
            or (event.packet in _PRODUCTS and torch.get_float32_matmul_precision() != "highest")):
        dtype = TF32
    peak = roof.peak(dtype)
    if peak is None:
        has = ", ".join(k for k, _ in roof.peak_flops)
        raise InputSpecError(f"the {profile.name} profile has no {dtype} peak (it has {has}); choose another "
                             f"--dtype or profile")
    return dtype, peak


def latency_figures(trace: Trace, moved: list[int], profile: DeviceProfile, *, dtype: str | None, batch: int,
                    threads: int | None, order: list[str]) -> LatencyFigures:
    """The roofline of every op of ``trace``, summed per module (listed in ``order``).

    ``moved`` is the bytes each op moves (``traffic.trace_bytes``), ``dtype`` the dtype every op
    computes in (None: each op's own, as under mixed precision)."""
    roof = profile.roof(threads)
    uncounted = FlopAttribution()
    # per module: FLOPs, bytes, seconds, seconds of compute-bound ops, seconds of memory-bound ops
    rows: dict[str, list] = {path: [0, 0, 0.0, 0.0, 0.0] for path in trace.modules}
    flops_by_dtype: dict[str, int] = defaultdict(int)
    for event, nbytes in zip(trace.events, moved):
        flops = real_flops.flops(event)
        if flops is None:
            uncounted.add_uncounted(event.name, event.module)
            flops = 0
        compute = memory = 0.0
        if flops:
            kind, peak = _peak(roof, _dtype(event, dtype), event, profile)
            compute = flops / peak
            flops_by_dtype[kind] += flops
        if nbytes:
            memory = nbytes / roof.bandwidth_for(nbytes)
        row = rows[event.module]
        row[0] += flops
        row[1] += nbytes
        row[2] += max(compute, memory)
        row[3 if compute >= memory else 4] += max(compute, memory)
    roll_up(trace, rows)
    layers = tuple(LayerTime(name=path, flops=rows[path][0], bytes_moved=rows[path][1],
                             predicted_seconds=rows[path][2],
                             bound="" if not rows[path][2] else "compute" if rows[path][3] >= rows[path][4]
                             else "memory")
                   for path in order)
    main = max(flops_by_dtype, key=flops_by_dtype.__getitem__) if flops_by_dtype else (dtype or "float32")
    total = rows[""]
    return LatencyFigures(
        profile=profile.name, device=profile.summary, dtype=main, threads=roof.threads,
        peak_flops=roof.peak(main) or max(v for _, v in roof.peak_flops), bandwidth=roof.bandwidth,
        cache_bytes=roof.cache_bytes, cache_bandwidth=roof.cache_bandwidth, flops=total[0], bytes_moved=total[1],
        predicted_seconds=total[2], compute_seconds=total[3], memory_seconds=total[4], batch=batch, layers=layers,
        uncounted_ops=uncounted.uncounted(), rules=rulebook.LATENCY)
