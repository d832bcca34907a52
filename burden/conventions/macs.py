"""The macs convention: multiply-accumulates of conv, linear, matmul, bmm, einsum and attention only.

This is the figure ptflops, thop and fvcore print (fvcore labels it "flops"). Bias additions and
every other op cost nothing by definition.
"""

from __future__ import annotations

import torch
from torch.utils.flop_counter import sdpa_flop_count

from ..formulas import FormulaTable, attention_shape, prod
from ..op_groups import ATTENTION_OPS
from .. import rulebook
from .base import Convention

aten = torch.ops.aten
table = FormulaTable("macs", default_zero=True)


@table.register(aten.convolution, aten._convolution, strict=False)
def conv(x, w, bias, stride, padding, dilation, transposed, *rest, out_shape, **kwargs) -> int:
    return (prod(x) if transposed else prod(out_shape)) * prod(w[1:])


@table.register(aten.mm, aten.addmm, aten.bmm, aten.baddbmm, strict=False)
def matmul(*args, out_shape, **kwargs) -> int:
    a = args[-2]  # (self, a, b) for the add- variants, (a, b) otherwise
    return prod(out_shape) * a[-1]


@table.register(*ATTENTION_OPS, strict=False)
def attention(query, key, value, *rest, out_shape, **kwargs) -> int:
    # torch counts 2 per multiply-add
    return sdpa_flop_count(attention_shape(query), attention_shape(key), attention_shape(value)) // 2


CONVENTION = Convention(
    name="macs",
    summary=rulebook.FLOPS["macs"].summary,
    rules=rulebook.FLOPS["macs"].rules,
    flops=table,
)
