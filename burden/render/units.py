"""Human-readable numbers. Memory in binary units with their real names (MiB), FLOPs in decimal
prefixes (1 GFLOPs = 10^9). Rounding is for display only."""

from __future__ import annotations

BINARY_UNITS = ("B", "KiB", "MiB", "GiB", "TiB", "PiB")
FLOP_UNITS = ("FLOPs", "KFLOPs", "MFLOPs", "GFLOPs", "TFLOPs", "PFLOPs")


def scaled(n: float, base: int, units: tuple[str, ...], digits: int = 2) -> str:
    """``n`` in the largest unit that keeps it below ``base``; the first unit is shown unrounded."""
    value = float(n)
    for i, unit in enumerate(units):
        if abs(value) < base or i == len(units) - 1:
            return f"{int(value)} {unit}" if i == 0 else f"{value:.{digits}f} {unit}"
        value /= base
    raise AssertionError("unreachable")


def fmt_bytes(n: int, digits: int = 2) -> str:
    return scaled(n, 1024, BINARY_UNITS, digits)


def fmt_flops(n: int, digits: int = 2) -> str:
    return scaled(n, 1000, FLOP_UNITS, digits)


def fmt_count(n: int) -> str:
    return f"{n:,}"


def fmt_shape(shape: object) -> str:
    """``[1, 256, 56, 56]`` as ``1x256x56x56``; nested outputs as a comma-separated list."""
    if shape is None:
        return "-"
    if isinstance(shape, dict):
        return ", ".join(f"{k}: {fmt_shape(v)}" for k, v in shape.items())
    if isinstance(shape, (list, tuple)):
        if all(isinstance(d, int) for d in shape):
            return "x".join(str(d) for d in shape) if shape else "scalar"
        return "(" + ", ".join(fmt_shape(s) for s in shape) + ")"
    return "-"
