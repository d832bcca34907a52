"""``burden bench``: run the real model with random weights and time it, beside the roofline.

``torch.utils.benchmark`` times whole forward passes (warm-up first, CUDA synchronised, the
process's thread count kept); forward hooks on the model's top-level modules time each of them in
a few more passes. Efficiency is predicted / measured: the fraction of the roofline bound the real
kernels reach. The run is refused up front when burden's own peak says it would not fit.
"""

from __future__ import annotations

import copy
import statistics
import time
from dataclasses import replace
from typing import Any, Callable

import torch
from torch import nn

from . import analysis, devices
from .containers import iter_tensors
from .errors import ForwardError, InputSpecError
from .figures import BenchFigures, EstimateFigures, ModuleTime
from .inputs import dtype_name
from .machine import available_bytes, processor_name
from .request import Request, model_dtype, model_inputs
from .state import preserved_modes

_WARMUP = 3
_MIN_BLOCKS = 3


def device_name(device: str) -> str:
    if device == "cuda":
        return torch.cuda.get_device_name()
    return f"{processor_name()}, {torch.get_num_threads()} threads"


def default_profile(device: str) -> str | None:
    """The profile to compare with when none is named: ``local`` on a CPU once calibrated, the
    data sheet of the GPU at hand on CUDA."""
    if device == "cuda":
        return devices.matching(torch.cuda.get_device_name())
    return devices.DEFAULT_PROFILE if devices.DEFAULT_PROFILE in devices.stored_names() else None


def free_bytes(device: str) -> int | None:
    if device == "cuda":
        return torch.cuda.mem_get_info()[0]
    return available_bytes()


def real_model(model: nn.Module | str, device: str, dtype: torch.dtype | None) -> tuple[str, nn.Module]:
    """A model to run: built on ``device`` with its factory's random weights, or a copy of the
    user's module where it must move or change dtype (the user's module is never changed)."""
    name, module = analysis.model_to_analyse(model, device)
    first = next((t for t in list(module.parameters()) + list(module.buffers())), None)
    if first is not None and first.device.type != device:
        module = copy.deepcopy(module).to(device)
    if dtype is not None and model_dtype(module) != dtype:
        module = (module if module is not model else copy.deepcopy(module)).to(dtype)
    return name, module


def _inputs(module: nn.Module, req: Request, inputs: Any, device: str) -> tuple[tuple, dict]:
    """The model's inputs on ``device``, floating ones filled with random values (zeros can take
    kernels' fast paths)."""
    args, kwargs = model_inputs(module, req, inputs, device)
    for t in iter_tensors((args, kwargs)):
        if t.is_floating_point():
            t.normal_()
    return args, kwargs


class _ModuleClock:
    """Forward hooks that add up the time each top-level module takes per pass."""

    def __init__(self, module: nn.Module, device: str) -> None:
        self.device = device
        self.children = [(name, child) for name, child in module.named_children()]
        self.handles: list[Any] = []
        self.marks: dict[str, list] = {}

    def __enter__(self) -> "_ModuleClock":
        for name, child in self.children:
            self.handles.append(child.register_forward_pre_hook(self._start(name)))
            self.handles.append(child.register_forward_hook(self._stop(name)))
        return self

    def __exit__(self, *exc: Any) -> None:
        for handle in self.handles:
            handle.remove()

    def _now(self) -> Any:
        if self.device == "cuda":
            event = torch.cuda.Event(enable_timing=True)
            event.record()
            return event
        return time.perf_counter()

    def _start(self, name: str) -> Callable[..., None]:
        def hook(module: nn.Module, args: Any) -> None:
            self.marks.setdefault(name, []).append([self._now(), None])
        return hook

    def _stop(self, name: str) -> Callable[..., None]:
        def hook(module: nn.Module, args: Any, output: Any) -> None:
            self.marks[name][-1][1] = self._now()
        return hook

    def seconds(self) -> dict[str, float]:
        """Seconds per module over the pass just run, then forget it."""
        if self.device == "cuda":
            torch.cuda.synchronize()
            spans = {n: sum(a.elapsed_time(b) / 1e3 for a, b in marks) for n, marks in self.marks.items()}
        else:
            spans = {n: sum(b - a for a, b in marks) for n, marks in self.marks.items()}
        self.marks = {}
        return spans


