"""Memory and FLOPs of one whole training step: forward, backward, ``optimizer.step()`` and
``zero_grad``, in the steady state.

The step runs for real through autograd and ``torch.optim``, on the meta device by default, with
stand-ins for the model's parameters and buffers, so that nothing of the user's model is written
to and no real memory is used. Before it, the optimizer takes one step on zero gradients, so
that its state exists as in every step after the first (``burden.optimizers``). Then a
``Tracer`` records every op of the step, its ``Lifetimes`` observer when each storage is freed,
and ``saved_tensors_hooks`` what autograd saves for backward:

- each micro-batch's forward, then the backward from the loss the model returns (a
  ``ModelOutput``'s ``loss``, or a one-element output), the rest of the output dropped at once
  as ``loss = model(**batch).loss`` drops it; or, for a model that returns no loss, from a
  gradient of ones on every output, which is held until that backward ends;
- under gradient accumulation, the next micro-batch with the gradients held; a third and later
  micro-batch would repeat the second exactly (the same tensors live), so at most two are run;
- the optimizer's step, then ``zero_grad(set_to_none=True)``, which frees the gradients.

Held throughout: parameters, buffers, the optimizer's state and the input batch. The backward
FLOPs are those of the ops autograd really runs, under the convention's formulas
(``convnet_backward`` adds the backward rules of convnet-burden); the optimizer's arithmetic is
not counted in FLOPs.
"""

from __future__ import annotations

import inspect
from contextlib import AbstractContextManager, ExitStack, contextmanager, nullcontext
from dataclasses import dataclass, replace
from typing import Any, Callable, Iterator

import torch
import torch.utils.checkpoint
from torch import nn

from .containers import iter_tensors, map_tensors
from .counting import attribute_with_table, held_sizes
from .device_memory import DeviceRun, workspaces
from .errors import BurdenError, DataDependentError, InputSpecError
from .trace_errors import first_line, needs_values, needs_values_message
from .figures import TrainingFigures, UncountedOp
from .formulas import FormulaTable
from .memory import Allocation, Lifetimes, batch_independent, replay
from .optimizers import Optimizer, build as build_optimizer
from .patching import replaced
from .records import OpEvent, Trace, local_tensor
from .request import Request, input_sizes
from .stand_ins import fresh_meta_stand_in, training_stand_in
from .state import preserved_modes
from .trace import Tracer

FORWARD, BACKWARD, STEP = "forward", "backward", "optimizer step"


@dataclass(frozen=True)
class Step:
    """A training step's figures, and for the planner: the bytes held after each of its ops
    (everything included), the part of those that does not grow with the batch (given the batch
    the step ran at), and the step as the device's caching allocator sees it."""

    figures: TrainingFigures
    curve: tuple[int, ...]
    fixed_curve: tuple[int, ...]
    device_run: DeviceRun
    events: tuple[OpEvent, ...] = ()


