"""The library API: ``estimate`` a model's burden. The CLI is a thin layer over it."""

from __future__ import annotations

from contextlib import contextmanager
from typing import Any, Iterator, Sequence

import torch
from torch import nn

from .conventions import get_convention
from .counting import count
from .errors import InputSpecError
from .figures import Estimate
from .inputs import dtype_name, parse_batch, parse_dtype, parse_input_size
from .models.resolve import resolve_model
from .trace import trace_forward


@contextmanager
def preserved_modes(model: nn.Module) -> Iterator[None]:
    """Evaluate in eval mode, then give every submodule back the mode it had, even after an error."""
    modes = [(m, m.training) for m in model.modules()]
    try:
        model.eval()
        yield
    finally:
        for module, training in modes:
            module.training = training


def _trace_dtype(model: nn.Module) -> torch.dtype:
    for t in list(model.parameters()) + list(model.buffers()):
        if t.is_floating_point():
            return t.dtype
    return torch.float32


def estimate(model: nn.Module | str, input_size: int | str | Sequence[int] = (3, 224, 224), *,
             batch_size: int = 1, dtype: str | torch.dtype = torch.float32,
             convention: str = "convnet-burden", device: str = "meta") -> Estimate:
    """Parameter memory, feature memory and FLOPs of ``model`` for one forward pass.

    ``model`` is an ``nn.Module`` or a name (``burden.list_models()``, ``pkg.module:factory``).
    ``input_size`` is the per-sample shape, ``(3, 224, 224)``, or ``224`` for a square RGB image.
    The model comes back as it was: same device, dtype, mode, flags and hooks.
    """
    size = parse_input_size(input_size)
    batch = parse_batch(batch_size)
    analysis_dtype = parse_dtype(dtype)
    rules = get_convention(convention)
    if device not in ("meta", "cpu", "cuda") and not str(device).startswith("cuda:"):
        raise InputSpecError(f"unknown device {device!r}; use 'meta' (default) or a real device such as 'cpu'")
    name, module = (resolve_model(model) if isinstance(model, str) else (type(model).__name__, model))
    if not isinstance(module, nn.Module):
        raise InputSpecError(f"expected an nn.Module or a model name, got {type(model).__name__}")

    meta = device == "meta"
    x = torch.zeros((batch, *size), dtype=_trace_dtype(module), device="meta" if meta else device)
    with preserved_modes(module), torch.no_grad():
        trace = trace_forward(module, (x,), meta=meta)
    elsize = torch.empty((), dtype=analysis_dtype).element_size()
    layers, uncounted, totals = count(module, trace, rules, elsize)
    return Estimate(model=name, input=tuple(size), batch=batch, dtype=dtype_name(analysis_dtype),
                    convention=rules.name, params=totals.params, trainable_params=totals.trainable_params,
                    param_bytes=totals.param_bytes, feature_bytes=totals.feature_bytes, flops=totals.flops,
                    layers=layers, uncounted_ops=uncounted)


def describe(estimate_: Estimate) -> dict[str, Any]:
    return estimate_.to_dict()
