"""Memory and FLOPs of one training step: forward, backward, and what the optimizer keeps.

The step runs for real through autograd, on the meta device by default, with stand-ins for the
model's parameters and buffers, so that nothing of the user's model is written to and no real
memory is used. A ``Tracer`` records every forward and backward op, its ``Lifetimes`` observer
when each storage is freed; ``saved_tensors_hooks`` sees what autograd saves for backward. The backward FLOPs are
those of the ops autograd really runs, under the convention's formulas (``convnet_backward``
adds the backward rules of convnet-burden).
"""

from __future__ import annotations

from contextlib import ExitStack, contextmanager
from dataclasses import dataclass, replace
from typing import Any, Callable, Iterator, Sequence

import torch
import torch.utils.checkpoint
from torch import nn

from .accounting import Accounting
from .containers import iter_tensors, map_tensors
from .conventions import Convention, get_convention
from .counting import attribute_with_table, own_params, tensor_sizes
from .errors import InputSpecError
from .figures import PeakOp, UncountedOp
from .formulas import FormulaTable
from .options import DEFAULT_CONVENTION, OPTIMIZER_STATES
from .patching import replaced
from .memory import Allocation, Lifetimes, LiveMemory, batch_independent, replay
from .records import OpEvent, Trace
from .stand_ins import fresh_meta_stand_in, training_stand_in
from .state import preserved_modes
from .trace import Tracer



@dataclass(frozen=True)
class TrainingMemory:
    """One training step of a model, at one input, batch size and element size.

    - ``param_bytes``: parameters and floating-point buffers (as in the inference report).
    - ``gradient_bytes``: one gradient per trainable (``requires_grad``) parameter.
    - ``optimizer_bytes``: the optimizer's state, ``OPTIMIZER_STATES[optimizer]`` tensors the size
      of each trainable parameter (momentum buffer; Adam's two moments). Its step counters and
      the temporaries of ``optimizer.step()`` itself are not counted.
    - ``saved_activation_bytes``: what autograd holds for backward when the forward ends: the
      distinct storages it saved, each once, leaving out parameters, buffers and model inputs.
    - ``forward_peak_bytes`` / ``backward_peak_bytes``: the most memory live at any op of the
      forward / backward pass, besides parameters, buffers and the model input (the caller's):
      features and saved activations not yet freed, the model's output, and in backward the
      gradient of ones fed to it, gradient temporaries and the parameter gradients produced so
      far (they stay live in ``.grad``). Frees are the eager ones, observed (see burden.memory).
    - ``training_peak_bytes = param_bytes + optimizer_bytes + max(forward_peak_bytes,
      backward_peak_bytes)``: the step's high-water mark, assuming gradients start the step
      unallocated (``zero_grad(set_to_none=True)``, PyTorch's default). The gradients are inside
      the backward peak, so ``gradient_bytes`` is not added again.
    - ``forward_flops`` / ``backward_flops``: the convention's FLOPs of the forward ops (run in
      training mode) and of the ops autograd ran in backward; ops without a rule count 0 and are
      listed in ``forward_uncounted`` / ``backward_uncounted``.
    """

    optimizer: str
    param_bytes: int
    gradient_bytes: int
    optimizer_bytes: int
    saved_activation_bytes: int
    forward_peak_bytes: int
    backward_peak_bytes: int
    training_peak_bytes: int
    peak_op: PeakOp | None  # where the step peaks, forward or backward
    forward_flops: int
    backward_flops: int
    backward_flops_by_module: tuple[tuple[str, int], ...]  # (module path, its own backward FLOPs), nonzero
    forward_uncounted: tuple[UncountedOp, ...]
    backward_uncounted: tuple[UncountedOp, ...]
    live: LiveMemory  # live non-parameter bytes at each op, forward ops first
    forward_ops: int  # how many of ``live.curve`` are forward ops
    # with ``batch`` given: the part of ``live.curve`` that does not grow with the batch (the planner's)
    fixed_curve: tuple[int, ...] = ()
    # what is live at the step's peak op: (what, bytes), summing to the peak of ``live``
    peak_parts: tuple[tuple[str, int], ...] = ()
    # with ``checkpoint``: the modules recomputed in backward, the FLOPs of that recomputation
    # (part of ``backward_flops``) and the most live memory while it runs (as ``backward_peak_bytes``)
    checkpointed: tuple[str, ...] = ()
    recompute_flops: int = 0
    recompute_peak_bytes: int = 0


def optimizer_states(optimizer: str) -> int:
    try:
        return OPTIMIZER_STATES[optimizer]
    except KeyError:
        raise InputSpecError(f"unknown optimizer {optimizer!r}; use one of {', '.join(OPTIMIZER_STATES)}") from None


