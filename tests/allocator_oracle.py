"""Memory as the CPU allocator itself reports it, sharing nothing with burden's method.

burden predicts memory by recording storages on the meta device and replaying their lifetimes.
This oracle runs the real model on CPU tensors under ``torch.profiler`` with
``profile_memory=True`` and reads the allocator's own allocation and free events: every byte
the CPU allocator hands out or takes back while the step runs, in time order. It never looks at
tensors, storages, ops or autograd's saved tensors.

oneDNN is switched off for the measured run, so that its weight-reorder workspaces (blocked
copies of convolution weights, which are not tensors of the model) do not blur the figures.
One intra-op thread keeps every allocation on the profiled thread.

Kernel scratch memory is told apart from tensors by the allocator events alone: a block that is
taken and given back inside the same kernel call (the outermost op around the allocation that is
neither an allocation op such as ``empty`` or ``resize_`` nor an op the dispatcher defines by other
ops, such as ``max_pool2d`` or ``linear``) is a workspace, for example the
im2col columns of the non-oneDNN convolution, or the per-group pieces that the non-oneDNN
grouped convolution backward computes by calling itself once per group and then concatenates.
Everything else is tensor memory, which is what burden predicts; the workspace peak is reported
beside it.

``measure`` gives the forward and backward figures; ``measure_step`` a whole training step
(micro-batches, optimizer step, zero_grad) in one profiled run, each phase inside a
``record_function`` range so that every allocator event is told to its phase by the event tree,
not by its time.
"""

from __future__ import annotations

import contextlib
import functools
import gc
from collections.abc import Mapping
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any, Callable, Iterator

import torch
from torch import nn
from torch.profiler import ProfilerActivity, profile, record_function


@contextmanager
def _quiet_cpu() -> Iterator[None]:
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        with torch.backends.mkldnn.flags(enabled=False):
            yield
    finally:
        torch.set_num_threads(threads)


# ops that only hand out memory: an allocation inside one belongs to the kernel that called it
_ALLOCATING = {"aten::empty", "aten::empty_strided", "aten::resize_", "aten::empty_like", "aten::zeros",
               "aten::zeros_like", "aten::new_empty", "aten::new_empty_strided", "aten::new_zeros", "aten::ones",
               "aten::ones_like", "aten::full", "aten::full_like", "aten::zero_", "aten::fill_"}

# prefix of the ``record_function`` ranges that ``measure_step`` opens around the phases of a step
_PHASE = "allocator_oracle::"


@dataclass(frozen=True)
class Curve:
    """Live bytes after each allocator event while a step ran, relative to its start."""

    tensors: list[int]  # allocations that outlive the kernel call that made them
    workspace: list[int]  # allocations given back inside the kernel call that made them

    @property
    def peak(self) -> int:
        return max(self.tensors, default=0)

    @property
    def end(self) -> int:
        return self.tensors[-1] if self.tensors else 0

    @property
    def workspace_peak(self) -> int:
        return max(self.workspace, default=0)


@functools.lru_cache(maxsize=None)
def _composite(name: str) -> bool:
    """Whether the dispatcher defines this op by other ops (asked of its default overload)."""
    try:
        return torch._C._dispatch_has_kernel_for_dispatch_key(name, "CompositeImplicitAutograd")
    except RuntimeError:  # no default overload of that name
        return False


