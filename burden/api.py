"""The library API: ``estimate`` one model, ``compare`` several, ``scale`` a trunk over input sizes.

The CLI is a thin layer over these functions. Every argument is validated before any model is
built or traced.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Iterable, Sequence

import torch
from torch import nn

from .comparison import Comparison
from .conventions import Convention, MemoryConvention, get_convention, get_memory_convention
from .counting import Totals, count
from .errors import BurdenError, InputSpecError
from .figures import Estimate, LayerFigures, TrainingFigures, UncountedOp
from .inputs import (DEFAULT_SCALES, dtype_name, materialize_inputs, parse_batch, parse_dtype, parse_input_size,
                     parse_scales)
from .models.resolve import resolve_model
from .scaling import ScaleRow, ScaleTable
from .state import preserved_modes, with_real_weights
from .memory import LiveMemory, inference_peak, trace_lifetimes
from .trace import Trace, iter_tensors, paused_gc


def _trace_dtype(model: nn.Module) -> torch.dtype:
    for t in list(model.parameters()) + list(model.buffers()):
        if t.is_floating_point():
            return t.dtype
    return torch.float32


def _check_device(device: str | torch.device) -> bool:
    """True for the meta device; a real device must exist here."""
    try:
        dev = torch.device(device)
    except (RuntimeError, TypeError):
        raise InputSpecError(f"unknown device {device!r}; use 'meta' (default) or a real device such as 'cpu'") from None
    if dev.type == "cuda" and not torch.cuda.is_available():
        raise InputSpecError("device 'cuda' asked for, but no CUDA device is available")
    return dev.type == "meta"


@dataclass(frozen=True)
class _Request:
    """A validated analysis request."""

    size: tuple[int, ...]
    batch: int
    dtype: torch.dtype
    convention: Convention
    memory: MemoryConvention
    meta: bool
    device: str

    @property
    def elsize(self) -> int:
        return torch.empty((), dtype=self.dtype).element_size()


def _request(input_size: Any, batch_size: Any, dtype: Any, convention: str, device: Any,
             memory: str | None = None) -> _Request:
    rules = get_convention(convention)
    return _Request(size=parse_input_size(input_size), batch=parse_batch(batch_size), dtype=parse_dtype(dtype),
                    convention=rules, memory=get_memory_convention(memory or rules.memory),
                    meta=_check_device(device), device=str(device))


def _model(model: nn.Module | str, device: str = "meta") -> tuple[str, nn.Module]:
    """The module to analyse. A model given by name is built on meta; for a real device it gets
    uninitialised weights there (values never matter, only shapes)."""
    if isinstance(model, str):
        name, module = resolve_model(model)
        if torch.device(device).type != "meta":
            module = with_real_weights(module, device)
        return name, module
    if not isinstance(model, nn.Module):
        raise InputSpecError(f"expected an nn.Module or a model name, got {type(model).__name__}")
    return type(model).__name__, model


@dataclass(frozen=True)
class _Analysis:
    trace: Trace
    args: tuple
    kwargs: dict
    layers: tuple[LayerFigures, ...]
    uncounted: tuple[UncountedOp, ...]
    totals: Totals
    live: LiveMemory


def _analyse(module: nn.Module, req: _Request, inputs: Any = None, stop_after: str | None = None) -> _Analysis:
    """Trace one forward pass and count it under the request's conventions."""
    target = "meta" if req.meta else req.device
    if inputs is None:
        args, kwargs = (torch.zeros((req.batch, *req.size), dtype=_trace_dtype(module), device=target),), {}
    else:
        args, kwargs = materialize_inputs(inputs, device=target, dtype=_trace_dtype(module))
    with preserved_modes(module), torch.no_grad():
        trace = trace_lifetimes(module, args, kwargs, meta=req.meta, stop_after=stop_after)
        flops = req.convention.attribute(module, trace, args, kwargs)
    with paused_gc():  # counting frees no tensor
        memory = req.memory.rule(trace, req.elsize)
        layers, uncounted, totals = count(module, trace, flops, memory, req.elsize)
        return _Analysis(trace, args, kwargs, layers, uncounted, totals, inference_peak(trace, req.elsize))


def _training(module: nn.Module, req: _Request, args: tuple, kwargs: dict, optimizer: str) -> TrainingFigures:
    from .training import training_step

    step = training_step(module, args, kwargs, optimizer=optimizer, elsize=req.elsize, meta=req.meta,
                         convention=req.convention.name)
    return TrainingFigures(optimizer=optimizer, gradient_bytes=step.gradient_bytes,
                           optimizer_bytes=step.optimizer_bytes, saved_activation_bytes=step.saved_activation_bytes,
                           backward_peak_bytes=step.backward_peak_bytes, training_peak_bytes=step.training_peak_bytes,
                           forward_flops=step.forward_flops, backward_flops=step.backward_flops,
                           backward_uncounted_ops=step.backward_uncounted)


MODES = ("inference", "training")


def _describe_inputs(args: tuple, kwargs: dict) -> tuple[tuple[int, ...], int]:
    """The per-sample shape and batch of the first tensor input, as the summary shows them."""
    for leaf in iter_tensors((args, kwargs)):
        if leaf.dim() > 0:
            return tuple(leaf.shape[1:]), int(leaf.shape[0])
    return (), 1


