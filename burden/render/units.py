"""Human-readable numbers. Memory in binary units with their real names (MiB), FLOPs in decimal
prefixes (1 GFLOPs = 10^9). Rounding is for display only."""

from __future__ import annotations

_BINARY = ("B", "KiB", "MiB", "GiB", "TiB", "PiB")
_DECIMAL = ("", "K", "M", "G", "T", "P")


def fmt_bytes(n: int, digits: int = 2) -> str:
    value = float(n)
    for unit in _BINARY:
        if abs(value) < 1024 or unit == _BINARY[-1]:
            return f"{int(value)} B" if unit == "B" else f"{value:.{digits}f} {unit}"
        value /= 1024
    raise AssertionError("unreachable")


def fmt_flops(n: int, digits: int = 2) -> str:
    value = float(n)
    for prefix in _DECIMAL:
        if abs(value) < 1000 or prefix == _DECIMAL[-1]:
            return f"{int(value)} FLOPs" if prefix == "" else f"{value:.{digits}f} {prefix}FLOPs"
        value /= 1000
    raise AssertionError("unreachable")


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
