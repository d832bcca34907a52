"""What this machine is and can hold: its processor, and free memory for the analyses that run real
tensors."""

from __future__ import annotations

import platform


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