def training_step(model: nn.Module, args: tuple, kwargs: dict | None = None, *, optimizer: str = "adam",
                  elsize: int = 4, meta: bool = True,
                  convention: str | Convention = DEFAULT_CONVENTION, batch: int | None = None,
                  checkpoint: Sequence[str] = (), amp: torch.dtype | None = None,
                  accounting: Accounting = Accounting()) -> TrainingMemory:
    """Memory and FLOPs of one training step of ``model`` on ``args`` (see ``TrainingMemory``).

    The model is run in training mode with gradients on, and comes back as it was: modes,
    ``requires_grad`` flags, hooks, buffers and ``.grad`` fields untouched. With ``meta=True``
    (default) ``args`` should be meta tensors; with ``meta=False`` the step runs on the real
    tensors, with gradients going to detached aliases of the parameters and the buffers cloned.
    """
    states = optimizer_states(optimizer)
    rules = get_convention(convention) if isinstance(convention, str) else convention
    if rules.flops is None or rules.backward is None:
        raise InputSpecError(f"the {rules.name} convention has no backward rules; analyse training under "
                             f"convnet-burden or torch")
    owned = own_params(model, elsize).values()
    param_bytes, trainable = sum(s.bytes for s in owned), sum(s.trainable for s in owned)
    gradient_bytes, optimizer_bytes = trainable * elsize, states * trainable * elsize
    shapes = {tuple(p.shape) for p in model.parameters()}
    if not accounting.plain:  # each tensor an allocation of its own, and one device's share of it
        params, buffers = tensor_sizes(model, elsize)
        grads = [n for n, trainable in params if trainable]
        param_bytes = accounting.share(accounting.tensors(n for n, _ in params), 3) + accounting.tensors(buffers)
        gradient_bytes = accounting.share(accounting.tensors(grads), 2)
        optimizer_bytes = accounting.share(states * accounting.tensors(grads), 1)
    step = _record_step(model, args, kwargs or {}, meta, tuple(checkpoint), amp)
    forward_ops = len(step.forward.events)
    # under mixed precision the features are of several dtypes: each counts at its own size
    features = None if amp is not None else elsize

    def size(allocation: Allocation) -> int:
        nbytes = allocation.nbytes(features)
        if _is_gradient(allocation, forward_ops, shapes):
            nbytes = accounting.share(nbytes, 2)
        return accounting.allocation(nbytes)

    live = replay(step.events, step.allocations, step.released, features, size=size)
    backward = Trace(events=step.events[forward_ops:], modules={})
    forward_flops, _, forward_uncounted = _flops(model, step.forward, rules.flops)
    recomputed = Trace(events=[step.events[i] for i in sorted(step.recomputed)], modules={})
    recompute_flops = _flops(model, recomputed, rules.flops)[0] if step.recomputed else 0
    recompute_peak = max((live.curve[i] for i in step.recomputed), default=0)
    backward_flops, by_module, backward_uncounted = _flops(model, backward, rules.backward)
    forward_peak = max(live.curve[:forward_ops], default=0)
    backward_peak = max(live.curve[forward_ops:], default=0)
    fixed_curve: tuple[int, ...] = ()
    if batch is not None:
        fixed = batch_independent(step.allocations, batch, shapes)
        fixed_curve = replay(step.events, fixed, step.released, features, size=size).curve
    return TrainingMemory(
        optimizer=optimizer, param_bytes=param_bytes, gradient_bytes=gradient_bytes,
        optimizer_bytes=optimizer_bytes,
        saved_activation_bytes=sum(size(step.allocations[s]) for s in step.saved),
        forward_peak_bytes=forward_peak, backward_peak_bytes=backward_peak,
        training_peak_bytes=param_bytes + optimizer_bytes + max(forward_peak, backward_peak),
        peak_op=live.peak_op, forward_flops=forward_flops, backward_flops=backward_flops,
        backward_flops_by_module=by_module, forward_uncounted=forward_uncounted,
        backward_uncounted=backward_uncounted, live=live, forward_ops=forward_ops, fixed_curve=fixed_curve,
        peak_parts=_peak_parts(step, live, shapes, size), checkpointed=tuple(checkpoint),
        recompute_flops=recompute_flops, recompute_peak_bytes=recompute_peak,
    )


def _is_gradient(allocation: Allocation, forward_ops: int, param_shapes: set[tuple[int, ...]]) -> bool:
    """A parameter's gradient: parameter-shaped, and made in backward."""
    return allocation.event >= forward_ops and allocation.shape in param_shapes


