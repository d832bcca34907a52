"""What a CUDA device holds beyond the tensors a trace records, and what its caching allocator reserves.

- **cuBLAS workspaces.** cuBLAS takes a workspace from the caching allocator on the first matrix
  product each host thread runs (``getCurrentCUDABlasHandle`` keys it by handle and stream, and
  handles are per thread; ``burden.cuda_policy``) and keeps it. A forward runs on the caller's
  thread; autograd runs a backward's CUDA work on its own device thread, whose first product takes
  another. burden places each at the first op that reaches cuBLAS in its pass.
- **Reserved memory.** The allocations and frees of a run, in order, are replayed through a
  simulation of PyTorch's caching allocator (``burden.cuda_allocator``): rounding, the small and
  large pools, segments, splitting and reuse. The model's state and the input come first, as they
  exist before the pass. A training step is replayed twice, the optimizer's state made in the
  first one's step as in a real first iteration, because the blocks the first step leaves cached
  decide where the second one's tensors go; reserved memory never shrinks by itself, so its peak is
  the figure after both. With a capacity (the card less the CUDA context), the allocator frees its
  cached segments and retries before it gives up, as PyTorch's does: a run fits when it never
  gives up.
"""

from __future__ import annotations

from collections import defaultdict
from dataclasses import dataclass
from typing import Any, Callable, Mapping, Sequence

import torch

from .accounting import Accounting
from .memory import Allocation
from .op_groups import existing_ops
from .records import OpEvent

# the aten ops whose CUDA kernels call cuBLAS (cuBLASLt's addmm path shares its workspace by default)
CUBLAS_OPS = frozenset(existing_ops("mm", "addmm", "bmm", "baddbmm", "addmv", "mv", "dot", "vdot", "addr", "addbmm",
                                    "_addmm_activation", "_scaled_mm", "_int_mm"))
_WORKSPACE_STORAGES = (-1, -2)  # burden's own numbers for them: a trace numbers its storages from 0


def workspaces(events: Sequence[OpEvent], starts: Sequence[int], accounts: Accounting) -> dict[int, Allocation]:
    """The cuBLAS workspaces of a CUDA run: for each host thread's pass (starting at the event
    indices in ``starts``: a forward, then a backward), one workspace at its first cuBLAS op, held
    to the end. Nothing on another target."""
    if not accounts.cuda or not accounts.workspace_bytes:
        return {}
    found: dict[int, Allocation] = {}
    bounds = [*starts, len(events)]
    for number, start, end in zip(_WORKSPACE_STORAGES, bounds, bounds[1:]):
        first = next((i for i in range(start, end) if events[i].packet in CUBLAS_OPS), None)
        if first is not None:
            found[number] = Allocation(first, accounts.workspace_bytes, torch.uint8, (accounts.workspace_bytes,))
    return found


def _pass(allocations: Mapping[int, Allocation], released: Mapping[int, int], size: Callable[[Allocation], int],
          events: int) -> list[tuple[str, int, int]]:
    """Allocator events of one run: at each op its new storages, then those that die after it."""
    born: dict[int, list[int]] = defaultdict(list)
    dying: dict[int, list[int]] = defaultdict(list)
    for storage, allocation in allocations.items():
        born[allocation.event].append(storage)
        if storage in released:
            dying[released[storage]].append(storage)
    out: list[tuple[str, int, int]] = []
    for i in range(events):
        out += [("malloc", s, size(allocations[s])) for s in born.get(i, ())]
        out += [("free", s, 0) for s in dying.get(i, ())]
    return out


@dataclass(frozen=True)
class DeviceRun:
    """A run as the caching allocator sees it: ``held`` (the model's state and the input, each
    tensor's bytes) first, then the run's allocations and frees. With ``state`` (the event where the
    optimizer's step starts, and its state tensors' bytes), a training step, run twice, the state
    made where the first one's step starts."""

    held: tuple[int, ...]
    allocations: Mapping[int, Allocation]
    released: Mapping[int, int]
    size: Callable[[Allocation], int]
    events: int
    accounts: Accounting
    state: tuple[int, tuple[int, ...]] | None = None

    def reserved(self, capacity: int | None = None) -> int | None:
        """The most the caching allocator reserves; None where it runs out of a ``capacity``."""
        from .cuda_allocator import CachingAllocator, OutOfMemory  # only a CUDA target needs the simulation

        try:
            return self._replay_all(CachingAllocator(self.accounts.allocator, capacity))
        except OutOfMemory:
            return None

    def _replay_all(self, allocator: Any) -> int:
        for nbytes in self.held:
            if nbytes:
                allocator.malloc(nbytes)
        run = _pass(self.allocations, self.released, self.size, self.events)
        if self.state is not None:
            start, sizes = self.state
            index = next((k for k, (_, s, _) in enumerate(run) if self.allocations[s].event >= start), len(run))
            _replay(allocator, [*run[:index], *(("malloc", None, n) for n in sizes), *run[index:]])
            # what the first pass left alive (the workspaces) stays; the second makes everything else anew
            run = [e for e in run if e[1] in self.released]
        _replay(allocator, run)
        return allocator.peak_reserved


def _replay(allocator: Any, run: list[tuple[str, int | None, int]]) -> None:
    handles: dict[int, int] = {}
    for kind, storage, nbytes in run:
        if kind == "malloc":
            handle = allocator.malloc(nbytes) if nbytes else None
            if storage is not None and handle is not None:
                handles[storage] = handle
        elif storage in handles:
            allocator.free(handles.pop(storage))