def training_step(model: nn.Module, args: tuple, kwargs: dict | None, req: Request,
                  checkpoint: tuple[str, ...] = (), batch: int | None = None,
                  watch: Callable[[Tracer], AbstractContextManager] | None = None, kept: dict | None = None) -> Step:
    """One steady-state training step of ``model`` on ``args``/``kwargs`` under ``req`` (its
    convention, element size, mixed precision, target accounting and ``req.training``).

    The model is run in training mode with gradients on, and comes back as it was: modes,
    ``requires_grad`` flags, hooks, buffers and ``.grad`` fields untouched. On meta (the request's
    default) ``args`` should be meta tensors; on a real device the step runs on real tensors, with
    burden's own copies of the parameters (the optimizer writes to them) and buffers.

    With ``watch``, ``model`` is burden's own copy (a rank's share of a sharded model, of fake
    tensors: ``burden.sharded``), run as it is, and ``watch(tracer)`` is entered around the step.
    ``kept``, a dict the caller keeps across steps of one model of its own, carries the optimizer
    and its state from one step to the next (they do not depend on the batch).
    """
    rules = req.convention
    if rules.flops is None or rules.backward is None:
        raise InputSpecError(f"the {rules.name} convention has no backward rules; analyse training under "
                             f"convnet-burden or torch")
    kwargs = kwargs or {}
    step = _record_step(model, args, kwargs, req, checkpoint, watch, kept)
    elsize, accounts = req.elsize(model), req.accounting
    # under mixed precision the features are of several dtypes: each counts at its own size
    features = None if req.amp is not None else elsize
    sizer, state_sizer = accounts.sizer(features), accounts.sizer(elsize)

    def size(allocation: Allocation) -> int:
        nbytes = sizer(allocation)
        return accounts.share(nbytes, 2) if allocation.gradient else nbytes

    tensors = {"parameters and buffers": tuple(held_sizes(model, elsize, accounts)),
               "optimizer state": tuple(accounts.share(state_sizer(a), 1) for a in step.state),
               "input batch": tuple(input_sizes(args, kwargs, elsize))}
    held = {what: accounts.tensors(sizes) for what, sizes in tensors.items()}
    base = sum(held.values())
    allocations = {**step.allocations, **workspaces(step.events, (0, step.backward_start), accounts)}
    live = replay(step.events, allocations, step.released, features, size=size)
    curve = tuple(base + v for v in live.curve)
    phases = _phase_peaks(curve, step.phases)
    peak_at = live.peak_op.index if live.peak_op is not None else 0
    step_start = next(start for start, phase in step.phases if phase == STEP)
    run = DeviceRun((*tensors["parameters and buffers"], *tensors["input batch"]), allocations, step.released, size,
                    len(step.events), accounts, (step_start, tensors["optimizer state"]))
    fixed_curve: tuple[int, ...] = ()
    if batch is not None:
        shapes = {tuple(p.shape) for p in model.parameters()}
        fixed = batch_independent(allocations, batch, shapes)
        fixed_curve = tuple(base - held["input batch"] + v
                            for v in replay(step.events, fixed, step.released, features, size=size).curve)
    figures = TrainingFigures(
        optimizer=step.optimizer.name, optimizer_impl=step.optimizer.impl, grad_accum=req.training.grad_accum,
        loss=step.loss, param_bytes=held["parameters and buffers"],
        gradient_bytes=sum(size(a) for a in allocations.values() if a.gradient),
        optimizer_bytes=held["optimizer state"], input_bytes=held["input batch"],
        saved_activation_bytes=sum(size(allocations[s]) for s in step.saved_at_first),
        forward_peak_bytes=phases.get(FORWARD, base), backward_peak_bytes=phases.get(BACKWARD, base),
        optimizer_step_peak_bytes=phases.get(STEP, base), training_peak_bytes=max(curve, default=base),
        peak_phase=_phase_name(peak_at, step.phases, step.micro_batches), peak_op=live.peak_op,
        peak_parts=_peak_parts(step, allocations, peak_at, size, tuple(held.items())),
        checkpointed=tuple(checkpoint), recompute_peak_bytes=max((curve[i] for i in step.recomputed), default=0),
        unchecked_peak_bytes=max(curve, default=base), reserved_bytes=(run.reserved() or 0) if accounts.cuda else 0,
        **_step_flops(model, step, req))
    return Step(figures, curve, fixed_curve, run, tuple(step.events))


def _step_flops(model: nn.Module, step: "_Step", req: Request) -> dict[str, Any]:
    """The step's FLOPs under the request's convention: the first micro-batch's forward and
    backward (with the recomputation of checkpointed modules), times the micro-batches."""
    rules, times = req.convention, req.training.grad_accum
    first = range(step.backward_start, step.first_backward_end)
    backward = Trace(events=[step.events[i] for i in first], modules={})
    forward_flops, _, forward_uncounted = _flops(model, step.forward, rules.flops)
    backward_flops, by_module, backward_uncounted = _flops(model, backward, rules.backward)
    recomputed = [step.events[i] for i in sorted(step.recomputed) if i in first]
    recompute_flops = _flops(model, Trace(events=recomputed, modules={}), rules.flops)[0] if recomputed else 0
    return {"forward_flops": forward_flops * times, "backward_flops": backward_flops * times,
            "backward_uncounted_ops": backward_uncounted, "forward_uncounted_ops": forward_uncounted,
            "backward_flops_by_module": by_module, "recompute_flops": recompute_flops * times}


