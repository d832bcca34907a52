"""What a convention is: FLOP rules (a formula table, or another tool) with their rules in words,
and memory rules. Plain definitions; the conventions themselves live in the sibling modules.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from typing import Any, Callable, Mapping

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

    def with_formulas(self, formulas: Mapping[Any, Callable[..., int]]) -> "Convention":
        """This convention with ``formulas`` (op or module type -> formula) taking precedence, for
        one analysis; the convention's own tables are left as they are."""
        if not formulas:
            return self
        if self.flops is None:
            raise InputSpecError(f"the {self.name} convention takes its figures from {self.equals}, so it has no "
                                 f"formulas to add to; use convnet-burden, macs or torch")
        backward = self.backward.overlay(formulas) if self.backward is not None else None
        return replace(self, flops=self.flops.overlay(formulas), backward=backward)

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