def _peak_parts(step: "_Step", live: LiveMemory, param_shapes: set[tuple[int, ...]],
                size: Callable[[Allocation], int]) -> tuple[tuple[str, int], ...]:
    """The allocations live at the peak op, by kind: parameter gradients (parameter-shaped,
    made in backward), activations autograd saved, and everything else (the output, gradients
    flowing through the graph, temporaries)."""
    if live.peak_op is None:
        return ()
    at, forward_ops = live.peak_op.index, len(step.forward.events)
    parts = {"gradients": 0, "saved activations": 0, "temporaries": 0}
    for storage, allocation in step.allocations.items():
        if allocation.event > at or step.released.get(storage, len(step.events)) < at:
            continue
        if _is_gradient(allocation, forward_ops, param_shapes):
            kind = "gradients"
        elif storage in step.saved:
            kind = "saved activations"
        else:
            kind = "temporaries"
        parts[kind] += size(allocation)
    return tuple(parts.items())


@dataclass
class _Step:
    events: list[OpEvent]
    forward: Trace  # the forward part, with its module calls
    allocations: dict[int, Allocation]
    released: dict[int, int]
    saved: set[int]  # storages autograd saved that were still alive when the forward ended
    recomputed: set[int]  # events of checkpointed modules run again in backward


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
                if tracer.forward_done:  # the recomputation, in backward
                    recomputed.update(range(start, len(tracer.events)))

        return lambda *args, **kwargs: torch.utils.checkpoint.checkpoint(run, *args, use_reentrant=False, **kwargs)

    with ExitStack() as stack:
        for path in paths:
            stack.enter_context(replaced(modules[path], "forward", wrap(modules[path])))
        yield


def _record_step(model: nn.Module, args: tuple, kwargs: dict, meta: bool, checkpoint: tuple[str, ...] = (),
                 amp: torch.dtype | None = None) -> _Step:
    lifetimes = Lifetimes()
    attribution = _BackwardAttribution(model)
    tracer = Tracer(model, meta=meta, make=fresh_meta_stand_in if meta else training_stand_in,
                    observers=(lifetimes, attribution), amp=amp)
    attribution.tracer = tracer
    saved: set[int] = set()
    recomputed: set[int] = set()

    def pack(t: torch.Tensor) -> torch.Tensor:
        number = lifetimes.allocation_of(t)
        if number is not None:
            saved.add(number)
        return t

    # the step's graph must not reach into a graph the caller's inputs may belong to
    args, kwargs = map_tensors(torch.Tensor.detach, args), map_tensors(torch.Tensor.detach, kwargs)
    try:
        with preserved_modes(model, train=True), tracer.session(), torch.enable_grad(), \
                _checkpointed(model, checkpoint, tracer, recomputed):
            with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
                output = tracer.forward(args, kwargs)
            whole = tracer.trace(output)
            forward = replace(whole, events=list(whole.events))  # the backward ops go on after these
            saved -= set(lifetimes.released)
            _backward(output, tracer)
            del output
    finally:
        tracer.stop()
        attribution.remove()
    allocations, released = _in_place_accumulation(tracer.events, attribution.accumulations,
                                                   lifetimes.allocations, lifetimes.released)
    return _Step(events=tracer.events, forward=forward, allocations=allocations, released=released, saved=saved,
                 recomputed=recomputed)


def _in_place_accumulation(events: list[OpEvent], accumulations: list[int], allocations: dict[int, Allocation],
                           released: dict[int, int]) -> tuple[dict[int, Allocation], dict[int, int]]:
    """Where eager autograd sums two gradients for one input in place.

    The engine adds a second gradient into the first with ``add_`` when it holds the last
    reference to the first (and else into the second, if it holds that one's), and out of place
    only otherwise. Under a dispatch mode, as in any trace, it always adds out of place. A sum
    whose operand dies right after it is therefore the eager in-place sum: its result lives in
    the operand's memory and allocates nothing.
    """
    allocations, released = dict(allocations), dict(released)
    for index in accumulations:
        event = events[index]
        result = event.outputs[0]
        for operand in event.inputs[:2]:
            storage = operand.storage
            if (storage in allocations and released.get(storage) == index and result.storage in allocations
                    and tuple(operand.shape) == tuple(result.shape) and operand.dtype == result.dtype):
                del allocations[result.storage]
                if result.storage in released:
                    released[storage] = released.pop(result.storage)
                else:
                    del released[storage]  # the sum is still alive at the end: so is the operand
                break
    return allocations, released


def _backward(output: Any, tracer: Tracer) -> None:
    """Backpropagate a gradient of ones from every output that needs one, recording the ops."""
    roots = [t for t in iter_tensors(output) if t.requires_grad and t.is_floating_point()]
    if not roots:
        raise InputSpecError("nothing to train: no model output depends on a parameter that requires grad")
    with tracer.recording():
        seeds = [torch.ones_like(t) for t in roots]
        torch.autograd.backward(roots, seeds)
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
