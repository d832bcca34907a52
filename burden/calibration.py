"""``burden calibrate``: measure this machine's own roofs and store them as a device profile.

Peak FLOP/s per dtype is the best rate of square matrix products of growing size; bandwidth is
the best rate of a large copy (bytes read plus written); the cache roof is the best copy rate of
working sets that move at least 1.5 times faster than main memory, up to the largest such set.
On a CPU each is measured per thread count. Every figure is the best of several timings: a roof
is what the machine can reach, not what it usually does.
"""

from __future__ import annotations

import datetime
import math
import time
from typing import Callable, Sequence

import torch

from .devices import DEFAULT_PROFILE, TF32, DeviceProfile, Roof, check_name
from .errors import InputSpecError
from .inputs import dtype_name, parse_dtype
from .machine import processor_name, run_device

CPU_DTYPES = ("float32", "bfloat16", "float16")
CUDA_DTYPES = ("float32", TF32, "bfloat16", "float16")
_CACHE_GAIN = 1.5  # a working set counts as cached when it moves this much faster than main memory


def _best(fn: Callable[[], object], sync: Callable[[], None], min_time: float, repeats: int = 3) -> float:
    """The best seconds per call of ``fn`` over ``repeats`` timings of at least ``min_time`` each."""
    fn()
    sync()
    start = time.perf_counter()
    fn()
    sync()
    once = max(time.perf_counter() - start, 1e-7)
    calls = max(1, int(min_time / once))
    best = math.inf
    for _ in range(repeats):
        start = time.perf_counter()
        for _ in range(calls):
            fn()
        sync()
        best = min(best, (time.perf_counter() - start) / calls)
    return best


def _matmul_peak(dtype: torch.dtype, device: str, sync: Callable[[], None], largest: int, budget: float) -> float:
    """FLOP/s of the fastest square product tried, growing until one product takes ``budget`` s."""
    best, n = 0.0, 128
    while n <= largest:
        a = torch.randn(n, n, device=device).to(dtype)
        b = torch.randn(n, n, device=device).to(dtype)
        seconds = _best(lambda: torch.mm(a, b), sync, min_time=min(budget, 0.05))
        best = max(best, 2 * n ** 3 / seconds)
        if seconds >= budget:
            break
        n *= 2
    return best