def _per_module(module: nn.Module, run: Callable[[], Any], device: str, passes: int) -> dict[str, float]:
    """Median seconds per top-level module over ``passes`` passes."""
    per_pass: dict[str, list[float]] = {}
    with _ModuleClock(module, device) as clock:
        for _ in range(passes):
            run()
            for name, seconds in clock.seconds().items():
                per_pass.setdefault(name, []).append(seconds)
    return {name: statistics.median(values) for name, values in per_pass.items()}


def _check_fits(figures: EstimateFigures, device: str, model: str) -> None:
    """Refuse before anything is built: weights, inputs and peak features must fit in free memory."""
    need = figures.peak_bytes
    free = free_bytes(device)
    if free is not None and need > free:
        raise InputSpecError(f"a forward pass of {model} at batch {figures.batch} holds about {need / 2**30:.2f} "
                             f"GiB (weights, input and peak features), more than the {free / 2**30:.2f} GiB free "
                             f"on {device}; use a smaller --batch")


def check_run_time(min_run_time: Any) -> None:
    if not isinstance(min_run_time, (int, float)) or isinstance(min_run_time, bool) or min_run_time <= 0:
        raise InputSpecError(f"min_run_time is a positive number of seconds, got {min_run_time!r}")


def bench_figures(model: nn.Module | str, req: Request, inputs: Any, device: str, min_run_time: float,
                  per_module: bool) -> BenchFigures:
    """The figures of ``burden.bench`` (which documents the arguments): ``req`` is the meta
    prediction's (the torch convention, the target and profile of ``device``, checked by
    ``run_device``); the real run takes its batch, dtype and size."""
    forced = req.dtype
    # the prediction, and what the run will hold, from a meta trace that costs nothing to run
    figures = analysis.estimate_figures(model, req, inputs)
    _check_fits(figures, device, figures.model)
    name, module = real_model(model, device, forced)
    if req.size is None:  # the model's own size, which the estimate found
        req = replace(req, size=figures.input)
    args, kwargs = _inputs(module, req, inputs, device)

    def run() -> Any:
        return module(*args, **kwargs)

    with preserved_modes(module), torch.no_grad():
        try:
            for done in range(_WARMUP):  # the first passes build kernels and caches; a slow model gets two
                start = time.perf_counter()
                run()
                once = time.perf_counter() - start
                if done and once * (done + 1) >= min_run_time:
                    break
        except Exception as exc:
            raise ForwardError(f"the real forward pass of {name} failed: {type(exc).__name__}: "
                               f"{str(exc).strip().splitlines()[0] if str(exc).strip() else ''}") from None
        from torch.utils.benchmark import Timer

        timer = Timer(stmt="run()", globals={"run": run}, num_threads=torch.get_num_threads(),
                      label=name, description=f"batch {figures.batch}")
        # a median needs several blocks, however slow one pass is
        measured = timer.blocked_autorange(min_run_time=max(min_run_time, _MIN_BLOCKS * once))
        times = sorted(measured.times)
        passes = max(3, min(20, int(min_run_time / max(measured.median, 1e-6))))
        modules = _per_module(module, run, device, passes) if per_module else {}
    lat = figures.latency
    predicted = lat.predicted_seconds if lat is not None else None
    records = []
    for child, seconds in modules.items():
        layer = lat.layer(child) if lat is not None else None
        guess = layer.predicted_seconds if layer is not None else None
        records.append(ModuleTime(name=child, type=type(getattr(module, child)).__name__, median_seconds=seconds,
                                  predicted_seconds=guess,
                                  efficiency=guess / seconds if guess is not None and seconds > 0 else None))
    notes = []
    if lat is None:
        notes.append("no efficiency: no device profile to compare with; run `burden calibrate` (CPU) or name "
                     "one with --device-profile")
    return BenchFigures(
        model=name, input=figures.input, batch=figures.batch, dtype=dtype_name(model_dtype(module)), device=device,
        device_name=device_name(device), threads=torch.get_num_threads() if device == "cpu" else None,
        median_seconds=measured.median, iqr_seconds=measured.iqr, min_seconds=times[0], max_seconds=times[-1],
        runs=len(times), calls_per_run=measured.number_per_run,
        predicted_seconds=predicted, profile=lat.device if lat is not None else None, modules=tuple(records),
        peak_bytes=figures.peak_bytes, notes=tuple(notes))