def _phase_name(index: int, phases: tuple[tuple[int, str], ...], micro_batches: int) -> str:
    """The phase holding op ``index``, with its micro-batch when there are several."""
    seen: dict[str, int] = {}
    name, number = FORWARD, 1
    for start, phase in phases:
        if start > index:
            break
        seen[phase] = seen.get(phase, 0) + 1
        name, number = phase, seen[phase]
    if micro_batches > 1 and name != STEP:
        return f"{name} (micro-batch {number})"
    return name


def _phase_peaks(curve: tuple[int, ...], phases: tuple[tuple[int, str], ...]) -> dict[str, int]:
    peaks: dict[str, int] = {}
    bounds = [start for start, _ in phases] + [len(curve)]
    for (start, phase), end in zip(phases, bounds[1:]):
        if end > start:
            peaks[phase] = max(peaks.get(phase, 0), max(curve[start:end]))
    return peaks


def _peak_parts(step: "_Step", allocations: dict[int, Allocation], at: int, size: Callable[[Allocation], int],
                held: tuple[tuple[str, int], ...]) -> tuple[tuple[str, int], ...]:
    """What the step holds at op ``at``, by kind: what is held throughout, the gradients, the
    activations autograd saved, the optimizer step's temporaries, the cuBLAS workspaces, and
    everything else (the outputs, gradients flowing through the graph, temporaries of forward and
    backward)."""
    parts = dict(held)
    parts.update({"gradients": 0, "saved activations": 0, "optimizer step temporaries": 0,
                  "cuBLAS workspaces": 0, "activations and temporaries": 0})
    step_start = next((start for start, phase in step.phases if phase == STEP), len(step.events))
    for storage, allocation in allocations.items():
        if allocation.event > at or step.released.get(storage, len(step.events)) < at:
            continue
        if storage < 0:
            kind = "cuBLAS workspaces"
        elif allocation.gradient:
            kind = "gradients"
        elif storage in step.saved:
            kind = "saved activations"
        elif allocation.event >= step_start:
            kind = "optimizer step temporaries"
        else:
            kind = "activations and temporaries"
        parts[kind] += size(allocation)
    return tuple(parts.items())


@dataclass
class _Step:
    events: list[OpEvent]
    forward: Trace  # the first forward, with its module calls
    allocations: dict[int, Allocation]
    released: dict[int, int]
    saved: set[int]  # storages autograd saved for backward, in any micro-batch
    saved_at_first: set[int]  # those still alive when the first forward ended
    recomputed: set[int]  # events of checkpointed modules run again in backward
    phases: tuple[tuple[int, str], ...]  # (first event, phase), in order
    backward_start: int  # the first backward's first event
    first_backward_end: int  # events before this index belong to the first micro-batch
    micro_batches: int
    optimizer: Optimizer
    state: list[Allocation]  # the optimizer's state tensors, each storage once
    loss: str


@contextmanager
def _checkpointed(model: nn.Module, paths: tuple[str, ...], tracer: Tracer, recomputed: set[int]) -> Iterator[None]:
    """Each module in ``paths`` run under ``torch.utils.checkpoint`` (non-reentrant, as PyTorch
    recommends) for the block: its forward keeps only its inputs, and backward runs it again.
    The events of those second runs are collected in ``recomputed``. The modules' own
    ``forward`` attributes are put back afterwards."""
    modules = dict(model.named_modules())

    def wrap(module: nn.Module) -> Callable:
        forward = module.forward

        def run(*args: Any, **kwargs: Any) -> Any:
            start = len(tracer.events)
            try:
                return forward(*args, **kwargs)
            finally:
                if tracer.phase == BACKWARD:  # the recomputation
                    recomputed.update(range(start, len(tracer.events)))

        return lambda *args, **kwargs: torch.utils.checkpoint.checkpoint(run, *args, use_reentrant=False, **kwargs)

    with ExitStack() as stack:
        for path in paths:
            stack.enter_context(replaced(modules[path], "forward", wrap(modules[path])))
        yield