def _copy_rates(device: str, sync: Callable[[], None], largest: int) -> list[tuple[int, float]]:
    """(bytes moved, bytes/s) of copies of growing size, from 32 KiB moved to ``2 x largest``."""
    rates = []
    size = 16 * 1024
    while size <= largest:
        src = torch.ones(size // 4, device=device)
        dst = torch.empty_like(src)
        seconds = _best(lambda: dst.copy_(src), sync, min_time=0.02)
        rates.append((2 * size, 2 * size / seconds))
        size *= 4
    return rates


def _memory_roofs(rates: list[tuple[int, float]]) -> tuple[float, int, float]:
    """(main-memory bandwidth, cache size, cache bandwidth) from the copy rates."""
    main = rates[-1][1]
    cached = [(moved, rate) for moved, rate in rates if rate >= _CACHE_GAIN * main]
    if not cached:
        return main, 0, 0.0
    return main, max(m for m, _ in cached), max(r for _, r in cached)


def _dtypes(names: Sequence[str] | None, device: str) -> list[str]:
    if not names:
        return list(CUDA_DTYPES if device == "cuda" else CPU_DTYPES)
    chosen = []
    for name in names:
        if device == "cuda" and name.lower() in (TF32, "tf32"):
            chosen.append(TF32)
        else:
            chosen.append(dtype_name(parse_dtype(name)))
    return chosen


def calibrate(name: str = DEFAULT_PROFILE, *, device: str = "cpu", dtypes: Sequence[str] | None = None,
              threads: Sequence[int] | None = None, quick: bool = False,
              say: Callable[[str], None] | None = None) -> DeviceProfile:
    """Measure this machine's peaks (per dtype and, on a CPU, per thread count) as a profile named
    ``name``; ``quick`` measures smaller problems (a rough profile, for tests). Nothing is stored
    here: ``devices.save`` stores it."""
    check_name(name)
    run_device(device, "calibrate")
    wanted = _dtypes(dtypes, device)
    was_threads = torch.get_num_threads()
    counts = sorted(set(threads or (1, was_threads))) if device == "cpu" else [None]
    if any(t is not None and (isinstance(t, bool) or not isinstance(t, int) or t < 1) for t in counts):
        raise InputSpecError(f"thread counts are whole numbers from 1, got {list(threads or ())}")
    sync = torch.cuda.synchronize if device == "cuda" else (lambda: None)
    largest_mm = (256 if quick else 2048) if device == "cpu" else (1024 if quick else 8192)
    largest_copy = (1 << 20 if quick else 1 << 27) if device == "cpu" else (1 << 22 if quick else 1 << 30)
    budget = 0.02 if quick else 0.2
    tf32 = torch.backends.cuda.matmul.allow_tf32
    roofs = []
    try:
        for count in counts:
            if count is not None:
                torch.set_num_threads(count)
            peaks = []
            for dtype in wanted:
                torch.backends.cuda.matmul.allow_tf32 = dtype == TF32
                real = torch.float32 if dtype == TF32 else parse_dtype(dtype)
                try:
                    peak = _matmul_peak(real, device, sync, largest_mm, budget)
                except RuntimeError as exc:  # this machine cannot multiply this dtype
                    if say:
                        say(f"burden: calibrate: no {dtype} products here ({str(exc).splitlines()[0]})")
                    continue
                peaks.append((dtype, peak))
                if say:
                    say(f"burden: calibrate: {dtype} products, {count or 'GPU'} threads: {peak / 1e9:,.1f} GFLOP/s")
            main, cache_bytes, cache_rate = _memory_roofs(_copy_rates(device, sync, largest_copy))
            if say:
                say(f"burden: calibrate: copies, {count or 'GPU'} threads: {main / 1e9:,.1f} GB/s from memory"
                    + (f", {cache_rate / 1e9:,.1f} GB/s up to {cache_bytes / 2**20:g} MiB moved" if cache_bytes
                       else ""))
            roofs.append(Roof(tuple(peaks), main, cache_bytes, cache_rate, count))
    finally:
        torch.set_num_threads(was_threads)
        torch.backends.cuda.matmul.allow_tf32 = tf32
    processor = torch.cuda.get_device_name() if device == "cuda" else (processor_name())
    stamp = datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%d %H:%M UTC")
    how = "matrix products for FLOP/s, copies for bandwidth" + (" (quick: small problems)" if quick else "")
    sources = [("every figure", f"burden calibrate on this machine: {how}")]
    capability = context = None
    if device == "cuda":
        capability = tuple(torch.cuda.get_device_capability())
        context = _cuda_context()
        sources.append(("context", "the device's used memory less the caching allocator's reserved memory, after "
                                   "a product and a convolution had loaded cuBLAS and cuDNN (other processes on the "
                                   "GPU would count too)"))
        if say:
            say(f"burden: calibrate: compute capability {capability[0]}.{capability[1]}, CUDA context "
                f"{context / 2**20:,.0f} MiB")
    return DeviceProfile(name=name, device=processor, kind=device, roofs=tuple(roofs), sources=tuple(sources),
                         measured=f"{stamp}, torch {torch.__version__}", capability=capability,
                         context_bytes=context)


def _cuda_context() -> int:
    """What this process holds on the GPU outside the caching allocator: the CUDA context with the
    libraries a training step loads (cuBLAS by a product, cuDNN by a convolution)."""
    x = torch.ones(64, 64, device="cuda")
    (x @ x).sum().item()
    torch.nn.functional.conv2d(x.view(1, 1, 64, 64), torch.ones(1, 1, 3, 3, device="cuda")).sum().item()
    torch.cuda.synchronize()
    free, total = torch.cuda.mem_get_info()
    return max(total - free - torch.cuda.memory_reserved(), 0)

