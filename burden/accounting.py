"""How a device counts the bytes of a run: its allocator, its libraries' blocks, and ZeRO sharding.

- ``target="cpu"`` (default): every tensor at its exact size, as the CPU allocator reports it
  (the figures the allocator oracle checks).
- ``target="cuda"``: what ``torch.cuda.max_memory_allocated`` reports. The caching allocator
  rounds every allocation up to a multiple of 512 bytes (``kMinBlockSize`` in
  ``c10/cuda/CUDACachingAllocator.cpp``) and counts each parameter, gradient, optimizer state,
  input and feature as an allocation of its own. cuBLAS takes its workspace from the same
  allocator on its first matrix product, once per host thread that runs one (a forward, and
  autograd's device thread in a backward), and keeps it (``burden.cuda_policy``). The caching
  allocator's reserved memory (``max_memory_reserved``) is simulated over the same allocations
  (``burden.cuda_allocator``), and the CUDA context sits beside it. Not counted: cuDNN's
  algorithm-dependent workspaces, NCCL's buffers.
- ``world_size`` and ``zero`` give one device's share under ZeRO data parallelism (DeepSpeed,
  FSDP): stage 1 shards the optimizer state, stage 2 the gradients too, stage 3 the parameters
  too, each into ``world_size`` equal parts. Activations are per device, at the per-device batch.
  Not counted: the communication buffers (all-gather and reduce-scatter buckets), the full
  parameters ZeRO-3 gathers for the layer running and the next one it prefetches, and the full
  gradients of a bucket before it is reduced.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Callable, Iterable

from .devices import DeviceProfile
from .errors import InputSpecError

if TYPE_CHECKING:
    from .cuda_allocator import AllocatorConfig

TARGETS = ("cpu", "cuda")
CUDA_GRANULARITY = 512
# The GPU a CUDA target means when no device profile names one: an H100 (SXM), compute capability 9.0.
DEFAULT_CAPABILITY = (9, 0)
# The CUDA context when no measured profile says: an allowance, not a measurement of this machine. The
# context alone measured 287,047,680 bytes with lazy module loading (pytorch/pytorch#86509, PyTorch's
# default since 1.13); cuBLAS and cuDNN load their kernels as they are first used, which adds to it.
# `burden calibrate --device cuda` measures and stores the real figure.
DEFAULT_CONTEXT_BYTES = 512 * 2**20
NOT_COUNTED = {
    "cuda": "cuDNN's algorithm-dependent workspaces, NCCL's buffers",
    "zero": "communication buckets, ZeRO-3's gathered and prefetched parameters, a bucket's full gradients "
            "before reduce-scatter",
}


@dataclass(frozen=True)
class Accounting:
    target: str = "cpu"
    world_size: int = 1
    zero: int = 0
    # on the CUDA target: the GPU's compute capability, its cuBLAS workspace, the CUDA context, and the
    # caching allocator's settings (PYTORCH_CUDA_ALLOC_CONF; None elsewhere)
    capability: tuple[int, int] | None = None
    workspace_bytes: int = 0
    context_bytes: int = 0
    allocator: AllocatorConfig | None = field(default=None, repr=False)

    @property
    def cuda(self) -> bool:
        return self.target == "cuda"

    def allocation(self, nbytes: int) -> int:
        """One allocation as the target's allocator counts it."""
        if self.cuda:
            return -(-nbytes // CUDA_GRANULARITY) * CUDA_GRANULARITY
        return nbytes

    def sizer(self, elsize: int | None) -> Callable[[Any], int]:
        """A replay's size for each allocation (``memory.Allocation``): its bytes under ``elsize``,
        as this target's allocator counts them."""
        def size(allocation: Any) -> int:
            if allocation.host and self.cuda:
                return 0  # burden's own host tensors (an optimizer's CPU step counters): not the device's
            return self.allocation(allocation.nbytes(elsize))

        return size

    def tensors(self, sizes: Iterable[int]) -> int:
        return sum(self.allocation(n) for n in sizes)

    def share(self, nbytes: int, stage: int) -> int:
        """One device's part of state that ZeRO shards from ``stage`` on."""
        return -(-nbytes // self.world_size) if self.zero >= stage else nbytes

    def describe(self) -> str:
        parts = []
        if self.cuda:
            assert self.capability is not None
            parts.append(f"as torch.cuda.max_memory_allocated counts on a GPU of compute capability "
                         f"{self.capability[0]}.{self.capability[1]} (512-byte blocks, the "
                         f"{self.workspace_bytes / 2**20:g} MiB cuBLAS workspace; reserved memory simulated, and a "
                         f"{self.context_bytes / 2**20:g} MiB CUDA context beside it; not counted: "
                         f"{NOT_COUNTED['cuda']})")
        if self.zero:
            parts.append(f"one device of {self.world_size} under ZeRO stage {self.zero}, as quick arithmetic (not "
                         f"counted: {NOT_COUNTED['zero']}; --shard fsdp traces a sharded step)")
        return "; ".join(parts)


def accounting(target: str = "cpu", world_size: int = 1, zero: int = 0,
               profile: DeviceProfile | None = None) -> Accounting:
    """The target's accounting; on CUDA, the GPU's facts from ``profile`` (an H100 without one) and
    the environment PyTorch reads (CUBLAS_WORKSPACE_CONFIG, PYTORCH_CUDA_ALLOC_CONF)."""
    if target not in TARGETS:
        raise InputSpecError(f"unknown target {target!r}; use cpu or cuda")
    if isinstance(world_size, bool) or not isinstance(world_size, int) or world_size < 1:
        raise InputSpecError(f"world size must be a whole number from 1, got {world_size!r}")
    if zero not in (0, 1, 2, 3):
        raise InputSpecError(f"ZeRO stage must be 0, 1, 2 or 3, got {zero!r}")
    if zero and world_size == 1:
        raise InputSpecError("ZeRO shards across devices: give --world-size N (world_size=N) above 1")
    if target != "cuda":
        return Accounting(target, world_size, zero)
    if profile is not None and profile.kind != "cuda":
        raise InputSpecError(f"the device profile {profile.name!r} describes a CPU; --target cuda needs a GPU's "
                             f"profile (burden profiles lists them)")
    capability = (profile.capability if profile is not None else None) or DEFAULT_CAPABILITY
    context = profile.context_bytes if profile is not None and profile.context_bytes is not None else \
        DEFAULT_CONTEXT_BYTES
    # the CUDA rules are read only for a CUDA target: a CPU estimate does not import them
    from .cuda_allocator import parse_alloc_conf
    from .cuda_policy import cublas_workspace_bytes

    try:
        workspace = cublas_workspace_bytes(capability, os.environ)
        allocator = parse_alloc_conf(os.environ.get("PYTORCH_CUDA_ALLOC_CONF"))
    except ValueError as exc:
        raise InputSpecError(f"cannot plan for this CUDA environment: {exc}") from None
    return Accounting(target, world_size, zero, capability, workspace, context, allocator)
