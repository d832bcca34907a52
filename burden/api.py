"""The library API: ``estimate`` one model, ``compare`` several, ``scale`` a trunk over input sizes.

The CLI is a thin layer over these functions. Every argument is validated before any model is
built or traced.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Iterable, Sequence

import functools
import os

import torch
from torch import nn

from .comparison import Comparison
from .conventions import Convention, MemoryConvention, get_convention, get_memory_convention
from .counting import Totals, count, own_bytes
from .errors import BurdenError, DataDependentError, InputSpecError, InternalError
from .figures import Estimate, LayerFigures, TrainingFigures, UncountedOp
from .inputs import (DEFAULT_SCALES, dtype_name, materialize_inputs, parse_batch, parse_dtype, parse_input_size,
                     parse_scales)
from .models.resolve import resolve_model
from .scaling import ScaleRow, ScaleTable
from .state import preserved_modes, with_real_weights
from .machine import fits_in_half
from .memory import LiveMemory, inference_peak, trace_lifetimes
from .trace_errors import first_line
from .containers import iter_tensors
from .heap import paused_gc
from .records import Trace


def _model_dtype(model: nn.Module) -> torch.dtype:
    """The model's own floating dtype: that of its first floating parameter or buffer."""
    for t in list(model.parameters()) + list(model.buffers()):
        if t.is_floating_point():
            return t.dtype
    return torch.float32


def _check_device(device: str | torch.device | None) -> str | None:
    """The device to trace on: None (meta, or the CPU where the model needs values), or one named."""
    if device is None:
        return None
    try:
        dev = torch.device(device)
    except (RuntimeError, TypeError):
        raise InputSpecError(f"unknown device {device!r}; use 'meta' (default) or a real device such as 'cpu'") from None
    if dev.type == "cuda" and not torch.cuda.is_available():
        raise InputSpecError("device 'cuda' asked for, but no CUDA device is available")
    return str(dev)


@dataclass(frozen=True)
class _Request:
    """A validated analysis request."""

    size: tuple[int, ...]
    batch: int
    dtype: torch.dtype | None  # None: the model's own
    convention: Convention
    memory: MemoryConvention
    device: str | None  # None: meta, with the CPU as fallback for models that need values

    @property
    def meta(self) -> bool:
        return self.device is None or self.device == "meta"

    def on(self, device: str) -> "_Request":
        return _Request(self.size, self.batch, self.dtype, self.convention, self.memory, device)

    def elsize(self, module: nn.Module) -> int:
        return torch.empty((), dtype=self.dtype or _model_dtype(module)).element_size()


def _request(input_size: Any, batch_size: Any, dtype: Any, convention: str, device: Any,
             memory: str | None = None) -> _Request:
    rules = get_convention(convention)
    return _Request(size=parse_input_size(input_size), batch=parse_batch(batch_size),
                    dtype=None if dtype is None else parse_dtype(dtype), convention=rules,
                    memory=get_memory_convention(memory or rules.memory), device=_check_device(device))


def _model(model: nn.Module | str, device: str | None = None) -> tuple[str, nn.Module]:
    """The module to analyse. A model given by name is built on meta; for a real device it is
    built there, initialised as its factory initialises it (values matter to models that need them)."""
    if isinstance(model, str):
        if device is None or torch.device(device).type == "meta":
            return resolve_model(model)
        return resolve_model(model, device=device)
    if not isinstance(model, nn.Module):
        raise InputSpecError(f"expected an nn.Module or a model name, got {type(model).__name__}")
    if device is not None and torch.device(device).type != "meta":
        return type(model).__name__, with_real_weights(model, device)
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
        args, kwargs = (torch.zeros((req.batch, *req.size), dtype=_model_dtype(module), device=target),), {}
    else:
        args, kwargs = materialize_inputs(inputs, device=target, dtype=_model_dtype(module))
    elsize = req.elsize(module)
    with preserved_modes(module), torch.no_grad():
        trace = trace_lifetimes(module, args, kwargs, meta=req.meta, stop_after=stop_after)
        flops = req.convention.attribute(module, trace, args, kwargs)
    with paused_gc():  # counting frees no tensor
        memory = req.memory.rule(trace, elsize)
        layers, uncounted, totals = count(module, trace, flops, memory, elsize)
        return _Analysis(trace, args, kwargs, layers, uncounted, totals, inference_peak(trace, elsize))


def _analyse_anywhere(model: nn.Module | str, module: nn.Module, req: _Request, inputs: Any
                      ) -> tuple[nn.Module, _Request, _Analysis, tuple[str, ...]]:
    """Trace on meta; where the model needs real values and no device was named, trace again on
    the CPU when that fits in half of the free memory, and say so."""
    try:
        return module, req, _analyse(module, req, inputs), ()
    except DataDependentError as exc:
        if req.device is not None:
            raise
        elsize = req.elsize(module)
        need = own_bytes(module, elsize) + 2 * exc.feature_bytes_so_far
        if not fits_in_half(need):
            raise DataDependentError(f"{exc}; a CPU run would need about {need / 2**30:.1f} GiB, more than half "
                                     f"of the free memory") from None
        cpu = req.on("cpu")
        _, real = _model(model, "cpu")
        note = f"traced on the CPU: {str(exc).split(': ', 1)[1].split('; analyse it')[0]}"
        return real, cpu, _analyse(real, cpu, inputs), (note,)


