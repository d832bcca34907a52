"""The analysis behind the API: validate a request, build or take the model, trace it (on meta,
or on the CPU for a model that needs values), count it under the conventions, and return figures.

Every argument is validated before any model is built or traced. ``burden.api`` wraps what this
returns in the result types users see.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, replace
from typing import Any, Callable, Sequence

import torch
from torch import nn

from .counting import Totals, count, held_sizes, own_bytes
from .device_memory import DeviceRun, workspaces
from .errors import BurdenError, DataDependentError, ForwardError, InputSpecError, ShapeError
from .figures import EstimateFigures, LatencyFigures, LayerFigures, ScaleFigures, ScaleRow, TrainingFigures, UncountedOp
from .inputs import dtype_name, parse_input_size, parse_scales
from .models import model_entry
from .suggest import did_you_mean
from .models.hf import is_config_spec
from .models.resolve import own_input_size, resolve_model
from .heap import paused_gc
from .machine import available_bytes, fits_in_half
from . import sharded
from .memory import LiveMemory, inference_peak, trace_lifetimes
from .options import DEFAULT_INPUT_SIZE
from .records import Trace
from .request import Request, describe_inputs, input_sizes, model_dtype, model_inputs
from .roofline import latency_figures
from .traffic import trace_bytes
from .state import preserved_modes, with_real_weights


def model_to_analyse(model: nn.Module | str, device: str | None = None) -> tuple[str, nn.Module]:
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


def model_and_request(model: nn.Module | str, req: Request, device: str | None = None
                      ) -> tuple[str, nn.Module, Request]:
    """``model_to_analyse``, and the request at the model's own input size (``own_input_size``)
    where the caller asked for none: 3 x 224 x 224 where the model does not say."""
    name, module = model_to_analyse(model, device)
    if req.size is None:
        req = replace(req, size=own_input_size(model, module) or DEFAULT_INPUT_SIZE)
    return name, module, req


@dataclass(frozen=True)
class Analysis:
    trace: Trace
    args: tuple
    kwargs: dict
    layers: tuple[LayerFigures, ...]
    uncounted: tuple[UncountedOp, ...]
    totals: Totals
    live: LiveMemory
    held_bytes: int  # parameters and buffers as the target's allocator holds them
    input_bytes: int  # the input batch, as the target holds it
    moved: list[int]  # bytes each op of the trace moves (read + written)
    device_run: DeviceRun  # the run as a device's caching allocator sees it

    @property
    def reserved_bytes(self) -> int:
        """On the CUDA target, the caching allocator's most reserved memory, simulated; else 0."""
        return (self.device_run.reserved() or 0) if self.device_run.accounts.cuda else 0

    @property
    def peak_bytes(self) -> int:
        """The inference peak: the model's state, the input batch and the most features live at once."""
        return self.held_bytes + self.input_bytes + self.live.peak_feature_bytes


def analyse(module: nn.Module, req: Request, inputs: Any = None, stop_after: str | None = None) -> Analysis:
    """Trace one forward pass and count it under the request's conventions."""
    args, kwargs = model_inputs(module, req, inputs)
    elsize, features = req.elsize(module), req.feature_elsize(module)
    observers = (Progress(req.progress, str(req.device)),) if req.progress is not None and not req.meta else ()
    with preserved_modes(module), torch.no_grad():
        trace = trace_lifetimes(module, args, kwargs, meta=req.meta, stop_after=stop_after, observers=observers,
                                kernels=req.kernels)
        flops = req.convention.attribute(module, trace, args, kwargs)
    with paused_gc():  # counting frees no tensor
        memory = req.memory.rule(trace, features)
        moved = trace_bytes(trace, features)
        layers, uncounted, totals = count(module, trace, flops, memory, elsize, moved)
        accounts = req.accounting
        sizer = accounts.sizer(features)
        on_device = replace(trace, allocations={**trace.allocations, **workspaces(trace.events, (0,), accounts)})
        live = inference_peak(on_device, features, size=sizer)
        held, batch = held_sizes(module, elsize, accounts), input_sizes(args, kwargs, elsize)
        run = DeviceRun((*held, *batch), on_device.allocations, trace.released, sizer, len(trace.events), accounts)
        return Analysis(trace, args, kwargs, layers, uncounted, totals, live, accounts.tensors(held),
                        accounts.tensors(batch), moved, run)