def _loss(output: Any) -> tuple[torch.Tensor | None, str]:
    """The loss a user backpropagates: the model's own (a ``ModelOutput``'s ``loss``, as when
    ``labels`` are given), or a one-element output; None when the model returns neither."""
    found = output.get("loss") if isinstance(output, dict) else getattr(output, "loss", None)
    if isinstance(found, torch.Tensor) and found.numel() == 1 and found.requires_grad:
        return found, "the model's loss (output.loss)"
    if isinstance(output, torch.Tensor) and output.numel() == 1 and output.requires_grad:
        return output, "the model's one-element output"
    return None, "a gradient of ones on every output (the model returns no loss)"


def _record_step(model: nn.Module, args: tuple, kwargs: dict, req: Request, checkpoint: tuple[str, ...],
                 watch: Callable[[Tracer], AbstractContextManager] | None, kept: dict | None) -> _Step:
    lifetimes = Lifetimes()
    attribution = _BackwardAttribution(model)
    tracer = Tracer(model, meta=req.meta, make=fresh_meta_stand_in if req.meta else training_stand_in,
                    observers=(lifetimes, attribution), kernels=req.kernels, own_model=watch is not None)
    attribution.tracer = tracer
    saved: set[int] = set()
    recomputed: set[int] = set()
    phases: list[tuple[int, str]] = []
    gradients: set[int] = set()
    micro_batches = min(req.training.grad_accum, 2)

    def pack(t: torch.Tensor) -> torch.Tensor:
        number = lifetimes.allocation_of(t)
        if number is not None:
            saved.add(number)
        return t

    def enter(phase: str) -> None:
        tracer.phase = phase
        phases.append((len(tracer.events), phase))

    # the step's graph must not reach into a graph the caller's inputs may belong to
    args, kwargs = map_tensors(torch.Tensor.detach, args), map_tensors(torch.Tensor.detach, kwargs)
    if checkpoint and "use_cache" not in kwargs and "use_cache" in inspect.signature(model.forward).parameters:
        # as Hugging Face's own gradient checkpointing does: a recomputed layer would add its keys and
        # values to the generation cache a second time
        kwargs = {**kwargs, "use_cache": False}
    try:
        with preserved_modes(model, train=True), tracer.session(), torch.enable_grad(), \
                _checkpointed(model, checkpoint, tracer, recomputed), (watch or _unwatched)(tracer):
            params = [p for p in model.parameters() if p.requires_grad]
            if not params:
                raise InputSpecError("nothing to train: the model has no parameter that requires grad")
            optimizer = kept.get("optimizer") if kept is not None else None
            if optimizer is None:
                optimizer = build_optimizer(req.training.optimizer, params, req.training.optimizer_impl,
                                            req.accounting.target)
            if kept is not None:
                kept["optimizer"] = optimizer
            forward = None
            loss_kind = ""
            for micro in range(micro_batches):
                enter(FORWARD)
                with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
                    output = tracer.forward(args, kwargs)
                if micro == 0:
                    whole = tracer.trace(output)
                    forward = replace(whole, events=list(whole.events))  # the backward ops go on after these
                    saved -= set(lifetimes.released)
                    saved_at_first = set(saved)
                loss, loss_kind = _loss(output)
                enter(BACKWARD)
                if micro == 0:
                    backward_start = len(tracer.events)
                if loss is not None:
                    del output  # loss = model(**batch).loss keeps nothing else
                    _backward([loss], tracer)
                    del loss
                else:
                    _backward(output, tracer)
                    del output
                gradients.update(n for p in params if p.grad is not None
                                 for n in [lifetimes.allocation_of(local_tensor(p.grad))] if n is not None)
                if micro == 0:
                    first_backward_end = len(tracer.events)
            with tracer.small_values():
                if not optimizer.has_state(p for p in params if p.grad is not None):  # else kept from a step before
                    with tracer.unrecorded():
                        _warm_up(optimizer, params)
                state = _state_allocations(optimizer, req.meta)
                enter(STEP)
                tracer.own_real_tensors = True
                with tracer.recording():
                    optimizer.step()
                optimizer.zero_grad()
                tracer.own_real_tensors = False
    finally:
        tracer.stop()
        attribution.remove()
    allocations, released, merged = _in_place_accumulation(tracer.events, attribution.accumulations,
                                                           lifetimes.allocations, lifetimes.released)
    for number in {_merged_into(merged, g) for g in gradients} & allocations.keys():
        allocations[number] = replace(allocations[number], gradient=True)
    return _Step(events=tracer.events, forward=forward, allocations=allocations, released=released, saved=saved,
                 saved_at_first=saved_at_first,
                 recomputed=recomputed, phases=tuple(phases), backward_start=backward_start,
                 first_backward_end=first_backward_end,
                 micro_batches=req.training.grad_accum, optimizer=optimizer, state=state, loss=loss_kind)


