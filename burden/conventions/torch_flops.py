"""The torch convention: exactly what ``torch.utils.flop_counter.FlopCounterMode`` counts on the
meta device, where burden traces.

Two FLOPs per multiply-add, matmul-like ops only, with PyTorch's own formulas read live from its
``flop_registry`` (so formulas a user registers there count too). burden runs attention with the
kernel the CPU would pick (its fused flash kernel, for which PyTorch's registry has no formula),
while FlopCounterMode on meta sees the math path's matrix products: the fused CPU kernels count
what those products count, so the figures stay equal. On real CPU tensors FlopCounterMode itself
counts the fused CPU attention and LSTM kernels as 0.
"""

from __future__ import annotations

from typing import Any

import torch
from torch.utils import flop_counter

from ..containers import map_leaves
from ..formulas import Formula, FormulaTable, attention_shape
from ..op_groups import existing_ops
from .. import rulebook
from .base import Convention


class TorchTable(FormulaTable):
    """burden's own registrations first, then PyTorch's registry as it is at lookup time."""

    def specific(self, func: torch._ops.OpOverload) -> Formula | None:
        """The formula this table or PyTorch's registry has for ``func``; None for an op that counts
        0 only because the convention counts nothing else."""
        own = self._formulas.get(func) or self._formulas.get(func.overloadpacket)
        if own is not None:
            return own
        theirs = flop_counter.flop_registry.get(func.overloadpacket)
        return _adapt(theirs) if theirs is not None else None

    def lookup(self, func: torch._ops.OpOverload) -> Formula | None:
        return self.specific(func) or super().lookup(func)


def _meta(x: Any) -> Any:
    return torch.empty(x, device="meta") if isinstance(x, torch.Size) else x


def _adapt(formula: Formula) -> Formula:
    shape_formula = getattr(formula, "__wrapped__", None)  # set by torch's shape_wrapper
    if shape_formula is not None:
        return shape_formula

    def raw(*args: Any, out_shape: Any, **kwargs: Any) -> int:  # formulas registered with get_raw=True
        args, kwargs, out = map_leaves(_meta, (args, kwargs, out_shape))
        return formula(*args, out_val=out, **kwargs)

    return raw


table = TorchTable("torch", default_zero=True)


@table.register(*existing_ops("_scaled_dot_product_flash_attention_for_cpu"), strict=False)
def cpu_attention(query, key, value, *rest, out_shape, **kwargs) -> int:
    return flop_counter.sdpa_flop_count(*map(attention_shape, (query, key, value)))


@table.register(*existing_ops("_scaled_dot_product_flash_attention_for_cpu_backward"), strict=False)
def cpu_attention_backward(grad_out, query, key, value, *rest, out_shape, **kwargs) -> int:
    return flop_counter.sdpa_backward_flop_count(*map(attention_shape, (grad_out, query, key, value)))

CONVENTION = Convention(
    name="torch",
    summary=rulebook.FLOPS["torch"].summary,
    rules=rulebook.FLOPS["torch"].rules,
    flops=table,
    equals="torch.utils.flop_counter.FlopCounterMode on meta",
    backward=table,  # PyTorch's registry has the backward formulas (convolution_backward, ...)
)
