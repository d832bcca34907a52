"""The error boundary: no exception but a ``BurdenError`` leaves burden's public functions.

An exception burden did not expect is a bug in burden: it becomes an ``InternalError`` that says
so and what to report. ``BURDEN_DEBUG=1`` lets the original through, with its traceback.
"""

from __future__ import annotations

import functools
import inspect
import os
from typing import Any, Callable, TypeVar

from .errors import BurdenError, InternalError
from .trace_errors import first_line

F = TypeVar("F", bound=Callable[..., Any])


def guarded(fn: F) -> F:
    signature = inspect.signature(fn)

    @functools.wraps(fn)
    def call(*args: Any, **kwargs: Any) -> Any:
        signature.bind(*args, **kwargs)  # a misspelt or missing argument is the caller's TypeError, as Python says
        try:
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
