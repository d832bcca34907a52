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


def fmt_seconds(s: float | None) -> str:
    """``12.3 ms``: seconds in the unit that keeps three significant digits readable."""
    if s is None:
        return "-"
    for unit, scale in (("s", 1.0), ("ms", 1e-3), ("µs", 1e-6)):
        if abs(s) >= scale or unit == "µs":
            value = s / scale
            return f"{value:.3g} {unit}" if value < 100 else f"{value:.0f} {unit}"
    raise AssertionError("unreachable")


def fmt_rate(n: float | None, unit: str) -> str:
    """``1.23 T<unit>``: a rate in decimal prefixes (FLOP/s, B/s)."""
    if n is None:
        return "-"
    for prefix, scale in (("P", 1e15), ("T", 1e12), ("G", 1e9), ("M", 1e6), ("k", 1e3)):
        if abs(n) >= scale:
            return f"{n / scale:.3g} {prefix}{unit}"
    return f"{n:.3g} {unit}"
