"""The boundary of burden's public functions: no exception but a ``BurdenError`` leaves them, and
analyses of one model object take turns.

An exception burden did not expect is a bug in burden: it becomes an ``InternalError`` that says
so and what to report. ``BURDEN_DEBUG=1`` lets the original through, with its traceback.

An analysis hooks the model it is given and swaps its tensors while it runs (and puts everything
back): two threads analysing the same ``nn.Module`` at once would see each other's. So a call
whose model is an ``nn.Module`` holds that module's own lock; analyses of other models, and of
models given by name (built per thread), run at the same time.
"""

from __future__ import annotations

import functools
import inspect
import os
import threading
import weakref
from contextlib import nullcontext
from typing import Any, Callable, ContextManager, TypeVar

from torch import nn

from .errors import BurdenError, InternalError
from .trace_errors import first_line

F = TypeVar("F", bound=Callable[..., Any])
_TURNS: weakref.WeakKeyDictionary[nn.Module, threading.RLock] = weakref.WeakKeyDictionary()
_TURNS_LOCK = threading.Lock()


def _turn(model: Any) -> ContextManager[Any]:
    """The model's own lock (re-entrant: ``compare`` calls ``estimate``), or nothing for a name."""
    if not isinstance(model, nn.Module):
        return nullcontext()
    with _TURNS_LOCK:
        lock = _TURNS.get(model)
        if lock is None:
            lock = _TURNS[model] = threading.RLock()
    return lock


def guarded(fn: F) -> F:
    signature = inspect.signature(fn)

    @functools.wraps(fn)
    def call(*args: Any, **kwargs: Any) -> Any:
        bound = signature.bind(*args, **kwargs)  # a misspelt or missing argument is the caller's TypeError
        try:
            with _turn(bound.arguments.get("model")):
                return fn(*args, **kwargs)
        except BurdenError:
            raise
        except Exception as exc:
            if os.environ.get("BURDEN_DEBUG"):
                raise
            raise InternalError(f"internal error in burden (a bug in burden, please report it with the model and "
                                f"the call; BURDEN_DEBUG=1 shows the traceback): {type(exc).__name__}: "
                                f"{first_line(exc)}") from exc
    return call  # type: ignore[return-value]
