"""Validation of what the user asks for: input sizes, batch sizes, dtypes. Checked up front."""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any, Sequence

import torch

from .containers import map_leaves
from .errors import InputSpecError
from .options import DTYPE_NAMES

DTYPES: dict[str, torch.dtype] = {name: getattr(torch, name) for name in DTYPE_NAMES}
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
    """The per-sample shape, read the same way from the API and the command line: ``224`` ->
    (3, 224, 224); ``224x320`` or ``(224, 320)`` -> (3, 224, 320), an image's height and width;
    ``3x224x224``, ``(3, 224, 224)``, ``(10,)`` or any other length as given. A two-dimensional
    sample that is not an image (a sequence of vectors) is given by ``inputs=``.
    """
    if isinstance(value, str):
        # spaces may stand around an "x", never between two numbers ("224 224" is not 224224)
        if not re.fullmatch(r"\s*-?\d+(\s*x\s*-?\d+){0,2}\s*", value.lower()):
            raise InputSpecError(f"malformed input size {value!r}; write 224, 224x320 or 3x224x224")
        dims = tuple(int(p) for p in value.lower().split("x"))
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
    if len(dims) == 1 and isinstance(value, (str, int)):
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


_UNITS = {"": 1, "b": 1, "kb": 10**3, "mb": 10**6, "gb": 10**9, "tb": 10**12,
          "kib": 2**10, "mib": 2**20, "gib": 2**30, "tib": 2**40, "k": 2**10, "m": 2**20, "g": 2**30, "t": 2**40}


def parse_memory(value: int | str) -> int:
    """A memory budget in bytes: ``24GiB`` (2^30), ``24GB`` (10^9), ``24G`` (GiB, as ``nvidia-smi``
    and most tools mean it), ``512MiB``, or a whole number of bytes."""
    if isinstance(value, int) and not isinstance(value, bool):
        nbytes = value
    else:
        match = re.fullmatch(r"\s*(\d+(?:\.\d+)?)\s*([a-zA-Z]*)\s*", str(value))
        unit = match.group(2).lower() if match else None
        if match is None or unit not in _UNITS:
            raise InputSpecError(f"malformed memory size {value!r}; write 24GiB, 24GB, 512MiB or a number of bytes")
        nbytes = int(float(match.group(1)) * _UNITS[unit])
    if nbytes <= 0:
        raise InputSpecError(f"memory size must be positive, got {value!r}")
    return nbytes


def rebatch(inputs: Any, batch: int) -> Any:
    """``inputs`` (as ``estimate(inputs=...)`` takes them) with every tensor's leading dimension,
    its batch, set to ``batch``; shapes only, no values."""
    def leaf(value: Any) -> Any:
        if isinstance(value, TensorSpec):
            return TensorSpec(batch, *value.shape[1:], dtype=value.dtype) if value.shape else value
        if isinstance(value, torch.Size):
            return torch.Size((batch, *value[1:])) if len(value) else value
        if isinstance(value, torch.Tensor):
            return TensorSpec(batch, *value.shape[1:], dtype=value.dtype) if value.dim() else value
        return value

    return map_leaves(leaf, inputs)


def parse_scales(value: str | Sequence[float]) -> list[float]:
    """``0.5:3:0.5`` (start:stop:step, stop included), ``0.5,1,2`` or a sequence of numbers."""
    if isinstance(value, str):
        text = value.strip()
        try:
            if ":" in text:
                start, stop, step = (float(p) for p in text.split(":"))
                if step <= 0:
                    raise InputSpecError(f"scale step must be positive in {value!r}")
                count = int(round((stop - start) / step)) + 1
                factors = [round(start + i * step, 10) for i in range(max(count, 0))]
            else:
                factors = [float(p) for p in text.split(",") if p.strip()]
        except ValueError:
            raise InputSpecError(f"malformed scales {value!r}; write start:stop:step such as 0.5:3:0.5, "
                                 f"or a list such as 0.5,1,2") from None
    else:
        factors = [float(v) for v in value]
    if not factors:
        raise InputSpecError(f"no scales in {value!r}")
    bad = [f for f in factors if f <= 0]
    if bad:
        raise InputSpecError(f"scales must be positive, got {bad[0]:g}")
    return factors


@dataclass(frozen=True)
class TensorSpec:
    """A tensor described by shape and dtype only, for ``estimate(..., inputs=...)``."""

    shape: tuple[int, ...]
    dtype: torch.dtype | None = None  # None: the model's floating dtype

    def __init__(self, *shape: int, dtype: torch.dtype | None = None) -> None:
        if len(shape) == 1 and isinstance(shape[0], (tuple, list, torch.Size)):
            shape = tuple(shape[0])
        object.__setattr__(self, "shape", tuple(shape))
        object.__setattr__(self, "dtype", dtype)