def estimate(model: nn.Module | str, input_size: int | str | Sequence[int] = (3, 224, 224), *,
             batch_size: int = 1, dtype: str | torch.dtype = torch.float32, convention: str = "convnet-burden",
             memory: str | None = None, inputs: Any = None, device: str = "meta", mode: str = "inference",
             optimizer: str = "adam") -> Estimate:
    """Parameter memory, feature memory and FLOPs of ``model`` for one forward pass.

    ``model`` is an ``nn.Module`` or a name: ``burden.list_models()``, ``package.module:factory``,
    ``torchvision:NAME`` or ``timm:NAME``. ``input_size`` is the per-sample shape, ``(3, 224, 224)``,
    or ``224`` for a square RGB image, and ``batch_size`` is prepended. For models that take several
    inputs, keyword inputs or nested structures, pass ``inputs`` instead: a tuple of positional
    arguments, or a dict of keyword arguments (``{"args": (...), "kwargs": {...}}`` for both), whose
    tensors are example tensors, ``torch.Size`` shapes or ``burden.TensorSpec``; their shapes include
    the batch. ``convention`` names the FLOP rules (``burden.list_conventions()``) and ``memory`` the
    feature-memory rules (default: the convention's own). Every estimate also gives the inference
    peak (buffers freed as eager PyTorch frees them); ``mode="training"`` adds one training step
    with ``optimizer`` (sgd, momentum, adam, adamw): saved activations, gradients, optimizer state,
    the step's peak and the backward FLOPs. The model comes back as it was: same device, dtype,
    mode, flags and hooks.
    """
    req = _request(input_size, batch_size, dtype, convention, device, memory)
    if mode not in MODES:
        raise InputSpecError(f"unknown mode {mode!r}; choose inference or training")
    if mode == "training":
        from .training import optimizer_states

        optimizer_states(optimizer)  # an unknown optimizer fails before anything is traced
        if req.convention.backward is None:
            raise InputSpecError(f"the {req.convention.name} convention has no backward rules; "
                                 f"analyse training under convnet-burden or torch")
    name, module = _model(model, req.device)
    a = _analyse(module, req, inputs)
    training = _training(module, req, a.args, a.kwargs, optimizer) if mode == "training" else None
    size, batch = (req.size, req.batch) if inputs is None else _describe_inputs(a.args, a.kwargs)
    t = a.totals
    return Estimate(model=name, input=tuple(size), batch=batch, dtype=dtype_name(req.dtype),
                    convention=req.convention.name, memory_convention=req.memory.name, params=t.params,
                    trainable_params=t.trainable_params, param_bytes=t.param_bytes, feature_bytes=t.feature_bytes,
                    flops=t.flops, layers=a.layers, uncounted_ops=a.uncounted,
                    peak_feature_bytes=a.live.peak_feature_bytes, peak_op=a.live.peak_op,
                    peak_bytes=t.param_bytes + a.live.peak_feature_bytes, mode=mode, training=training,
                    live_curve=a.live.curve, source=model)


def compare(models: Iterable[nn.Module | str], input_size: int | str | Sequence[int] = (3, 224, 224), *,
            batch_size: int = 1, dtype: str | torch.dtype = torch.float32,
            convention: str = "convnet-burden", memory: str | None = None, device: str = "meta") -> Comparison:
    """``estimate`` each model under the same settings, as one table (the reference table's shape)."""
    models = list(models)
    if not models:
        raise InputSpecError("compare needs at least one model")
    _request(input_size, batch_size, dtype, convention, device, memory)  # fail before the first trace
    return Comparison(tuple(estimate(m, input_size, batch_size=batch_size, dtype=dtype, convention=convention,
                                     memory=memory, device=device) for m in models))


def default_trunk(model: nn.Module | str) -> str:
    """The module whose output is the last convolutional feature map, before global pooling."""
    if isinstance(model, str) and ":" not in model:
        from .models import model_entry

        return model_entry(model).trunk
    raise InputSpecError("give the trunk module path (for example --trunk layer4) for a model outside the registry")


def scale(model: nn.Module | str, scales: str | Sequence[float] = DEFAULT_SCALES, *, batch_size: int = 128,
          trunk: str | None = None, base: int = 224, channels: int = 3, dtype: str | torch.dtype = torch.float32,
          convention: str = "convnet-burden") -> ScaleTable:
    """The feature-extraction table: for inputs of ``base x scale`` pixels, the shape of ``trunk``'s
    output and the feature memory and FLOPs of computing it for the whole batch.

    A size the network cannot take gives a row whose ``error`` says why, not an exception.
    """
    factors = parse_scales(scales)
    req = _request((channels, base, base), batch_size, dtype, convention, "meta")
    trunk = trunk or default_trunk(model)
    name, module = _model(model)
    if trunk not in dict(module.named_modules()):
        from .models.registry import suggest

        paths = [p for p, _ in module.named_modules() if p]
        raise InputSpecError(f"the model has no module {trunk!r}{suggest(trunk, paths)}")
    rows = []
    for factor in factors:
        side = round(base * factor)
        row_req = _request((channels, side, side), batch_size, dtype, convention, "meta")
        try:
            a = _analyse(module, row_req, stop_after=trunk)
        except BurdenError as exc:
            rows.append(ScaleRow(scale=factor, input=row_req.size, output_shape=None, feature_bytes=None,
                                 flops=None, error=str(exc)))
            continue
        rows.append(ScaleRow(scale=factor, input=row_req.size, output_shape=a.trace.modules[trunk].output_shape,
                             feature_bytes=a.totals.feature_bytes, flops=a.totals.flops, error=None))
    return ScaleTable(model=name, batch=req.batch, trunk=trunk, dtype=dtype_name(req.dtype),
                      convention=req.convention.name, rows=tuple(rows))