class Progress:
    """Reports a long real-device trace every few seconds: how many ops, in which layer."""

    def __init__(self, say: Callable[[str], None], device: str, every: float = 3.0) -> None:
        self.say, self.device, self.every = say, device, every
        self.start = self.last = time.monotonic()

    def op_recorded(self, tracer: Any, event: Any, outputs: tuple) -> None:
        now = time.monotonic()
        if now - self.last >= self.every:
            self.last = now
            self.say(f"burden: tracing on {self.device}: {len(tracer.events)} ops, at "
                     f"{event.module or 'the model'}, {now - self.start:.0f} s")

    def storage_allocated(self, tracer: Any, tensor: torch.Tensor, storage: int) -> None:
        pass

    def storage_freed(self, tracer: Any, storage: int) -> None:
        pass


def _cpu_need(module: nn.Module, req: Request, exc: DataDependentError) -> int:
    """What a CPU run of a model that stopped on meta would hold: its weights and twice what the
    pass had allocated when it stopped (the rest of the pass is unknown); a training step also
    holds burden's copy of the weights, their gradients and (Adam's) two moments."""
    weights = own_bytes(module, req.elsize(module))
    return weights * (5 if req.mode == "training" else 1) + 2 * exc.feature_bytes_so_far


def _check_memory(module: nn.Module, req: Request, inputs: Any, checkpoint: tuple[str, ...]) -> None:
    """A real-device run holds the weights and every live feature at once: refuse one that would
    take more than half of the free memory, from a meta trace that costs nothing to run."""
    if req.meta or not req.check_memory or torch.device(req.device).type != "cpu":
        return
    try:
        a, training = _run(module, req.on("meta"), inputs, checkpoint)
        need = max(a.peak_bytes, training.training_peak_bytes if training is not None else 0)
    except DataDependentError as exc:
        need = _cpu_need(module, req, exc)
    except BurdenError:
        return  # the real run will say what is wrong
    if not fits_in_half(need):
        free = available_bytes() or 0
        raise InputSpecError(f"a CPU run of this model would hold about {need / 2**30:.1f} GiB, more than half of the "
                             f"{free / 2**30:.1f} GiB free; trace on meta (the default), or allow it with "
                             f"--no-memory-check (check_memory=False)")


def _run(module: nn.Module, req: Request, inputs: Any, checkpoint: tuple[str, ...]
         ) -> tuple[Analysis, TrainingFigures | None]:
    """The forward's analysis and, in training mode, the training step."""
    a = analyse(module, req, inputs)
    return a, (_training(module, req, a.args, a.kwargs, checkpoint) if req.mode == "training" else None)


def _analyse_anywhere(model: nn.Module | str, module: nn.Module, req: Request, inputs: Any,
                      checkpoint: tuple[str, ...] = ()
                      ) -> tuple[nn.Module, Request, Analysis, TrainingFigures | None, tuple[str, ...]]:
    """Trace on meta; where the model (or its training step) needs real values and no device was
    named, trace again on the CPU when that fits in half of the free memory, and say so."""
    _check_memory(module, req, inputs, checkpoint)
    try:
        return (module, req, *_run(module, req, inputs, checkpoint), ())
    except DataDependentError as exc:
        if req.device is not None:
            raise
        need = _cpu_need(module, req, exc)
        if not fits_in_half(need):
            raise DataDependentError(f"{exc}; a CPU run would need about {need / 2**30:.1f} GiB, more than half "
                                     f"of the free memory") from None
        cpu = req.on("cpu")
        _, real = model_to_analyse(model, "cpu")  # the check above stands for _check_memory: a meta trace fails alike
        note = f"traced on the CPU: {str(exc).split(': ', 1)[1].split('; analyse it')[0]}"
        return (real, cpu, *_run(real, cpu, inputs, checkpoint), (note,))
    except (ShapeError, ForwardError) as exc:
        if inputs is not None or req.tokens or (isinstance(model, str) and ":" not in model and
                                                 not is_config_spec(model)):
            raise  # the registered models take images; token inputs were asked for
        # a model given the default image input that failed with it may not take images at all
        raise type(exc)(f"{exc}; if the model does not take one C x H x W image, describe its inputs with "
                        f"--inputs (inputs= in Python), such as --inputs 2x128:int64") from None