def _unwatched(tracer: Tracer) -> AbstractContextManager:
    return nullcontext()


def _warm_up(optimizer: Optimizer, params: list[nn.Parameter]) -> None:
    """The optimizer's state as every step after the first finds it, made by its own first step on
    zero gradients. It runs once the step's gradients exist, unrecorded, so that it makes state for
    the parameters that really get a gradient (an optimizer skips one whose ``.grad`` is None); the
    state is held from the step's start all the same."""
    grads = [p.grad for p in params]
    for p in params:
        p.grad = None
    try:
        optimizer.warm_up([p for p, g in zip(params, grads) if g is not None])
    except BurdenError:
        raise
    except Exception as exc:
        if needs_values(exc):  # its step reads a value (.item()): a run on real tensors can give it
            raise DataDependentError(needs_values_message(f"the {optimizer.name} optimizer's step reads tensor "
                                                          f"values ({first_line(exc)})", "the optimizer")) from None
        raise InputSpecError(f"the optimizer {optimizer.name} cannot run on burden's stand-ins: {exc}") from None
    finally:
        for p, g in zip(params, grads):
            p.grad = g


def _state_allocations(optimizer: Optimizer, meta: bool) -> list[Allocation]:
    """The optimizer's state tensors, each storage once, as allocations (its CPU step counters are
    host memory when the step runs on meta)."""
    found: dict[int, Allocation] = {}
    for t in map(local_tensor, optimizer.state_tensors()):
        storage = t.untyped_storage()
        found[storage._cdata] = Allocation(-1, storage.nbytes() // t.element_size(), t.dtype, tuple(t.shape),
                                           host=meta and not t.is_meta)
    return list(found.values())


def _merged_into(merged: dict[int, int], storage: int) -> int:
    """The storage whose memory a sum's result lives in, through sums of sums."""
    while storage in merged:
        storage = merged[storage]
    return storage


def _in_place_accumulation(events: list[OpEvent], accumulations: list[int], allocations: dict[int, Allocation],
                           released: dict[int, int]) -> tuple[dict[int, Allocation], dict[int, int], dict[int, int]]:
    """Where eager autograd sums two gradients for one input in place; also which result storage
    lives in which operand's memory (a parameter's summed gradient is that operand).

    The engine adds a second gradient into the first with ``add_`` when it holds the last
    reference to the first (and else into the second, if it holds that one's), and out of place
    only otherwise. Under a dispatch mode, as in any trace, it always adds out of place. A sum
    whose operand dies right after it is therefore the eager in-place sum: its result lives in
    the operand's memory and allocates nothing.
    """
    allocations, released = dict(allocations), dict(released)
    merged: dict[int, int] = {}
    for index in accumulations:
        event = events[index]
        result = event.outputs[0]
        for operand in event.inputs[:2]:
            storage = operand.storage
            if (storage in allocations and released.get(storage) == index and result.storage in allocations
                    and tuple(operand.shape) == tuple(result.shape) and operand.dtype == result.dtype):
                del allocations[result.storage]
                merged[result.storage] = storage
                if result.storage in released:
                    released[storage] = released.pop(result.storage)
                else:
                    del released[storage]  # the sum is still alive at the end: so is the operand
                break
    return allocations, released, merged


