"""Python's garbage collector around a trace: no costly full collections, the caller's state kept.

A full collection walks torch's whole heap, which costs more than a trace. Collection itself must
stay on: first-time code paths of some meta kernels leave cycles that hold tensors, and those must
die as promptly as they would without burden, or lifetimes come out longer. So the objects that
exist when a trace starts are frozen out of collection while it runs (``gc.freeze``), and thawed
after; a caller who froze objects of their own (fork servers do) keeps them frozen: then nothing is
frozen or thawed, and only the oldest generation's threshold is raised while the trace runs.
"""

from __future__ import annotations

import gc
from contextlib import contextmanager
from typing import Iterator


@contextmanager
def no_full_collections() -> Iterator[None]:
    """Young objects are still collected; the heap that existed before the block is left alone."""
    if gc.get_freeze_count() == 0:
        gc.freeze()
        try:
            yield
        finally:
            gc.unfreeze()  # the permanent generation was empty: thawing gives back exactly that
        return
    thresholds = gc.get_threshold()  # the caller's own freeze must survive: no freeze of ours
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