def _phase_allocations(tree: list) -> list[tuple[int, int, int, int | None, str | None, bool]]:
    """(time, ptr, bytes, end of the kernel call around it, phase, in a collective) of every allocator
    event, in time order; the phase is the name, less ``_PHASE``, of the outermost ``record_function``
    range around the event that ``measure_step`` opened, or None outside them; the last says whether
    a process group's collective (a ``c10d::`` op, or gloo's own ``gloo:`` range on its worker thread)
    made the event."""
    found = []
    todo = [(root, None, None, False) for root in reversed(tree)]
    while todo:
        event, kernel_end, phase, collective = todo.pop()
        fields = event.extra_fields
        if hasattr(fields, "alloc_size"):
            found.append((event.start_time_ns, fields.ptr, fields.alloc_size, kernel_end, phase, collective))
            continue
        collective = collective or event.name.startswith(("c10d::", "gloo:"))
        # The outermost kernel call owns its scratch: a kernel may run other ops for parts of its
        # work (the grouped convolution backward runs one per group) and free their results itself.
        # An op that PyTorch defines by other ops (CompositeImplicitAutograd: max_pool2d, linear,
        # conv2d) is not a kernel: the ops it is made of are, and what one makes and the next frees
        # is a tensor of the program (max_pool2d's indices), not anyone's scratch.
        if kernel_end is None and event.name.startswith("aten::") and event.name not in _ALLOCATING \
                and not _composite(event.name):
            kernel_end = event.end_time_ns
        if phase is None and event.name.startswith(_PHASE):
            phase = event.name[len(_PHASE):]
        # children in their own order, so that events stamped with the same time stay in the order
        # they happened (the sort below is stable)
        todo.extend((child, kernel_end, phase, collective) for child in reversed(event.children))
    return sorted(found, key=lambda f: f[0])


def _allocations(tree: list) -> list[tuple[int, int, int, int]]:
    """(time, ptr, bytes, end of the kernel call around it) of every allocator event, in time order."""
    return [event[:4] for event in _phase_allocations(tree)]


def _scratch(events: list[tuple]) -> list[bool]:
    """For each allocator event (allocation or free), whether its block is kernel workspace."""
    # each allocation is paired with its own free: the allocator hands the same address out again,
    # often inside the same kernel call (a scratch block freed, then the output taken at its place)
    scratch_allocations: set[int] = set()  # positions in ``events`` of allocations that are workspace
    open_blocks: dict[int, tuple[int, int | None]] = {}  # ptr -> (position, end of the kernel call)
    for position, (time, ptr, size, kernel_end, *_) in enumerate(events):
        if size > 0:
            open_blocks[ptr] = (position, kernel_end)
        elif ptr in open_blocks:
            taken_at, end = open_blocks.pop(ptr)
            if end is not None and time <= end:
                scratch_allocations.add(taken_at)
    flags = []
    taken: dict[int, bool] = {}
    for position, (time, ptr, size, *_) in enumerate(events):
        if size > 0:
            scratch = position in scratch_allocations
            taken[ptr] = scratch
        else:
            scratch = taken.pop(ptr, False)
        flags.append(scratch)
    return flags


def allocator_curve(fn: Callable[[], Any]) -> tuple[Curve, Any]:
    """The allocator's live bytes while ``fn`` runs, split into tensors and kernel workspaces,
    and ``fn``'s result."""
    with _quiet_cpu(), profile(activities=[ProfilerActivity.CPU], profile_memory=True) as prof:
        result = fn()
    events = _allocations(prof.profiler.kineto_results.experimental_event_tree())
    tensors = workspace = 0
    curve = Curve([], [])
    for (time, ptr, size, kernel_end), scratch in zip(events, _scratch(events)):
        if scratch:
            workspace += size
        else:
            tensors += size
        curve.tensors.append(tensors)
        curve.workspace.append(workspace)
    return curve, result


def _nbytes(tensors: Any) -> int:
    seen: dict[int, int] = {}
    for t in tensors:
        seen[t.untyped_storage().data_ptr()] = t.untyped_storage().nbytes()
    return sum(seen.values())


def _outputs(value: Any) -> list[torch.Tensor]:
    if isinstance(value, torch.Tensor):
        return [value]
    if isinstance(value, dict):
        return [t for v in value.values() for t in _outputs(v)]
    if isinstance(value, (list, tuple)):
        return [t for v in value for t in _outputs(v)]
    return []


@dataclass(frozen=True)
class AllocatorFigures:
    inference_peak: int  # most tensor bytes held at once during an eval forward under no_grad
    saved_activations: int  # tensor bytes still held when a training-mode forward ends, less its output
    training_peak: int  # parameters + buffers + optimizer state + most tensor bytes held in forward and backward
    inference_workspace: int  # the most kernel scratch memory held at once in the eval forward
    training_workspace: int  # the same in the training forward and backward