def _backward(output: Any, tracer: Tracer) -> None:
    """Backpropagate from ``output``: from a loss as it is, or a gradient of ones from every
    output that needs one, recording the ops."""
    roots = [t for t in iter_tensors(output) if t.requires_grad and t.is_floating_point()]
    if not roots:
        raise InputSpecError("nothing to train: no model output depends on a parameter that requires grad")
    with tracer.recording():
        seeds = [torch.ones_like(t) for t in roots]
        tracer.backward(roots, seeds)
    tracer.stack.clear()


class _BackwardAttribution:
    """Attributes each backward op to the module whose forward created the autograd node.

    When a module returns, the nodes between its output and its inputs' nodes (taken when it
    was called, before any in-place op rewrites them) that no inner module claimed are its own.
    A pre-hook on each such node names the module while autograd runs that node.
    """

    def __init__(self, model: nn.Module) -> None:
        self.tracer: Tracer | None = None
        self.between_nodes = False  # the engine is passing gradients on, not running a node
        self.accumulations: list[int] = []  # events of the engine summing two gradients for one input
        self.claimed: set[int] = set()  # sequence numbers; holding nodes would keep them alive
        self.boundaries: list[set[int]] = []
        self.handles = []
        for path, module in model.named_modules():
            self.handles.append(module.register_forward_pre_hook(self._called, with_kwargs=True))
            self.handles.append(module.register_forward_hook(self._returned(path)))

    def _called(self, module: nn.Module, args: tuple, kwargs: dict) -> None:
        inputs = iter_tensors((args, kwargs))
        self.boundaries.append({t.grad_fn._sequence_nr() for t in inputs if t.grad_fn is not None})

    def _returned(self, path: str) -> Callable:
        def hook(module: nn.Module, args: Any, output: Any) -> None:
            stop = self.boundaries.pop()
            todo = [t.grad_fn for t in iter_tensors(output) if t.grad_fn is not None]
            while todo:
                node = todo.pop()
                if node is None or hasattr(node, "variable"):  # AccumulateGrad: a parameter's leaf
                    continue
                number = node._sequence_nr()
                if number in self.claimed or number in stop:
                    continue
                self.claimed.add(number)
                node.register_prehook(self._running(path))
                node.register_hook(self._finished)
                todo.extend(next_node for next_node, _ in node.next_functions)
        return hook

    def _running(self, path: str) -> Callable:
        def prehook(grad_outputs: Any) -> None:
            self.between_nodes = False
            self.tracer.attribute_to(path)
        return prehook

    def _finished(self, grad_inputs: Any, grad_outputs: Any) -> None:
        self.between_nodes = True

    def storage_freed(self, tracer: Tracer, storage: int) -> None:
        pass

    def storage_allocated(self, tracer: Tracer, tensor: torch.Tensor, storage: int) -> None:
        pass

    def op_recorded(self, tracer: Tracer, event: OpEvent, outputs: tuple[torch.Tensor, ...]) -> None:
        if self.between_nodes and event.packet is torch.ops.aten.add and any(event.fresh):
            self.accumulations.append(len(tracer.events) - 1)

    def remove(self) -> None:
        for handle in self.handles:
            handle.remove()


def _flops(model: nn.Module, trace: Trace, table: FormulaTable) -> tuple[int, tuple[tuple[str, int], ...],
                                                                      tuple[UncountedOp, ...]]:
    """Total FLOPs, FLOPs per module (modules with none left out) and the ops with no rule, by the
    same attribution as an inference estimate (module-type formulas included)."""
    flops = attribute_with_table(table, model, trace)
    return (sum(flops.self_flops.values()), tuple((p, n) for p, n in flops.self_flops.items() if n),
            flops.uncounted())

