"""Validation of what the user asks for: input sizes, batch sizes, dtypes. Checked up front."""

from __future__ import annotations

import re
from typing import Sequence

import torch

from .errors import InputSpecError

DTYPES: dict[str, torch.dtype] = {
    "float32": torch.float32,
    "float16": torch.float16,
    "bfloat16": torch.bfloat16,
    "int8": torch.int8,
    "float64": torch.float64,
}
_ALIASES = {"fp32": "float32", "float": "float32", "fp16": "float16", "half": "float16",
            "bf16": "bfloat16", "fp64": "float64", "double": "float64"}


def parse_dtype(value: str | torch.dtype) -> torch.dtype:
    """``float32``, ``float16``, ``bfloat16``, ``int8`` or ``float64`` (or the torch.dtype itself)."""
    if isinstance(value, torch.dtype):
        if value not in DTYPES.values():
            raise InputSpecError(f"unsupported dtype {value}; choose one of {', '.join(DTYPES)}")
        return value
    name = str(value).strip().lower().removeprefix("torch.")
    name = _ALIASES.get(name, name)
    if name not in DTYPES:
        raise InputSpecError(f"unknown dtype {value!r}; choose one of {', '.join(DTYPES)}")
    return DTYPES[name]


def dtype_name(dtype: torch.dtype) -> str:
    return str(dtype).removeprefix("torch.")


def parse_input_size(value: str | int | Sequence[int], channels: int = 3) -> tuple[int, ...]:
    """``224`` -> (3, 224, 224); ``224x320`` -> (3, 224, 320); ``3x224x224`` as given.

    Sequences are taken as the per-sample shape, so ``(3, 224, 224)`` or ``(224, 224)``.
    """
    if isinstance(value, str):
        text = value.strip().lower().replace(" ", "")
        if not re.fullmatch(r"-?\d+(x-?\d+){0,2}", text):
            raise InputSpecError(f"malformed input size {value!r}; write 224, 224x320 or 3x224x224")
        dims = tuple(int(p) for p in text.split("x"))
    elif isinstance(value, bool):
        raise InputSpecError(f"malformed input size {value!r}")
    elif isinstance(value, int):
        dims = (value,)
    else:
        try:
            dims = tuple(value)
        except TypeError:
            raise InputSpecError(f"malformed input size {value!r}; give an int or a shape tuple") from None
        if not dims or not all(isinstance(d, int) and not isinstance(d, bool) for d in dims):
            raise InputSpecError(f"malformed input size {value!r}; every dimension must be an int")
    bad = [d for d in dims if d <= 0]
    if bad:
        raise InputSpecError(f"input size {_show(dims)} has a zero or negative dimension")
    if not isinstance(value, (str, int)):
        return dims  # a sequence is the per-sample shape as it is
    if len(dims) == 1:
        return (channels, dims[0], dims[0])
    if len(dims) == 2:
        return (channels, *dims)
    return dims


def parse_batch(value: int | str) -> int:
    if isinstance(value, int) and not isinstance(value, bool):
        batch = value
    elif isinstance(value, str) and re.fullmatch(r"\s*[+-]?\d+\s*", value):
        batch = int(value)
    else:
        raise InputSpecError(f"malformed batch size {value!r}; give a positive whole number")
    if batch <= 0:
        raise InputSpecError(f"batch size must be positive, got {batch}")
    return batch


def _show(dims: Sequence[int]) -> str:
    return "x".join(str(d) for d in dims)
