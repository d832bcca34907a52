"""What this machine is and can hold: its processor, and free memory for the analyses that run real
tensors."""

from __future__ import annotations

import platform

import torch

from .errors import InputSpecError


def available_bytes() -> int | None:
    """The kernel's estimate of memory available without swapping, or None where it says nothing."""
    try:
        with open("/proc/meminfo") as f:
            for line in f:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    return None


def fits_in_half(need: int) -> bool:
    """Whether ``need`` bytes fit in half of the free memory (True where that is unknown)."""
    free = available_bytes()
    return free is None or need <= free // 2


def processor_name() -> str:
    """The CPU's model name as the kernel gives it, else what Python knows of the machine."""
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine() or "this CPU"


def require_cuda() -> None:
    """Refuse a CUDA run where no CUDA device is available."""
    if not torch.cuda.is_available():
        raise InputSpecError("device 'cuda' asked for, but no CUDA device is available")


def run_device(device: str, command: str) -> str:
    """A device ``command`` runs real kernels on: 'cpu', or 'cuda' where there is one."""
    if device not in ("cpu", "cuda"):
        raise InputSpecError(f"{command} runs on 'cpu' or 'cuda', not {device!r}")
    if device == "cuda":
        require_cuda()
    return device
