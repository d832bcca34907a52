"""Memory and FLOPs of one training step: forward, backward, and what the optimizer keeps.

The step runs for real through autograd, on the meta device by default, with stand-ins for the
model's parameters and buffers, so that nothing of the user's model is written to and no real
memory is used. ``LifetimeTracer`` records every forward and backward op and when each storage
is freed; ``saved_tensors_hooks`` sees what autograd saves for backward. The backward FLOPs are
those of the ops autograd really runs, under the convention's formulas (``convnet_backward``
adds the backward rules of convnet-burden).
"""

from __future__ import annotations

from collections import defaultdict
from contextlib import contextmanager
from dataclasses import dataclass
from itertools import chain
from typing import Any, Callable, Iterator

import torch
from torch import nn
from torch.nn.utils.stateless import _reparametrize_module

from .conventions import get_convention
from .counting import own_params
from .errors import InputSpecError
from .figures import UncountedOp
from .formulas import FormulaTable
from .memory import Allocation, LifetimeTracer, LiveMemory, PeakOp, replay
from .state import preserved_modes
from .trace import OpEvent, _Recorder, iter_tensors, map_tensors

# Tensors each optimizer keeps per trainable parameter, each the parameter's size.
OPTIMIZER_STATES = {"sgd": 0, "momentum": 1, "adam": 2, "adamw": 2}


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


def optimizer_states(optimizer: str) -> int:
    try:
        return OPTIMIZER_STATES[optimizer]
    except KeyError:
        raise InputSpecError(f"unknown optimizer {optimizer!r}; use one of {', '.join(OPTIMIZER_STATES)}") from None


def training_step(model: nn.Module, args: tuple, kwargs: dict | None = None, *, optimizer: str = "adam",
                  elsize: int = 4, meta: bool = True, convention: str = "convnet-burden") -> TrainingMemory:
    """Memory and FLOPs of one training step of ``model`` on ``args`` (see ``TrainingMemory``).

    The model is run in training mode with gradients on, and comes back as it was: modes,
    ``requires_grad`` flags, hooks, buffers and ``.grad`` fields untouched. With ``meta=True``
    (default) ``args`` should be meta tensors; with ``meta=False`` the step runs on the real
    tensors, with gradients going to detached aliases of the parameters and the buffers cloned.
    """
    states = optimizer_states(optimizer)
    rules = get_convention(convention)
    if rules.flops is None or rules.backward is None:
        raise InputSpecError(f"the {rules.name} convention has no backward rules; analyse training under "
                             f"convnet-burden or torch")
    _, param_bytes, trainable = (sum(column) for column in zip(*own_params(model, elsize).values()))
    gradient_bytes = trainable * elsize
    step = _record_step(model, args, kwargs or {}, meta)
    live = replay(step.events, step.allocations, step.released, elsize)
    forward, backward = step.events[:step.forward_ops], step.events[step.forward_ops:]
    forward_flops, _, forward_uncounted = _flops(forward, rules.flops)
    backward_flops, by_module, backward_uncounted = _flops(backward, rules.backward)
    forward_peak = max(live.curve[:step.forward_ops], default=0)
    backward_peak = max(live.curve[step.forward_ops:], default=0)
    return TrainingMemory(
        optimizer=optimizer, param_bytes=param_bytes, gradient_bytes=gradient_bytes,
        optimizer_bytes=states * gradient_bytes,
        saved_activation_bytes=sum(step.allocations[s].nbytes(elsize) for s in step.saved),
        forward_peak_bytes=forward_peak, backward_peak_bytes=backward_peak,
        training_peak_bytes=param_bytes + states * gradient_bytes + max(forward_peak, backward_peak),
        peak_op=live.peak_op, forward_flops=forward_flops, backward_flops=backward_flops,
        backward_flops_by_module=by_module, forward_uncounted=forward_uncounted,
        backward_uncounted=backward_uncounted, live=live, forward_ops=step.forward_ops,
    )


@dataclass
class _Step:
    events: list[OpEvent]
    forward_ops: int
    allocations: dict[int, Allocation]
    released: dict[int, int]
    saved: set[int]  # storages autograd saved that were still alive when the forward ended


