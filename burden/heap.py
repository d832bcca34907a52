"""Python's garbage collector around a trace: no costly full collections, the caller's state kept.

A full collection walks torch's whole heap, which costs more than a trace. Collection itself must
stay on: first-time code paths of some meta kernels leave cycles that hold tensors, and those must
die as promptly as they would without burden, or lifetimes come out longer. So the objects that
exist when a trace starts are frozen out of collection while it runs (``gc.freeze``), and thawed
after; a caller who froze objects of their own (fork servers do) keeps them frozen: then nothing is
frozen or thawed, and only the oldest generation's threshold is raised while the trace runs.

The collector is the process's, so traces in several threads share one change: the first to start
makes it and the last to end undoes it, and the caller's settings come back exactly.
"""

from __future__ import annotations

import gc
import threading
from contextlib import contextmanager
from typing import Any, Callable, Iterator


class _Shared:
    """One change to the collector, made by the first of the blocks running at once and undone by
    the last of them."""

    def __init__(self, make: Callable[[], Callable[[], None]]) -> None:
        self.make = make  # makes the change, returns its undoing
        self.lock = threading.Lock()
        self.users = 0
        self.undo: Callable[[], None] = lambda: None

    @contextmanager
    def held(self) -> Iterator[None]:
        with self.lock:
            if self.users == 0:
                self.undo = self.make()
            self.users += 1
        try:
            yield
        finally:
            with self.lock:
                self.users -= 1
                if self.users == 0:
                    self.undo()


def _freeze() -> Callable[[], None]:
    if gc.get_freeze_count() == 0:
        gc.freeze()
        return gc.unfreeze  # the permanent generation was empty: thawing gives back exactly that
    thresholds = gc.get_threshold()  # the caller's own freeze must survive: no freeze of ours
    if len(thresholds) >= 3 and thresholds[0] > 0:
        gc.set_threshold(thresholds[0], thresholds[1], 1 << 30)
    return lambda: gc.set_threshold(*thresholds)


def _pause() -> Callable[[], None]:
    collecting = gc.isenabled()
    gc.disable()
    return gc.enable if collecting else (lambda: None)


_FROZEN = _Shared(_freeze)
_PAUSED = _Shared(_pause)


def no_full_collections() -> Any:
    """Young objects are still collected; the heap that existed before the block is left alone."""
    return _FROZEN.held()


def paused_gc() -> Any:
    """No cyclic garbage collection for a while, for work that frees no tensor (counting)."""
    return _PAUSED.held()
