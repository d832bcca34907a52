"""The formula registry: shape-only FLOP formulas per aten op, one table per convention.

A formula receives the op's arguments with every tensor replaced by its shape (``torch.Size``)
and the output shape(s) as ``out_shape``, as in ``torch.utils.flop_counter``; it returns an int.
Registering the same op twice in one table is refused. Ops known to cost nothing are kept apart
from ops with no rule: the first count as 0, the second are reported as uncounted.
"""

from __future__ import annotations

import math
from typing import Any, Callable, Iterable, Mapping

import torch
from torch import nn
from .containers import map_leaves
from .errors import InternalError
from .op_groups import PARALLEL_NAMESPACES, never_recorded
from .records import OpEvent, TensorInfo
from .trace_errors import first_line

Formula = Callable[..., int]
Target = Any  # an OpOverloadPacket (aten.add) or an OpOverload (aten.add.Tensor)

_ZERO: Formula = lambda *args, **kwargs: 0  # noqa: E731


def prod(shape: Iterable[int]) -> int:
    return math.prod(int(d) for d in shape)


def attention_shape(shape: Any) -> torch.Size:
    """An attention operand as (batch, heads, length, width), the layout PyTorch's attention FLOP
    formulas expect: the fused CPU kernel also takes (batch x heads, length, width)."""
    dims = [int(d) for d in shape]
    if len(dims) == 3:
        dims = [1, *dims]
    elif len(dims) > 4:
        dims = [math.prod(dims[:-3]), *dims[-3:]]
    return torch.Size(dims)


def _key(target: Target) -> Any:
    if isinstance(target, (torch._ops.OpOverloadPacket, torch._ops.OpOverload)):
        return target
    if isinstance(target, type) and issubclass(target, nn.Module):
        return target
    raise TypeError(f"a formula target must be an op such as torch.ops.aten.add or an nn.Module subclass, "
                    f"not {target!r}")


class FormulaTable:
    """FLOP formulas of one convention, keyed by op or by module type.

    An op formula gets the op's arguments with tensors replaced by shapes and ``out_shape``.
    A module formula gets ``(module, *input_shapes, out_shape=...)`` once per call, and replaces
    the count of every op inside that module. With ``default_zero`` an op with no formula costs
    nothing by definition (a convention that counts only some ops); otherwise it is uncounted.
    """

    def __init__(self, name: str, default_zero: bool = False, base: "FormulaTable | None" = None) -> None:
        self.name = name
        self.default_zero = default_zero
        self.base = base  # rules this table extends: looked up when the table has none of its own
        self._formulas: dict[Any, Formula] = {}
        self._zero: set[Any] = set()

    def _add(self, target: Target, formula: Formula, zero: bool, strict: bool = True, replace: bool = False) -> None:
        key = _key(target)
        if never_recorded(key):
            if not strict:
                return
            raise ValueError(f"{self.name}: a formula for {key} would never be used: PyTorch breaks {key} into "
                             f"other ops before burden sees it (it is CompositeImplicitAutograd); register the "
                             f"formula for the ops it becomes, or for the module type that calls it")
        if key in self._formulas and not replace:
            raise ValueError(f"{self.name}: a formula for {key} is already registered (replace=True replaces it)")
        self._zero.discard(key)
        self._formulas[key] = formula
        if zero:
            self._zero.add(key)

    def register(self, *targets: Target, strict: bool = True, replace: bool = False) -> Callable[[Formula], Formula]:
        """Decorator: ``@table.register(aten.mm, aten.bmm)``. A target burden never sees (an op
        PyTorch always decomposes first) is refused, or with ``strict=False`` left out: built-in
        rules name ops that decompose in some torch releases and not in others."""

        def wrap(formula: Formula) -> Formula:
            for target in targets:
                self._add(target, formula, zero=False, strict=strict, replace=replace)
            return formula

        return wrap

    def zero(self, *targets: Target, strict: bool = True) -> None:
        """Mark ops as costing nothing under this convention (views, copies, BN folded away...)."""
        for target in targets:
            self._add(target, _ZERO, zero=True, strict=strict)

    def unregister(self, target: Target) -> None:
        """Forget the formula of ``target`` (nothing happens if it has none)."""
        key = _key(target)
        self._formulas.pop(key, None)
        self._zero.discard(key)

    def lookup(self, func: torch._ops.OpOverload) -> Formula | None:
        formula = self._formulas.get(func) or self._formulas.get(func.overloadpacket)
        if formula is None and self.base is not None:
            formula = self.base.lookup(func)
        return _ZERO if formula is None and self.default_zero else formula

    def module_formula(self, module: nn.Module) -> Formula | None:
        for cls in type(module).__mro__:
            if cls in self._formulas:
                return self._formulas[cls]
        return self.base.module_formula(module) if self.base is not None else None

    def has_module_formulas(self) -> bool:
        return any(isinstance(k, type) for k in self._formulas) or (
            self.base is not None and self.base.has_module_formulas())

    def overlay(self, formulas: Mapping[Target, Formula]) -> "FormulaTable":
        """A table with ``formulas`` first and this table behind them, for one analysis."""
        table = FormulaTable(f"{self.name} with the call's formulas", default_zero=self.default_zero, base=self)
        for target, formula in formulas.items():
            table._add(target, formula, zero=False)
        return table

    def covers(self, func: torch._ops.OpOverload) -> bool:
        return self.lookup(func) is not None

    def flops(self, event: OpEvent) -> int | None:
        """FLOPs of one recorded op, or None when the table has no rule for it. A parallel engine's
        collectives and bookkeeping (``PARALLEL_NAMESPACES``) move bytes and do no arithmetic under any
        convention, unless a table gives them a formula of its own."""
        formula = self.lookup(event.func)
        if formula is None and event.func.namespace in PARALLEL_NAMESPACES:
            return 0
        if formula is None:
            return None
        if formula is _ZERO:
            return 0
        args, kwargs, out_shape = _shapes(event.args), _shapes(event.kwargs), _shapes(event.out)
        try:
            return int(formula(*args, out_shape=out_shape, **kwargs))
        except Exception as exc:
            raise formula_failure(self.name, event.name, event.module, (args, kwargs), exc) from None

    def ops(self) -> list[str]:
        return sorted(str(k) for k in self._formulas)


def _shapes(value: Any) -> Any:
    """``value`` with every TensorInfo replaced by its shape."""
    return map_leaves(lambda leaf: leaf.shape if isinstance(leaf, TensorInfo) else leaf, value)


def formula_failure(table: str, target: str, module: str, shapes: Any, exc: Exception) -> InternalError:
    where = f"layer {module}" if module else "the model's own forward"
    return InternalError(f"the {table} formula for {target} failed at {where} on {shapes}: "
                         f"{type(exc).__name__}: {first_line(exc)} (a bug in burden if the formula is one of "
                         f"its own rules, please report it; otherwise a bug in the registered formula)")
