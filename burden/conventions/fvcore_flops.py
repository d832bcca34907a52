"""The fvcore convention: what ``fvcore.nn.FlopCountAnalysis`` reports, computed by fvcore itself.

fvcore traces with the TorchScript JIT, which cannot run on the meta device: this convention runs
one real forward pass on the CPU with uninitialised weights, so its cost grows with the input,
and an analysis that would not fit in memory is refused up front.
"""

from __future__ import annotations

from collections import Counter

import torch
from torch import nn

from ..containers import map_tensors
from ..counting import FlopAttribution
from ..errors import ForwardError, InputSpecError
from ..machine import available_bytes, fits_in_half
from ..state import with_real_weights
from ..records import Trace
from ..trace_errors import first_line
from .. import rulebook
from .base import Convention
from .all_outputs import new_storage_bytes


def _real(x: torch.Tensor) -> torch.Tensor:
    return torch.zeros(x.shape, dtype=x.dtype) if x.device.type == "meta" else x


def _children(path: str, paths: list[str]) -> list[str]:
    depth = 0 if path == "" else path.count(".") + 1
    prefix = "" if path == "" else path + "."
    return [p for p in paths if p and p.startswith(prefix) and p.count(".") + 1 == depth + 1]


def fvcore_attribution(model: nn.Module, trace: Trace, args: tuple, kwargs: dict) -> FlopAttribution:
    from fvcore.nn import FlopCountAnalysis

    if kwargs:
        raise InputSpecError("the fvcore convention takes positional inputs only (fvcore traces model(*inputs))")
    need = sum(new_storage_bytes(trace, 4)) + sum(t.numel() * t.element_size() for t in model.parameters())
    if not fits_in_half(need):
        free = available_bytes() or 0
        raise InputSpecError(f"the fvcore convention runs a real forward pass; this one needs about "
                             f"{need / 2**30:.1f} GiB, more than half of the {free / 2**30:.1f} GiB free: "
                             f"use a smaller batch or input")
    real_model = with_real_weights(model)
    real_args = map_tensors(_real, args)
    analysis = (FlopCountAnalysis(real_model, real_args)
                .unsupported_ops_warnings(False).uncalled_modules_warnings(False).tracer_warnings("none"))
    try:
        by_module = analysis.by_module()
    except Exception as exc:  # fvcore's JIT trace refused the model: its limit, not burden's
        raise ForwardError(f"fvcore could not trace the model with the TorchScript JIT: {type(exc).__name__}: "
                           f"{first_line(exc)}; the convnet-burden, macs and torch conventions trace without "
                           f"the JIT") from None
    paths = list(trace.modules)
    # A trace cut after a module (``scale``'s trunk) holds only the modules that ran before the cut;
    # fvcore always counts the whole pass, so the modules that ran after it are left out, and
    # the cut module's ancestors must have no work of their own, which cannot be split in time.
    ran = [p for p in paths if trace.stopped_after is None or trace.modules[p].calls > 0]
    ancestors = _ancestors(trace.stopped_after) if trace.stopped_after is not None else set()
    result = FlopAttribution()
    for path in ran:
        children = _children(path, paths)
        # fvcore's einsum handle gives a float (floor(flops / 2), always whole): figures are integers
        own_flops = int(by_module.get(path, 0)) - sum(int(by_module.get(c, 0)) for c in children)
        if path in ancestors and own_flops:
            where = "the model's own forward" if path == "" else f"module {path!r}"
            raise InputSpecError(f"the fvcore convention cannot count the work up to {trace.stopped_after!r}: "
                                 f"fvcore counts whole forward passes, and {where} does {own_flops} FLOPs of its "
                                 f"own that cannot be split at that point; use convnet-burden, macs or torch")
        result.self_flops[path] = own_flops
        own = Counter(analysis.unsupported_ops(path))
        for c in children:
            own.subtract(analysis.unsupported_ops(c))
        for op, n in own.items():
            if n > 0 and path not in ancestors:
                result.add_uncounted(op, path, n)
    return result


def _ancestors(path: str) -> set[str]:
    parts = path.split(".")
    return {""} | {".".join(parts[:i]) for i in range(1, len(parts))}


CONVENTION = Convention(
    name="fvcore",
    summary=rulebook.FLOPS["fvcore"].summary,
    rules=rulebook.FLOPS["fvcore"].rules,
    flops=None,
    equals="fvcore.nn.FlopCountAnalysis",
    external=fvcore_attribution,
)