def _leaf(value: Any, device: str, dtype: torch.dtype) -> Any:
    if isinstance(value, torch.Tensor):
        return torch.empty_strided(value.shape, value.stride(), dtype=value.dtype, device=device) \
            if device == "meta" else value.to(device)
    if isinstance(value, torch.Size):
        value = TensorSpec(tuple(value))
    if isinstance(value, TensorSpec):
        if not value.shape or not all(isinstance(d, int) and d > 0 for d in value.shape):
            raise InputSpecError(f"input shape {list(value.shape)} must be positive whole numbers")
        spec_dtype = value.dtype or dtype
        return torch.zeros(value.shape, dtype=spec_dtype, device=device)
    return value


def materialize_inputs(inputs: Any, device: str, dtype: torch.dtype) -> tuple[tuple, dict]:
    """Positional and keyword arguments for the forward pass, built on ``device``.

    A tuple or list is the positional arguments; a dict is the keyword arguments, unless it is
    ``{"args": ..., "kwargs": ...}``; anything else (a ``torch.Size`` included, though it is a tuple)
    is the single positional argument. Example
    tensors keep their shape and dtype but not their values; ``torch.Size`` and ``TensorSpec``
    become zero tensors.
    """
    if isinstance(inputs, dict) and set(inputs) <= {"args", "kwargs"} and inputs:
        args, kwargs = inputs.get("args", ()), inputs.get("kwargs", {})
        if not isinstance(args, (tuple, list)) or not isinstance(kwargs, dict):
            raise InputSpecError("inputs={'args': tuple, 'kwargs': dict} expected")
    elif isinstance(inputs, dict):
        args, kwargs = (), inputs
    elif isinstance(inputs, (tuple, list)) and not isinstance(inputs, torch.Size):  # a Size is one shape
        args, kwargs = tuple(inputs), {}
    else:
        args, kwargs = (inputs,), {}
    def make(leaf: Any) -> Any:
        return _leaf(leaf, device, dtype)

    return tuple(map_leaves(make, tuple(args))), map_leaves(make, dict(kwargs))


_SPEC = re.compile(r"^(?:(?P<name>[A-Za-z_][A-Za-z0-9_]*)=)?(?P<shape>\d+(?:x\d+)*)(?::(?P<dtype>[A-Za-z0-9_.]+))?$")
_SPEC_DTYPES = {**DTYPES, "int64": torch.int64, "long": torch.int64, "int32": torch.int32, "int": torch.int32,
                "int16": torch.int16, "uint8": torch.uint8, "bool": torch.bool}


def parse_inputs_spec(text: str) -> dict[str, Any]:
    """The model's inputs from the command line, shapes batch first: ``2x128:int64`` (one
    positional input), ``2x3x224x224,2x10:int64`` (two), or keyword inputs
    ``input_ids=2x128:int64,attention_mask=2x128:int64`` (positional ones first). A dtype left out
    is the model's own floating dtype. Returns ``{"args": (...), "kwargs": {...}}`` of TensorSpecs."""
    args: list[TensorSpec] = []
    kwargs: dict[str, TensorSpec] = {}
    parts = [p.strip() for p in str(text).split(",")]
    if not text or not all(parts):
        raise InputSpecError(f"malformed --inputs {text!r}; write 2x128:int64, or name=2x128:int64,name=...")
    for part in parts:
        match = _SPEC.match(part)
        if match is None:
            raise InputSpecError(f"malformed input {part!r} in --inputs; write SHAPE[:DTYPE] or NAME=SHAPE[:DTYPE], "
                                 f"such as 2x128:int64 (the shape includes the batch)")
        shape = tuple(int(d) for d in match["shape"].split("x"))
        if any(d <= 0 for d in shape):
            raise InputSpecError(f"input {part!r} has a zero dimension")
        dtype = None
        if match["dtype"]:
            name = match["dtype"].lower().removeprefix("torch.")
            name = _ALIASES.get(name, name)
            if name not in _SPEC_DTYPES:
                raise InputSpecError(f"unknown dtype {match['dtype']!r} in --inputs; use one of "
                                     f"{', '.join(sorted(_SPEC_DTYPES))}")
            dtype = _SPEC_DTYPES[name]
        spec = TensorSpec(*shape, dtype=dtype)
        if match["name"]:
            if match["name"] in kwargs:
                raise InputSpecError(f"input {match['name']!r} given twice in --inputs")
            kwargs[match["name"]] = spec
        elif kwargs:
            raise InputSpecError(f"positional input {part!r} after a keyword input in --inputs")
        else:
            args.append(spec)
    return {"args": tuple(args), "kwargs": kwargs}
