"""Named counting conventions: a FLOP formula table, a feature-memory rule, and the rules in words."""

from __future__ import annotations

import difflib
from dataclasses import dataclass
from typing import Callable

from ..errors import InputSpecError
from ..formulas import FormulaTable
from ..trace import Trace

# (trace, bytes per floating-point element) -> the feature bytes each op's outputs add, per event
MemoryRule = Callable[[Trace, int], list[int]]


@dataclass(frozen=True)
class Convention:
    name: str
    summary: str
    rules: tuple[tuple[str, str], ...]  # (what, how it counts), shown in every report
    flops: FormulaTable
    memory: MemoryRule


_CONVENTIONS: dict[str, Convention] = {}


def register_convention(convention: Convention) -> Convention:
    if convention.name in _CONVENTIONS:
        raise ValueError(f"convention {convention.name!r} is already registered")
    _CONVENTIONS[convention.name] = convention
    return convention


def list_conventions() -> list[str]:
    _load()
    return list(_CONVENTIONS)


def get_convention(name: str) -> Convention:
    _load()
    try:
        return _CONVENTIONS[name]
    except KeyError:
        close = difflib.get_close_matches(name, list(_CONVENTIONS), n=1)
        hint = f"; did you mean {close[0]}?" if close else f"; known: {', '.join(_CONVENTIONS)}"
        raise InputSpecError(f"unknown convention {name!r}{hint}") from None


def _load() -> None:
    from . import convnet_burden  # noqa: F401  (registers itself)
