"""Named counting conventions, listed in the order users see them.

A FLOP convention is a formula table (or, for ``fvcore``, the tool itself) plus its rules in
words; a memory convention is a rule that gives each traced op's feature bytes. They are chosen
apart: ``convention=`` for FLOPs, ``memory=`` for feature memory. Each convention builds its own
tables in its own module; this module only lists them.
"""

from __future__ import annotations

from typing import Any, Callable

from ..errors import InputSpecError
from ..formulas import Formula, Target
from ..suggest import did_you_mean
from . import all_outputs, convnet_backward, convnet_burden, fvcore_flops, macs, roofline_flops, torch_flops
from .base import Convention, MemoryConvention

_CONVENTIONS: dict[str, Convention] = {c.name: c for c in (
    convnet_backward.CONVENTION, macs.CONVENTION, fvcore_flops.CONVENTION, torch_flops.CONVENTION,
    roofline_flops.CONVENTION)}
_MEMORY: dict[str, MemoryConvention] = {m.name: m for m in (convnet_burden.MEMORY, all_outputs.MEMORY)}

__all__ = ["Convention", "MemoryConvention", "get_convention", "get_memory_convention", "list_conventions",
           "list_memory_conventions", "register_formula"]


def _pick(kind: str, name: str, known: dict[str, Any]) -> Any:
    try:
        return known[name]
    except KeyError:
        raise InputSpecError(f"unknown {kind} {name!r}{did_you_mean(name, list(known))}") from None


def list_conventions() -> list[str]:
    return list(_CONVENTIONS)


def get_convention(name: str) -> Convention:
    return _pick("convention", name, _CONVENTIONS)


def list_memory_conventions() -> list[str]:
    return list(_MEMORY)


def get_memory_convention(name: str) -> MemoryConvention:
    return _pick("memory convention", name, _MEMORY)


def register_formula(*targets: Target, convention: str = "convnet-burden",
                     replace: bool = False) -> Callable[[Formula], Formula]:
    """Register a FLOP formula for one or more aten ops under a convention, without editing burden.

    ``@burden.register_formula(torch.ops.aten.gelu)`` then ``def gelu(x, *args, out_shape, **kw): ...``,
    with every tensor argument replaced by its shape. For a module type,
    ``@burden.register_formula(MyBlock)`` then ``def f(module, *input_shapes, out_shape): ...``; it is
    called once per call of such a module and replaces the count of the ops inside it.
    A second registration of the same target in the same convention raises ``ValueError``, unless
    ``replace=True`` (a notebook cell run again). For one analysis only, pass
    ``formulas={target: formula}`` to ``burden.estimate`` instead.
    """
    rules = get_convention(convention)
    if rules.flops is None:
        raise InputSpecError(f"the {rules.name} convention takes its figures from {rules.equals}; it has no "
                             f"formula table")
    return rules.flops.register(*targets, replace=replace)
