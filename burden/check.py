"""``burden check``: each convention's figures beside what fvcore and PyTorch's counter report.

The tools run here on their own (fvcore's FlopCountAnalysis on a real CPU forward pass, PyTorch's
FlopCounterMode on the meta device and on the CPU), independently of burden's trace, so an
equality a convention claims is tested, not assumed. The ``torch`` convention claims equality with
FlopCounterMode on the meta device, where burden traces; on real CPU tensors FlopCounterMode counts
the fused CPU attention and LSTM kernels as 0, which the second run shows.
"""

from __future__ import annotations

import copy
from typing import Any, Sequence

import torch
from torch import nn

from .api import estimate
from .conventions import get_convention, list_conventions
from .figures import CheckReport, ConventionCheck, ToolCount
from .results import Estimate
from .inputs import parse_batch, parse_input_size
from .models.resolve import own_input_size, resolve_model
from .options import DEFAULT_INPUT_SIZE
from .state import on_meta, preserved_modes, with_real_weights


FLOP_COUNTER_META = "torch.utils.flop_counter.FlopCounterMode on meta"
FLOP_COUNTER_CPU = "torch.utils.flop_counter.FlopCounterMode on cpu"


def flop_counter_mode(model: nn.Module, x: torch.Tensor, device: str = "meta") -> ToolCount:
    """PyTorch's own counter over one forward pass on ``device``. On real CPU tensors it counts the
    fused CPU kernels it has no formula for (attention, LSTM) as 0, so the two runs can differ."""
    from torch.utils.flop_counter import FlopCounterMode

    if device == "meta":
        run_model = model if on_meta(model) else copy.deepcopy(model).to("meta")
    else:
        run_model = with_real_weights(model, device)
    with FlopCounterMode(display=False) as counter, torch.no_grad():
        run_model(torch.zeros(x.shape, dtype=x.dtype, device=device))
    root = type(model).__name__
    by_module = {}
    for name, ops in counter.get_flop_counts().items():
        if name == "Global":
            continue
        path = "" if name == root else name.removeprefix(root + ".")
        by_module[path] = sum(ops.values())
    tool = FLOP_COUNTER_META if device == "meta" else FLOP_COUNTER_CPU
    return ToolCount(tool, counter.get_total_flops(), by_module)


def fvcore_analysis(model: nn.Module, x: torch.Tensor) -> ToolCount:
    from fvcore.nn import FlopCountAnalysis

    analysis = (FlopCountAnalysis(with_real_weights(model), (torch.zeros(x.shape, dtype=x.dtype),))
                .unsupported_ops_warnings(False).uncalled_modules_warnings(False).tracer_warnings("none"))
    by_module = {path: int(n) for path, n in analysis.by_module().items()}  # einsum's come as whole floats
    return ToolCount("fvcore.nn.FlopCountAnalysis", int(analysis.total()), by_module)


def check(model: nn.Module | str, input_size: Any = None, *, batch_size: int = 1,
          conventions: Sequence[str] | None = None) -> CheckReport:
    batch = parse_batch(batch_size)
    name, module = resolve_model(model) if isinstance(model, str) else (type(model).__name__, model)
    size = (parse_input_size(input_size) if input_size is not None
            else own_input_size(model, module) or DEFAULT_INPUT_SIZE)
    names = list(conventions or list_conventions())
    estimates: dict[str, Estimate] = {c: estimate(module, size, batch_size=batch, convention=c) for c in names}
    with preserved_modes(module):
        x = torch.zeros((batch, *size), device="meta")
        tools = {FLOP_COUNTER_META: flop_counter_mode(module, x),
                 FLOP_COUNTER_CPU: flop_counter_mode(module, x, "cpu"),
                 "fvcore.nn.FlopCountAnalysis": fvcore_analysis(module, x)}
    checks = []
    for c in names:
        e, claim = estimates[c], get_convention(c).equals
        tool = tools.get(claim) if claim else None
        diffs: list[tuple[str, int, int]] = []
        if tool is not None:
            for layer in e.layers:
                theirs = tool.by_module.get(layer.name, 0)
                if layer.flops != theirs:
                    diffs.append((layer.name, layer.flops, theirs))
        checks.append(ConventionCheck(c, e.flops, claim, tool.total if tool else None, tuple(diffs)))
    return CheckReport(name, size, batch, tuple(checks), tuple(tools.values()))
