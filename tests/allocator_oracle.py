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
"""

from __future__ import annotations

import contextlib
import functools
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any, Callable, Iterator

import torch
from torch import nn
from torch.profiler import ProfilerActivity, profile


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


def _allocations(tree: list) -> list[tuple[int, int, int, int]]:
    """(time, ptr, bytes, end of the kernel call around it) of every allocator event, in time order."""
    found = []
    todo = [(root, None) for root in reversed(tree)]
    while todo:
        event, kernel_end = todo.pop()
        fields = event.extra_fields
        if hasattr(fields, "alloc_size"):
            found.append((event.start_time_ns, fields.ptr, fields.alloc_size, kernel_end))
            continue
        # The outermost kernel call owns its scratch: a kernel may run other ops for parts of its
        # work (the grouped convolution backward runs one per group) and free their results itself.
        # An op that PyTorch defines by other ops (CompositeImplicitAutograd: max_pool2d, linear,
        # conv2d) is not a kernel: the ops it is made of are, and what one makes and the next frees
        # is a tensor of the program (max_pool2d's indices), not anyone's scratch.
        if kernel_end is None and event.name.startswith("aten::") and event.name not in _ALLOCATING \
                and not _composite(event.name):
            kernel_end = event.end_time_ns
        # children in their own order, so that events stamped with the same time stay in the order
        # they happened (the sort below is stable)
        todo.extend((child, kernel_end) for child in reversed(event.children))
    return sorted(found, key=lambda f: f[0])


def allocator_curve(fn: Callable[[], Any]) -> tuple[Curve, Any]:
    """The allocator's live bytes while ``fn`` runs, split into tensors and kernel workspaces,
    and ``fn``'s result."""
    with _quiet_cpu(), profile(activities=[ProfilerActivity.CPU], profile_memory=True) as prof:
        result = fn()
    events = _allocations(prof.profiler.kineto_results.experimental_event_tree())
    # each allocation is paired with its own free: the allocator hands the same address out again,
    # often inside the same kernel call (a scratch block freed, then the output taken at its place)
    scratch_allocations: set[int] = set()  # positions in ``events`` of allocations that are workspace
    open_blocks: dict[int, tuple[int, int | None]] = {}  # ptr -> (position, end of the kernel call)
    for position, (time, ptr, size, kernel_end) in enumerate(events):
        if size > 0:
            open_blocks[ptr] = (position, kernel_end)
        elif ptr in open_blocks:
            taken_at, end = open_blocks.pop(ptr)
            if end is not None and time <= end:
                scratch_allocations.add(taken_at)
    tensors = workspace = 0
    curve = Curve([], [])
    taken: dict[int, bool] = {}
    for position, (time, ptr, size, kernel_end) in enumerate(events):
        if size > 0:
            scratch = position in scratch_allocations
            taken[ptr] = scratch
        else:
            scratch = taken.pop(ptr, False)
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