def _optimizer(name: str, params: list[nn.Parameter]) -> torch.optim.Optimizer:
    return {"sgd": lambda: torch.optim.SGD(params, lr=0.1),
            "momentum": lambda: torch.optim.SGD(params, lr=0.1, momentum=0.9),
            "adam": lambda: torch.optim.Adam(params),
            "adamw": lambda: torch.optim.AdamW(params)}[name]()


def measure(model: nn.Module, args: tuple, kwargs: dict | None = None, optimizer: str = "adam",
            output: Callable[[Any], Any] = lambda out: out, autocast: torch.dtype | None = None) -> AllocatorFigures:
    """Allocator figures for one model on real CPU inputs. The model is trained for one step on
    zero gradients first (so that the optimizer's state exists, as in every step after the first),
    so pass a model to throw away. ``output`` picks the tensors to backpropagate from. With
    ``autocast``, the forward passes run under ``torch.autocast("cpu", dtype=autocast)`` and the
    backward outside it, as mixed-precision training does."""
    kwargs = kwargs or {}

    def region() -> Any:
        return torch.autocast("cpu", dtype=autocast) if autocast is not None else contextlib.nullcontext()

    def run() -> Any:
        with region():
            return model(*args, **kwargs)

    model.eval()
    with torch.no_grad():
        inference, _ = allocator_curve(run)

    model.train()
    params = [p for p in model.parameters() if p.requires_grad]
    opt = _optimizer(optimizer, params)
    for p in params:
        p.grad = torch.zeros_like(p)
    opt.step()
    opt.zero_grad(set_to_none=True)
    state = [t for s in opt.state.values() for t in s.values() if isinstance(t, torch.Tensor) and t.dim() > 0]
    resident = _nbytes([*model.parameters(), *model.buffers(), *state])

    held: dict[str, Any] = {}

    def forward() -> None:
        held["out"] = run()

    forward_curve, _ = allocator_curve(forward)
    roots = [t for t in _outputs(output(held["out"])) if t.requires_grad]
    saved = forward_curve.end - _nbytes(_outputs(held["out"]))

    def backward() -> None:
        torch.autograd.backward(roots, [torch.ones_like(t) for t in roots])

    backward_curve, _ = allocator_curve(backward)
    held.clear()
    roots.clear()
    opt.zero_grad(set_to_none=True)
    step_peak = max(forward_curve.peak, forward_curve.end + backward_curve.peak)
    return AllocatorFigures(inference_peak=inference.peak, saved_activations=saved,
                            training_peak=resident + step_peak, inference_workspace=inference.workspace_peak,
                            training_workspace=max(forward_curve.workspace_peak, backward_curve.workspace_peak))


# --- a whole training step --------------------------------------------------------------------

@dataclass(frozen=True)
class PhaseFigures:
    """One phase of a measured training step. Every figure is absolute: it counts the bytes that
    were resident when the step started, so that the phase with the highest ``peak`` is where the
    step's peak lies."""

    name: str  # "forward", "backward" or "optimizer"
    micro_batch: int | None  # which micro-batch a forward or backward belongs to; None for the optimizer
    start: int  # tensor bytes held when the phase began
    peak: int  # the most tensor bytes held at once during the phase
    end: int  # tensor bytes held when the phase ended
    workspace: int  # the most kernel scratch bytes held at once during the phase


@dataclass(frozen=True)
class StepFigures:
    """The allocator's figures for one whole training step (see ``measure_step``)."""

    peak: int  # the most tensor bytes held at any moment of the step, resident ones included
    parameters: int  # resident at the start: parameters and buffers, frozen ones included
    optimizer_state: int  # resident at the start: every tensor in the optimizer's state, step counters included
    inputs: int  # resident at the start: the input batch, labels included
    phases: tuple[PhaseFigures, ...]  # in the order they ran
    workspace: int  # the most kernel scratch bytes held at once, apart from ``peak``
    retained: int  # bytes held when the step ended beyond those held when it started (0 in a steady state)

    @property
    def resident(self) -> int:
        return self.parameters + self.optimizer_state + self.inputs

    @property
    def transient(self) -> int:
        """What the step holds at its peak on top of the resident bytes."""
        return self.peak - self.resident

    @property
    def peak_phase(self) -> PhaseFigures:
        """The first phase that reaches the step's peak."""
        return max(self.phases, key=lambda phase: phase.peak)

    def phase(self, name: str, micro_batch: int | None = None) -> PhaseFigures:
        """The phase of that name ("forward", "backward", "optimizer") and micro-batch."""
        return next(p for p in self.phases if p.name == name and p.micro_batch == micro_batch)


