"""Named counting conventions.

A FLOP convention is a formula table (or, for ``fvcore``, the tool itself) plus its rules in
words; a memory convention is a rule that gives each traced op's feature bytes. They are chosen
apart: ``convention=`` for FLOPs, ``memory=`` for feature memory.
"""

from __future__ import annotations

import difflib
from dataclasses import dataclass
from typing import Any, Callable

from torch import nn

from ..counting import FlopAttribution, attribute_with_table
from ..errors import InputSpecError
from ..formulas import FormulaTable
from ..records import Trace

# (trace, bytes per floating-point element) -> the feature bytes each op's outputs add, per event
MemoryRule = Callable[[Trace, int], list[int]]
# (model, trace, forward args, forward kwargs) -> FLOPs per module
Attribution = Callable[[nn.Module, Trace, tuple, dict], FlopAttribution]


@dataclass(frozen=True)
class Convention:
    name: str
    summary: str
    rules: tuple[tuple[str, str], ...]  # (what, how it counts), shown in every report
    flops: FormulaTable | None  # None: the figures come from another tool
    memory: str = "convnet-burden"  # the memory convention used unless another is asked for
    equals: str | None = None  # the tool whose figures this convention claims to reproduce exactly
    external: Attribution | None = None
    backward: FormulaTable | None = None  # rules for the ops autograd runs; None: no backward counts

    def attribute(self, model: nn.Module, trace: Trace, args: tuple, kwargs: dict) -> FlopAttribution:
        if self.external is not None:
            return self.external(model, trace, args, kwargs)
        assert self.flops is not None
        return attribute_with_table(self.flops, model, trace)


@dataclass(frozen=True)
class MemoryConvention:
    name: str
    summary: str
    rule: MemoryRule


_CONVENTIONS: dict[str, Convention] = {}
_MEMORY: dict[str, MemoryConvention] = {}


def register_convention(convention: Convention) -> Convention:
    if convention.name in _CONVENTIONS:
        raise ValueError(f"convention {convention.name!r} is already registered")
    _CONVENTIONS[convention.name] = convention
    return convention


def register_memory_convention(convention: MemoryConvention) -> MemoryConvention:
    if convention.name in _MEMORY:
        raise ValueError(f"memory convention {convention.name!r} is already registered")
    _MEMORY[convention.name] = convention
    return convention


def _pick(kind: str, name: str, known: dict[str, Any]) -> Any:
    try:
        return known[name]
    except KeyError:
        close = difflib.get_close_matches(str(name), list(known), n=1)
        hint = f"; did you mean {close[0]}?" if close else f"; known: {', '.join(known)}"
        raise InputSpecError(f"unknown {kind} {name!r}{hint}") from None


def list_conventions() -> list[str]:
    _load()
    return list(_CONVENTIONS)


def get_convention(name: str) -> Convention:
    _load()
    return _pick("convention", name, _CONVENTIONS)


def list_memory_conventions() -> list[str]:
    _load()
    return list(_MEMORY)


def get_memory_convention(name: str) -> MemoryConvention:
    _load()
    return _pick("memory convention", name, _MEMORY)


def _load() -> None:
    # registration side effects, in the order the conventions are listed
    from . import convnet_burden  # noqa: F401
    from . import convnet_backward  # noqa: F401
    from . import macs  # noqa: F401
    from . import fvcore_flops  # noqa: F401
    from . import torch_flops  # noqa: F401
    from . import all_outputs  # noqa: F401
