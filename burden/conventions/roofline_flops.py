"""The roofline convention: real floating-point operations, the FLOPs a roofline divides by a
device's peak (``burden.roofline``).

Matrix products and convolutions as the torch convention counts them (PyTorch's own formulas),
with their bias additions; element-wise ops by PyTorch's own ``pointwise`` tag, so that every
release's element-wise ops count without a list; normalisation, softmax, reductions, pooling and
interpolation by their rules below. Views, copies and lookups move bytes but do no arithmetic.
"""

from __future__ import annotations

from typing import Any

import torch

from ..formulas import Formula, FormulaTable, prod
from ..op_groups import ALIAS_OPS, COPY_OPS, DROPOUT_OPS, FACTORY_OPS, NORM_OPS, existing_ops
from .. import rulebook
from .base import Convention
from .torch_flops import table as torch_table

_POINTWISE: dict[Any, bool] = {}


def _per_output(*args: Any, out_shape: Any, **kwargs: Any) -> int:
    # the first output of an op with several (values and indices, output and statistics)
    first = out_shape if isinstance(out_shape, torch.Size) else out_shape[0]
    return prod(first)


def _per_input(x: Any, *args: Any, out_shape: Any, **kwargs: Any) -> int:
    return prod(x)


class RooflineTable(FormulaTable):
    """Own rules first, then the torch convention's formulas, then PyTorch's pointwise tag."""

    def lookup(self, func: torch._ops.OpOverload) -> Formula | None:
        own = self._formulas.get(func) or self._formulas.get(func.overloadpacket)
        if own is not None:
            return own
        theirs = torch_table.specific(func)
        if theirs is not None:
            return theirs
        pointwise = _POINTWISE.get(func)
        if pointwise is None:  # reading tags builds Python objects: once per op
            pointwise = _POINTWISE[func] = torch.Tag.pointwise in func.tags
        return _per_output if pointwise else super().lookup(func)


table = RooflineTable("roofline")
aten = torch.ops.aten


def _with_bias(packet: Any, bias_at: int) -> Formula:
    def formula(*args: Any, out_shape: Any, **kwargs: Any) -> int:
        products = torch_table.specific(packet.default)(*args, out_shape=out_shape, **kwargs)
        return products + (prod(out_shape) if args[bias_at] is not None else 0)

    return formula


table.register(*existing_ops("convolution"), strict=False)(_with_bias(aten.convolution, 2))
table.register(*existing_ops("_convolution"), strict=False)(_with_bias(aten._convolution, 2))
table.register(*existing_ops("addmm"), strict=False)(_with_bias(aten.addmm, 0))
table.register(*existing_ops("baddbmm"), strict=False)(_with_bias(aten.baddbmm, 0))


@table.register(*NORM_OPS, strict=False)
def batch_norm(x: Any, *args: Any, out_shape: Any, **kwargs: Any) -> int:
    # the statistics come from the batch when the op's training flag (its first bool) is set
    flags = [a for a in args if isinstance(a, bool)]
    return (5 if flags and flags[0] else 2) * prod(x)


# the overloads whose names say which statistics they use
table.register(*existing_ops("_native_batch_norm_legit_no_training", "_batch_norm_no_update"), strict=False,
               replace=True)(lambda x, *a, out_shape, **k: 2 * prod(x))
table.register(*existing_ops("_batch_norm_with_update", "_native_batch_norm_legit.no_stats"), strict=False,
               replace=True)(lambda x, *a, out_shape, **k: 5 * prod(x))
table.register(*existing_ops("native_layer_norm", "native_group_norm", "_softmax", "_log_softmax",
                             "_safe_softmax"), strict=False)(lambda x, *a, out_shape, **k: 5 * prod(x))
table.register(*existing_ops(
    "sum", "mean", "amax", "amin", "max", "min", "aminmax", "var", "std", "var_mean", "std_mean", "prod", "norm",
    "linalg_vector_norm", "logsumexp", "argmax", "argmin", "any", "all", "cumsum", "cumprod", "_adaptive_avg_pool2d",
    "_adaptive_avg_pool3d", "adaptive_max_pool2d", "adaptive_max_pool3d", "adaptive_avg_pool1d"),
    strict=False)(_per_input)


@table.register(*existing_ops("max_pool2d_with_indices", "max_pool3d_with_indices", "avg_pool2d", "avg_pool3d",
                              "max_pool2d", "avg_pool1d", "max_pool1d"), strict=False)
def pooling(x: Any, kernel: Any, *args: Any, out_shape: Any, **kwargs: Any) -> int:
    kernel = list(kernel) if isinstance(kernel, (list, tuple)) else [kernel]
    dims = len(x) - 2 if len(kernel) == 1 else len(kernel)
    window = prod(kernel * dims if len(kernel) == 1 else kernel)
    return _per_output(out_shape=out_shape) * window


for _names, _per in ((("upsample_linear1d",), 4), (("upsample_bilinear2d", "_upsample_bilinear2d_aa"), 8),
                     (("upsample_trilinear3d",), 16), (("upsample_bicubic2d", "_upsample_bicubic2d_aa"), 32)):
    table.register(*existing_ops(*_names), strict=False)(
        lambda *a, out_shape, _per=_per, **k: _per * _per_output(out_shape=out_shape))

table.zero(*ALIAS_OPS, *COPY_OPS, *DROPOUT_OPS, *FACTORY_OPS, strict=False)
table.zero(*existing_ops(
    "cat", "stack", "constant_pad_nd", "reflection_pad1d", "reflection_pad2d", "replication_pad2d", "roll", "flip",
    "repeat", "narrow", "index_put", "index_put_", "scatter", "scatter_", "_unsafe_index", "upsample_nearest1d",
    "upsample_nearest2d", "upsample_nearest3d", "_upsample_nearest_exact1d", "_upsample_nearest_exact2d",
    "_upsample_nearest_exact3d", "pixel_shuffle", "pixel_unshuffle", "channel_shuffle", "im2col", "col2im",
    "sort", "topk", "tril", "triu", "masked_scatter", "slice_scatter", "select_scatter", "diagonal",
    "nonzero", "sym_size", "sym_stride", "sym_numel", "sym_storage_offset"), strict=False)

CONVENTION = Convention(
    name="roofline",
    summary=rulebook.FLOPS["roofline"].summary,
    rules=rulebook.FLOPS["roofline"].rules,
    flops=table,
)