def _tensors(value: Any) -> list[torch.Tensor]:
    """The tensors in a value, looking into mappings (a Hugging Face ModelOutput or BatchEncoding),
    lists and tuples; other objects (a key-value Cache) are not looked into."""
    if isinstance(value, torch.Tensor):
        return [value]
    if isinstance(value, Mapping):
        return [t for v in value.values() for t in _tensors(v)]
    if isinstance(value, (list, tuple)):
        return [t for v in value for t in _tensors(v)]
    return []


def _loss_of(out: Any) -> torch.Tensor | None:
    """The loss as users take it from a model's output: a tensor ``loss`` attribute or key (a
    Hugging Face ModelOutput when labels are given), else the output itself if it is a tensor of
    one element, else None (the output is backpropagated as it is)."""
    loss = out.get("loss") if isinstance(out, Mapping) else getattr(out, "loss", None)
    if isinstance(loss, torch.Tensor):
        return loss
    if isinstance(out, torch.Tensor) and out.numel() == 1:
        return out
    return None


_Phase = Callable[[str], contextlib.AbstractContextManager]  # a phase's name -> the range to run it in


def _micro_batch(model: nn.Module, args: tuple, kwargs: dict, loss_fn: Callable[[Any], torch.Tensor] | None,
                 autocast: torch.dtype | None, phase: _Phase, index: int) -> None:
    """One forward and backward of the step protocol. Every reference to the output and the loss is
    dropped where the protocol drops it, so that the allocator frees them there: the references
    live in this frame only, and are deleted by hand."""
    with phase(f"forward:{index}"):
        with torch.autocast("cpu", dtype=autocast) if autocast is not None else contextlib.nullcontext():
            out = model(*args, **kwargs)
            loss = loss_fn(out) if loss_fn is not None else _loss_of(out)
            if loss is not None:
                del out  # as ``loss = model(**batch).loss`` does: the rest of the output is not held
                out = None
    with phase(f"backward:{index}"):
        if loss is not None:
            loss.backward()
            del loss
        else:
            # a gradient of ones from every output that can take one; the output is held until the
            # backward ends, as a caller holding ``out`` does
            roots = [t for t in _tensors(out) if t.is_floating_point() and t.requires_grad]
            if not roots:
                raise ValueError("the model's output has no loss and no floating tensor that requires grad")
            torch.autograd.backward(roots, [torch.ones_like(t) for t in roots])
            del roots, out


def _step(model: nn.Module, args: tuple, kwargs: dict, opt: torch.optim.Optimizer, accum: int,
          loss_fn: Callable[[Any], torch.Tensor] | None, autocast: torch.dtype | None,
          phase: _Phase) -> None:
    for index in range(accum):
        _micro_batch(model, args, kwargs, loss_fn, autocast, phase, index)
    with phase("optimizer"):
        opt.step()
        opt.zero_grad(set_to_none=True)


class _Distinct:
    """Bytes of tensors counted by storage, each storage once across every call."""

    def __init__(self) -> None:
        self.seen: set[int] = set()

    def __call__(self, tensors: Any) -> int:
        total = 0
        for t in tensors:
            storage = t.untyped_storage()
            if storage.nbytes() and storage.data_ptr() not in self.seen:
                self.seen.add(storage.data_ptr())
                total += storage.nbytes()
        return total


