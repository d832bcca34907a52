"""How a device counts the bytes of a step: its allocator's rounding, and ZeRO sharding.

- ``target="cpu"`` (default): every tensor at its exact size, as the CPU allocator reports it
  (the figures the allocator oracle checks).
- ``target="cuda"``: what ``torch.cuda.max_memory_allocated`` reports: the caching allocator
  rounds every allocation up to a multiple of 512 bytes (``kMinBlockSize`` in
  ``c10/cuda/CUDACachingAllocator.cpp``), and counts each parameter, gradient, optimizer state,
  input and feature as an allocation of its own. Not counted, because they are not tensors that
  burden sees: cuDNN and cuBLAS workspaces, the allocator's cached but unallocated blocks
  (``memory_reserved``), and the CUDA context.
- ``world_size`` and ``zero`` give one device's share under ZeRO data parallelism (DeepSpeed,
  FSDP): stage 1 shards the optimizer state, stage 2 the gradients too, stage 3 the parameters
  too, each into ``world_size`` equal parts. Activations are per device, at the per-device batch.
  Not counted: the communication buffers (all-gather and reduce-scatter buckets), the full
  parameters ZeRO-3 gathers for the layer running and the next one it prefetches, and the full
  gradients of a bucket before it is reduced.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Callable, Iterable

from .errors import InputSpecError

TARGETS = ("cpu", "cuda")
CUDA_GRANULARITY = 512
NOT_COUNTED = {
    "cuda": "cuDNN and cuBLAS workspaces, cached but unallocated blocks (memory_reserved), the CUDA context",
    "zero": "communication buckets, ZeRO-3's gathered and prefetched parameters, a bucket's full gradients "
            "before reduce-scatter",
}


@dataclass(frozen=True)
class Accounting:
    target: str = "cpu"
    world_size: int = 1
    zero: int = 0

    def allocation(self, nbytes: int) -> int:
        """One allocation as the target's allocator counts it."""
        if self.target == "cuda":
            return -(-nbytes // CUDA_GRANULARITY) * CUDA_GRANULARITY
        return nbytes

    def sizer(self, elsize: int | None) -> Callable[[Any], int]:
        """A replay's size for each allocation (``memory.Allocation``): its bytes under ``elsize``,
        as this target's allocator counts them."""
        def size(allocation: Any) -> int:
            if allocation.host and self.target != "cpu":
                return 0  # burden's own host tensors (an optimizer's CPU step counters): not the device's
            return self.allocation(allocation.nbytes(elsize))

        return size

    def tensors(self, sizes: Iterable[int]) -> int:
        return sum(self.allocation(n) for n in sizes)

    def share(self, nbytes: int, stage: int) -> int:
        """One device's part of state that ZeRO shards from ``stage`` on."""
        return -(-nbytes // self.world_size) if self.zero >= stage else nbytes

    @property
    def plain(self) -> bool:
        return self == Accounting()

    def describe(self) -> str:
        parts = []
        if self.target == "cuda":
            parts.append(f"as torch.cuda.max_memory_allocated counts (512-byte blocks; not counted: "
                         f"{NOT_COUNTED['cuda']})")
        if self.zero:
            parts.append(f"one device of {self.world_size} under ZeRO stage {self.zero} (not counted: "
                         f"{NOT_COUNTED['zero']})")
        return "; ".join(parts)


def accounting(target: str = "cpu", world_size: int = 1, zero: int = 0) -> Accounting:
    if target not in TARGETS:
        raise InputSpecError(f"unknown target {target!r}; use cpu or cuda")
    if isinstance(world_size, bool) or not isinstance(world_size, int) or world_size < 1:
        raise InputSpecError(f"world size must be a whole number from 1, got {world_size!r}")
    if zero not in (0, 1, 2, 3):
        raise InputSpecError(f"ZeRO stage must be 0, 1, 2 or 3, got {zero!r}")
    if zero and world_size == 1:
        raise InputSpecError("ZeRO shards across devices: give --world-size N (world_size=N) above 1")
    return Accounting(target, world_size, zero)