def _record_step(model: nn.Module, args: tuple, kwargs: dict, meta: bool) -> _Step:
    tracer = LifetimeTracer(model, meta=meta)
    attribution = _BackwardAttribution(model, tracer)
    outputs: list[Any] = []
    keep_output = model.register_forward_hook(lambda module, inputs, output: outputs.append(output))
    saved: set[int] = set()

    def pack(t: torch.Tensor) -> torch.Tensor:
        number = tracer.allocation_of(t)
        if number is not None:
            saved.add(number)
        return t

    # the step's graph must not reach into a graph the caller's inputs may belong to
    args, kwargs = map_tensors(torch.Tensor.detach, args), map_tensors(torch.Tensor.detach, kwargs)
    try:
        with preserved_modes(model, train=True), _stand_ins(model, meta), torch.enable_grad():
            with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
                tracer.run(args, kwargs)
            forward_ops = len(tracer.events)
            saved -= set(tracer.released)
            _backward(outputs[0], tracer)
    finally:
        tracer.stop()
        attribution.remove()
        keep_output.remove()
    return _Step(events=tracer.events, forward_ops=forward_ops, allocations=tracer.allocations,
                 released=tracer.released, saved=saved)


def _backward(output: Any, tracer: LifetimeTracer) -> None:
    """Backpropagate a gradient of ones from every output that needs one, recording the ops."""
    roots = [t for t in iter_tensors(output) if t.requires_grad]
    if not roots:
        raise InputSpecError("nothing to train: no model output depends on a parameter that requires grad")
    with _Recorder(tracer):
        seeds = [torch.ones_like(t) for t in roots]
        torch.autograd.backward(roots, seeds)
    tracer.stack.clear()


def _stand_in(t: torch.Tensor, meta: bool, parameter: bool) -> torch.Tensor:
    if meta:
        out = torch.empty_strided(t.shape, t.stride(), dtype=t.dtype, device="meta")
    else:
        # parameters are only read, so an alias will do; buffers (BN statistics) are written to
        out = t.detach() if parameter else t.detach().clone()
    return out.requires_grad_(parameter and t.requires_grad)


@contextmanager
def _stand_ins(model: nn.Module, meta: bool) -> Iterator[None]:
    """Swap every parameter and buffer for a stand-in (a tied tensor gets one), then put them back."""
    made: dict[int, torch.Tensor] = {}
    mapping: dict[str, torch.Tensor] = {}
    named = chain(((n, t, True) for n, t in model.named_parameters(remove_duplicate=False)),
                  ((n, t, False) for n, t in model.named_buffers(remove_duplicate=False)))
    for name, tensor, parameter in named:
        if id(tensor) not in made:
            made[id(tensor)] = _stand_in(tensor, meta, parameter)
        mapping[name] = made[id(tensor)]
    # the private helper behind torch.func.functional_call: it restores the originals on exit
    with _reparametrize_module(model, mapping):
        yield


class _BackwardAttribution:
    """Attributes each backward op to the module whose forward created the autograd node.

    When a module returns, the nodes between its output and its inputs' nodes (taken when it
    was called, before any in-place op rewrites them) that no inner module claimed are its own.
    A pre-hook on each such node names the module while autograd runs that node.
    """

    def __init__(self, model: nn.Module, tracer: LifetimeTracer) -> None:
        self.tracer = tracer
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
                todo.extend(next_node for next_node, _ in node.next_functions)
        return hook

    def _running(self, path: str) -> Callable:
        def prehook(grad_outputs: Any) -> None:
            self.tracer.stack[:] = [path]
        return prehook

    def remove(self) -> None:
        for handle in self.handles:
            handle.remove()


def _flops(events: list[OpEvent], table: FormulaTable) -> tuple[int, tuple[tuple[str, int], ...],
                                                                 tuple[UncountedOp, ...]]:
    """Total FLOPs, FLOPs per module (in order of first appearance, modules with none left out),
    and the ops with no rule."""
    total = 0
    by_module: dict[str, int] = defaultdict(int)
    uncounted: dict[str, list[str]] = defaultdict(list)
    for event in events:
        flops = table.flops(event)
        if flops is None:
            uncounted[event.name].append(event.module)
            continue
        total += flops
        by_module[event.module] += flops
    missing = tuple(UncountedOp(op=name, calls=len(layers), layers=tuple(dict.fromkeys(layers)))
                    for name, layers in sorted(uncounted.items()))
    return total, tuple((path, n) for path, n in by_module.items() if n), missing