def check_mode(req: Request, checkpointing: bool) -> None:
    """What a mode asks of the other options, checked before anything is traced: training wants a
    convention with backward rules; checkpointing, accumulation, ZeRO and an optimizer
    implementation want training."""
    if req.mode == "training":
        if req.profile is not None and not req.accounting.cuda:
            raise InputSpecError("in training a device profile names the GPU of target='cuda' (--target cuda); "
                                 "its predicted time is an inference forward pass's: leave out mode='training'")
        if req.convention.backward is None:
            raise InputSpecError(f"the {req.convention.name} convention has no backward rules; "
                                 f"analyse training under convnet-burden or torch")
        return
    for given, what in ((checkpointing, "activation checkpointing changes"),
                        (req.accounting.zero, "ZeRO shards the state of"),
                        (req.sharding is not None, "FSDP and tensor parallelism shard"),
                        (req.training.grad_accum > 1, "gradient accumulation is part of"),
                        (req.training.optimizer_impl is not None, "the optimizer's implementation is part of")):
        if given:
            raise InputSpecError(f"{what} a training step: use mode='training' (--mode training)")


def checkpoint_paths(module: nn.Module, checkpoint: Sequence[str] | str | None, depth: int | None) -> tuple[str, ...]:
    """The modules to checkpoint: named ones (a list, or a comma-separated string), or every module
    ``depth`` levels down (1: the model's children)."""
    names = [p for p, _ in module.named_modules() if p]
    if isinstance(checkpoint, str):
        checkpoint = [p.strip() for p in checkpoint.split(",") if p.strip()]
    chosen = list(checkpoint or ())
    for path in chosen:
        if path not in names:
            raise InputSpecError(f"cannot checkpoint {path!r}: the model has no such module{did_you_mean(path, names)}")
    if depth is not None:
        if isinstance(depth, bool) or not isinstance(depth, int) or depth < 1:
            raise InputSpecError(f"checkpoint depth must be a whole number from 1, got {depth!r}")
        at_depth = [p for p in names if p.count(".") == depth - 1]
        if not at_depth:
            raise InputSpecError(f"the model has no module at depth {depth}")
        chosen += [p for p in at_depth if p not in chosen]
    nested = [p for p in chosen if any(p.startswith(q + ".") for q in chosen)]
    if nested:
        raise InputSpecError(f"{nested[0]!r} is inside another checkpointed module; checkpoint one of the two")
    return tuple(chosen)


def _training(module: nn.Module, req: Request, args: tuple, kwargs: dict,
              checkpoint: tuple[str, ...] = ()) -> TrainingFigures:
    """The training step, and with checkpointing the peak the same step has without it."""
    step = sharded.step(module, args, kwargs, req, checkpoint).figures
    if not checkpoint:
        return step
    return replace(step, unchecked_peak_bytes=sharded.step(module, args, kwargs, req).figures.training_peak_bytes)


def _stages(trace: Trace) -> tuple[tuple[int, str], ...]:
    """Runs of ops by the depth-1 module they belong to: (first op's index, module path)."""
    stages: list[tuple[int, str]] = []
    for index, event in enumerate(trace.events):
        stage = event.module.split(".", 1)[0]
        if not stages or stages[-1][1] != stage:
            stages.append((index, stage))
    return tuple(stages)


