"""Python's garbage collector around a trace: no full collections, the caller's settings kept.

A full collection walks torch's whole heap, which costs more than a trace. Collection itself must
stay on: first-time code paths of some meta kernels leave cycles that hold tensors, and those must
die as promptly as they would without burden, or lifetimes come out longer. So only the oldest
generation's threshold is raised while a trace runs, and the caller's thresholds are put back.
``gc.freeze`` is never used: undoing it would also undo a caller's own freeze (fork servers rely
on theirs).
"""

from __future__ import annotations

import gc
from contextlib import contextmanager
from typing import Iterator


@contextmanager
def no_full_collections() -> Iterator[None]:
    """Young generations are still collected; the oldest waits until the block ends."""
    thresholds = gc.get_threshold()
    if len(thresholds) >= 3 and thresholds[0] > 0:
        gc.set_threshold(thresholds[0], thresholds[1], 1 << 30)
    try:
        yield
    finally:
        gc.set_threshold(*thresholds)


@contextmanager
def paused_gc() -> Iterator[None]:
    """No cyclic garbage collection for a while, for work that frees no tensor (counting)."""
    collecting = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        if collecting:
            gc.enable()