def measure_step(model: nn.Module, args: tuple = (), kwargs: dict | None = None, *,
                 optimizer: Callable[[list[nn.Parameter]], torch.optim.Optimizer], accum: int = 1,
                 loss_fn: Callable[[Any], torch.Tensor] | None = None,
                 autocast: torch.dtype | None = None) -> StepFigures:
    """Allocator figures for one whole training step of ``model`` on the CPU tensors given.

    The protocol, which is what burden predicts:

    1. Steady state. The model is put in train mode; ``optimizer`` is called with the trainable
       parameters (requires_grad only: frozen ones get no state) and the step below is run once
       unmeasured, so that the optimizer's state exists and the gradients are None again, as in
       every step after the first. The input tensors stay alive throughout.
    2. ``accum`` micro-batches on the same inputs: ``out = model(*args, **kwargs)`` (under
       ``torch.autocast("cpu", dtype=autocast)`` when given, the loss taken inside it too); the loss
       is ``loss_fn(out)`` when given, else ``out.loss`` (or ``out["loss"]``) when that is a tensor,
       else ``out`` when it has one element, and the rest of the output is dropped at once; then
       ``loss.backward()`` and the loss is dropped. With no loss, a gradient of ones flows back from
       every floating output tensor that requires grad, and the output is held until that backward
       ends. Gradients of the first micro-batch are allocated; later ones add into them.
    3. ``optimizer.step()``, then ``optimizer.zero_grad(set_to_none=True)``.

    The peak is the resident bytes (parameters, buffers, optimizer state, inputs: each storage
    once) plus the most tensor bytes the allocator held above them at any moment of 2 and 3, with
    kernel scratch told apart as ``allocator_curve`` does. The model is trained by this: pass one
    to throw away. Python's garbage collector is held off during the measured step, so that
    objects in reference cycles are not freed at moments that vary from run to run."""
    kwargs = kwargs or {}
    if accum < 1:
        raise ValueError(f"accum must be at least 1, not {accum}")
    model.train()
    opt = optimizer([p for p in model.parameters() if p.requires_grad])
    with _quiet_cpu():
        _step(model, args, kwargs, opt, 1, loss_fn, autocast, lambda name: contextlib.nullcontext())
    if any(p.grad is not None for p in model.parameters()):
        raise ValueError("a parameter still has a gradient after optimizer.zero_grad(): is it outside the optimizer?")

    distinct = _Distinct()
    parameters = distinct([*model.parameters(), *model.buffers()])
    optimizer_state = distinct(t for state in opt.state.values() for t in _tensors(state))
    inputs = distinct(_tensors((args, kwargs)))
    resident = parameters + optimizer_state + inputs

    gc.collect()
    collecting = gc.isenabled()
    gc.disable()
    try:
        with _quiet_cpu(), profile(activities=[ProfilerActivity.CPU], profile_memory=True) as prof:
            _step(model, args, kwargs, opt, accum, loss_fn, autocast,
                  lambda name: record_function(_PHASE + name))
    finally:
        if collecting:
            gc.enable()

    events = _phase_allocations(prof.profiler.kineto_results.experimental_event_tree())
    names = [f"{part}:{index}" for index in range(accum) for part in ("forward", "backward")] + ["optimizer"]
    # [start, peak, end, workspace peak] of each phase, relative to the step's start
    spans: dict[str, list[int]] = {}
    tensors = workspace = peak = workspace_peak = 0
    for (time, ptr, size, kernel_end, name, _), scratch in zip(events, _scratch(events)):
        span = spans.setdefault(name, [tensors, tensors, tensors, 0]) if name is not None else None
        if scratch:
            workspace += size
        else:
            tensors += size
        peak, workspace_peak = max(peak, tensors), max(workspace_peak, workspace)
        if span is not None:
            span[1], span[2], span[3] = max(span[1], tensors), tensors, max(span[3], workspace)
    phases = []
    level = 0  # a phase without allocator events holds what the one before it left
    for name in names:
        start, top, end, scratch_top = spans.get(name, [level, level, level, 0])
        level = end
        part, _, index = name.partition(":")
        phases.append(PhaseFigures(name=part, micro_batch=int(index) if index else None, start=resident + start,
                                   peak=resident + top, end=resident + end, workspace=scratch_top))
    return StepFigures(peak=resident + peak, parameters=parameters, optimizer_state=optimizer_state, inputs=inputs,
                       phases=tuple(phases), workspace=workspace_peak, retained=tensors)