def _training(module: nn.Module, req: _Request, args: tuple, kwargs: dict, optimizer: str) -> TrainingFigures:
    from .training import training_step

    step = training_step(module, args, kwargs, optimizer=optimizer, elsize=req.elsize(module), meta=req.meta,
                         convention=req.convention.name)
    return TrainingFigures(optimizer=optimizer, gradient_bytes=step.gradient_bytes,
                           optimizer_bytes=step.optimizer_bytes, saved_activation_bytes=step.saved_activation_bytes,
                           backward_peak_bytes=step.backward_peak_bytes, training_peak_bytes=step.training_peak_bytes,
                           forward_flops=step.forward_flops, backward_flops=step.backward_flops,
                           backward_uncounted_ops=step.backward_uncounted)


def _boundary(fn: Any) -> Any:
    """No exception but a BurdenError leaves the API: anything else is a bug in burden, said so."""
    @functools.wraps(fn)
    def guarded(*args: Any, **kwargs: Any) -> Any:
        try:
            return fn(*args, **kwargs)
        except BurdenError:
            raise
        except Exception as exc:
            if os.environ.get("BURDEN_DEBUG"):
                raise
            raise InternalError(f"internal error in burden (a bug in burden, please report it with the model and "
                                f"the call; BURDEN_DEBUG=1 shows the traceback): {type(exc).__name__}: "
                                f"{first_line(exc)}") from exc
    return guarded


MODES = ("inference", "training")


def _describe_inputs(args: tuple, kwargs: dict) -> tuple[tuple[int, ...], int]:
    """The per-sample shape and batch of the first tensor input, as the summary shows them."""
    for leaf in iter_tensors((args, kwargs)):
        if leaf.dim() > 0:
            return tuple(leaf.shape[1:]), int(leaf.shape[0])
    return (), 1


@_boundary
def estimate(model: nn.Module | str, input_size: int | str | Sequence[int] = (3, 224, 224), *,
             batch_size: int = 1, dtype: str | torch.dtype | None = None, convention: str = "convnet-burden",
             memory: str | None = None, inputs: Any = None, device: str | None = None, mode: str = "inference",
             optimizer: str = "adam") -> Estimate:
    """Parameter memory, feature memory and FLOPs of ``model`` for one forward pass.

    ``model`` is an ``nn.Module`` or a name: ``burden.list_models()``, ``package.module:factory``,
    ``torchvision:NAME`` or ``timm:NAME``. ``input_size`` is the per-sample shape, ``(3, 224, 224)``,
    or ``224`` for a square RGB image, and ``batch_size`` is prepended. For models that take several
    inputs, keyword inputs or nested structures, pass ``inputs`` instead: a tuple of positional
    arguments, or a dict of keyword arguments (``{"args": (...), "kwargs": {...}}`` for both), whose
    tensors are example tensors, ``torch.Size`` shapes or ``burden.TensorSpec``; their shapes include
    the batch. ``dtype`` sets the bytes per floating-point value (default: the model's own parameter
    dtype). ``convention`` names the FLOP rules (``burden.list_conventions()``) and ``memory`` the
    feature-memory rules (default: the convention's own). Every estimate also gives the inference
    peak (buffers freed as eager PyTorch frees them); ``mode="training"`` adds one training step
    with ``optimizer`` (sgd, momentum, adam, adamw): saved activations, gradients, optimizer state,
    the step's peak and the backward FLOPs.

    ``device`` is where the pass is traced: by default the meta device (nothing allocated, any size),
    except for a model whose forward needs real values (``.item()``, ``nonzero``, boolean masks),
    which is traced on the CPU when that fits in half of the free memory, as ``Estimate.notes`` says;
    ``device="meta"`` never falls back, ``device="cpu"`` always runs real tensors. The model comes
    back as it was: same device, dtype, mode, flags, hooks and tensors.
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
    module, req, a, notes = _analyse_anywhere(model, module, req, inputs)
    training = _training(module, req, a.args, a.kwargs, optimizer) if mode == "training" else None
    size, batch = (req.size, req.batch) if inputs is None else _describe_inputs(a.args, a.kwargs)
    t = a.totals
    return Estimate(model=name, input=tuple(size), batch=batch, dtype=dtype_name(req.dtype or _model_dtype(module)),
                    convention=req.convention.name, memory_convention=req.memory.name, params=t.params,
                    trainable_params=t.trainable_params, param_bytes=t.param_bytes, feature_bytes=t.feature_bytes,
                    flops=t.flops, layers=a.layers, uncounted_ops=a.uncounted,
                    peak_feature_bytes=a.live.peak_feature_bytes, peak_op=a.live.peak_op,
                    peak_bytes=t.param_bytes + a.live.peak_feature_bytes, mode=mode, training=training,
                    live_curve=a.live.curve, device="meta" if req.meta else str(req.device), notes=notes,
                    source=model)


@_boundary
def compare(models: Iterable[nn.Module | str], input_size: int | str | Sequence[int] = (3, 224, 224), *,
            batch_size: int = 1, dtype: str | torch.dtype | None = None,
            convention: str = "convnet-burden", memory: str | None = None, device: str | None = None) -> Comparison:
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


@_boundary
def scale(model: nn.Module | str, scales: str | Sequence[float] = DEFAULT_SCALES, *, batch_size: int = 128,
          trunk: str | None = None, base: int = 224, channels: int = 3, dtype: str | torch.dtype | None = None,
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
    return ScaleTable(model=name, batch=req.batch, trunk=trunk, dtype=dtype_name(req.dtype or _model_dtype(module)),
                      convention=req.convention.name, rows=tuple(rows))