def estimate_figures(model: nn.Module | str, req: Request, inputs: Any = None,
                     checkpoint: Sequence[str] | str | None = None, checkpoint_depth: int | None = None
                     ) -> EstimateFigures:
    """The figures of ``burden.estimate`` (which documents the options) for a checked request."""
    check_mode(req, checkpoint is not None or checkpoint_depth is not None)
    name, module, req = model_and_request(model, req, req.device)
    paths = checkpoint_paths(module, checkpoint, checkpoint_depth)
    module, req, a, training, notes = _analyse_anywhere(model, module, req, inputs, paths)
    size, batch = (req.size, req.batch) if inputs is None else describe_inputs(a.args, a.kwargs)
    latency = None if req.profile is None or req.mode == "training" else _latency(module, req, a, batch)
    t = a.totals
    return EstimateFigures(
        model=name, input=tuple(size), batch=batch, dtype=dtype_name(req.dtype or model_dtype(module)),
        convention=req.convention.name, memory_convention=req.memory.name, params=t.params,
        trainable_params=t.trainable_params, param_bytes=t.param_bytes, feature_bytes=t.feature_bytes,
        flops=t.flops, layers=a.layers, uncounted_ops=a.uncounted, peak_feature_bytes=a.live.peak_feature_bytes,
        peak_op=a.live.peak_op, peak_bytes=a.peak_bytes, held_bytes=a.held_bytes, input_bytes=a.input_bytes,
        reserved_bytes=a.reserved_bytes, context_bytes=req.accounting.context_bytes,
        mode=req.mode, training=training,
        convention_summary=req.convention.summary, rules=req.convention.rules, memory_summary=req.memory.summary,
        device="meta" if req.meta else str(req.device), notes=notes + a.trace.assumptions + _mode_note(req),
        live_curve=a.live.curve,
        amp=dtype_name(req.amp) if req.amp is not None else None, accounting=req.accounting.describe(),
        bytes_moved=t.bytes_moved, latency=latency, live_stages=_stages(a.trace),
        source=model if isinstance(model, str) else None)


def _mode_note(req: Request) -> tuple[str, ...]:
    """Which mode the model ran in: batch norm and dropout count differently in each."""
    if req.mode == "training":
        return ("the forward ran in eval mode (no_grad) for the inference figures, and the training step in "
                "train mode (batch statistics, dropout on)",)
    return ("the model ran in eval mode under no_grad (batch norm with running statistics, dropout off)",)


def _latency(module: nn.Module, req: Request, a: Analysis, batch: int) -> LatencyFigures:
    """The roofline of the analysed pass on the request's profile, with the CPU threads this process uses."""
    assert req.profile is not None
    forced = dtype_name(req.dtype) if req.dtype is not None and req.amp is None else None
    threads = torch.get_num_threads() if req.profile.kind == "cpu" else None
    return latency_figures(a.trace, a.moved, req.profile, dtype=forced, batch=batch, threads=threads,
                           order=[layer.name for layer in a.layers])


def default_trunk(model: nn.Module | str) -> str:
    """The module whose output is the last convolutional feature map, before global pooling."""
    if isinstance(model, str) and ":" not in model:
        return model_entry(model).trunk
    raise InputSpecError("give the trunk module path (for example --trunk layer4) for a model outside the registry")


def scale_figures(model: nn.Module | str, scales: str | Sequence[float], batch_size: int, trunk: str | None,
                  base: int, channels: int, dtype: str | torch.dtype | None, convention: str) -> ScaleFigures:
    """The figures of ``burden.scale`` and ``Estimate.scale`` (which document the arguments)."""
    factors = parse_scales(scales)
    req = Request.counting((channels, base, base), batch_size, dtype, convention)
    trunk = trunk or default_trunk(model)
    name, module = model_to_analyse(model)
    if trunk not in dict(module.named_modules()):
        paths = [p for p, _ in module.named_modules() if p]
        raise InputSpecError(f"the model has no module {trunk!r}{did_you_mean(trunk, paths)}")
    rows = []
    for factor in factors:
        side = round(base * factor)
        row_req = replace(req, size=parse_input_size((channels, side, side)))
        try:
            a = analyse(module, row_req, stop_after=trunk)
        except BurdenError as exc:
            rows.append(ScaleRow(scale=factor, input=row_req.size, output_shape=None, feature_bytes=None,
                                 flops=None, error=str(exc)))
            continue
        rows.append(ScaleRow(scale=factor, input=row_req.size, output_shape=a.trace.modules[trunk].output_shape,
                             feature_bytes=a.totals.feature_bytes, flops=a.totals.flops, error=None))
    return ScaleFigures(model=name, batch=req.batch, trunk=trunk, dtype=dtype_name(req.dtype or model_dtype(module)),
                        convention=req.convention.name, rows=tuple(rows))