@dataclass(frozen=True)
class RankFigures:
    """The allocator's figures for one rank of a parallel training step (``measure_built_step``)."""

    resident: int  # tensor bytes held when the measured step starts: shards, optimizer state, inputs, and all else
    peak: int  # the most tensor bytes held at once during the measured step
    workspace: int  # the most kernel scratch bytes held at once during it, apart from ``peak``
    backend: int  # the most bytes the process group's own buffers held at once during it, apart from ``peak``
    retained: int  # tensor bytes held when it ended beyond ``resident`` (0 in a steady state)


def measure_built_step(build: Callable[[], tuple[nn.Module, tuple, dict, torch.optim.Optimizer]],
                       step: Callable[[nn.Module, tuple, dict, torch.optim.Optimizer], None]) -> RankFigures:
    """One training step as the allocator sees it from before the model exists: ``build`` makes the
    model (sharded or parallelized as it will train), its inputs and its optimizer; ``step`` runs
    one whole step (forward, backward, ``optimizer.step()``, ``zero_grad``). One step is run
    unmeasured first, for the steady state. Every allocator event from the start is summed, so the
    resident bytes are the allocator's own count of what is held when the measured step starts,
    whatever holds it (a parallel engine's buffers kept between steps included), not a sum over
    tensors someone knows of.

    A block that a collective takes (inside a ``c10d::`` op, or in gloo's own worker ranges) is the
    process group's buffer, not a tensor of the program, wherever it is given back: gloo copies a
    reduce-scatter's input and holds it until the work is done, and takes an output-sized block
    inside each all-gather, where NCCL keeps its buffers outside PyTorch's allocator. Those are
    reported apart (``backend``), as kernel scratch is (``workspace``).

    gloo's worker threads take and give back some blocks where the profiler does not hear them
    (a work's tensors let go when the thread drops the finished work). So every event is paired
    by address: a free whose allocation went unheard is ignored, and an allocation at an address
    that is still taken means the block there was freed unheard, no later than now."""
    collecting = gc.isenabled()
    try:
        with _quiet_cpu(), profile(activities=[ProfilerActivity.CPU], profile_memory=True) as prof:
            with record_function(_PHASE + "build"):
                model, args, kwargs, opt = build()
                step(model, args, kwargs, opt)
                gc.collect()  # what the steps before left in reference cycles, as a long run collects it
            gc.disable()  # no collection at a moment that varies from run to run
            with record_function(_PHASE + "step"):
                step(model, args, kwargs, opt)
    finally:
        if collecting:
            gc.enable()
    events = _phase_allocations(prof.profiler.kineto_results.experimental_event_tree())
    levels = {"tensors": 0, "workspace": 0, "backend": 0}
    taken: dict[int, tuple[int, str]] = {}  # address -> (bytes, which level)
    resident = None
    peaks = {"tensors": 0, "workspace": 0, "backend": 0}
    for (time, ptr, size, kernel_end, name, collective), scratch in zip(events, _scratch(events)):
        if name == "step" and resident is None:
            resident = peaks["tensors"] = levels["tensors"]
        if size > 0:
            if ptr in taken:  # freed unheard
                old, where = taken.pop(ptr)
                levels[where] -= old
            where = "backend" if collective else "workspace" if scratch else "tensors"
            taken[ptr] = (size, where)
            levels[where] += size
        elif ptr in taken:
            old, where = taken.pop(ptr)
            levels[where] -= old
        if resident is not None:
            for key, level in levels.items():
                peaks[key] = max(peaks[key], level)
    if resident is None:
        raise ValueError("the measured step made no allocator event")
    return RankFigures(resident=resident, peak=peaks["tensors"], workspace=peaks["workspace"],
                       backend=peaks["backend"], retained=levels["tensors"] - resident)
