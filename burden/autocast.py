"""Mixed precision as ``torch.autocast`` does it on the target device, for a trace on any device.

Autocast decides per op, by a fixed policy per device (``aten/src/ATen/autocast_mode.cpp``: the
AutocastCPU table here, the AutocastCUDA one in ``burden.cuda_policy``), in which precision the op
runs: matrix products and convolutions in the low precision, a list of numerically sensitive ops
in float32 (on CUDA also softmax, normalisation, exp and log), a few at their widest input type;
every other op runs in whatever precision its inputs have. It casts with ``Tensor.to``, and keeps
the low-precision copy of each parameter (a leaf that requires grad) for as long as the autocast
region lasts, so a parameter used twice is cast once and its copy lives to the region's end.

The meta device has no autocast of its own, so the same policy is applied one level up, where
autograd still sees the casts: the Python entry points of those ops (``F.linear``, ``F.conv2d``,
``torch.matmul``, ``x @ y``, ``F.scaled_dot_product_attention``, ...) are answered by casting
wrappers through a torch function mode (``burden.patching.swapped``), in the tracing thread only.
The mode also sees the calls that torch's own Python functions make (``multi_head_attention_forward``
calls ``linear``). Matrix products that a C++ op makes internally are the exception: recurrent
layers are not cast, and ``einsum`` is cast as a whole, its inputs rather than its inner products.
"""

from __future__ import annotations

from contextlib import contextmanager
from typing import Any, Callable, Iterator

import torch
from torch.nn import functional

from .containers import iter_tensors, map_tensors
from .cuda_policy import FLOAT32, FLOAT32_OPT_DTYPE, LOW, PROMOTE
from .errors import InputSpecError
from .patching import keys_of, swapped

# (owner, attribute, policy): the Python names of autocast_mode.cpp's AutocastCPU ops
_ENTRY_POINTS: tuple[tuple[Any, str, str], ...] = (
    *((torch, name, LOW) for name in ("conv1d", "conv2d", "conv3d", "conv_tbc", "conv_transpose1d",
                                        "conv_transpose2d", "conv_transpose3d", "prelu", "matmul", "mm", "bmm",
                                        "baddbmm", "addmm", "addbmm", "einsum")),
    *((functional, name, LOW) for name in ("linear", "conv1d", "conv2d", "conv3d", "conv_transpose1d",
                                             "conv_transpose2d", "conv_transpose3d", "prelu",
                                             "scaled_dot_product_attention")),
    *((torch.Tensor, name, LOW) for name in ("matmul", "__matmul__", "__rmatmul__", "mm", "bmm", "baddbmm",
                                              "addmm", "addbmm")),
    *((torch, name, FLOAT32) for name in ("prod", "cdist", "quantile", "nanquantile", "stft", "polar")),
    *((functional, name, FLOAT32) for name in ("avg_pool3d", "max_pool3d", "adaptive_avg_pool3d", "grid_sample",
                                                 "mse_loss", "l1_loss", "smooth_l1_loss", "huber_loss", "kl_div",
                                                 "cross_entropy", "nll_loss", "binary_cross_entropy_with_logits",
                                                 "cosine_embedding_loss", "margin_ranking_loss", "soft_margin_loss",
                                                 "triplet_margin_loss", "multi_margin_loss",
                                                 "multilabel_margin_loss", "hinge_embedding_loss",
                                                 "poisson_nll_loss", "ctc_loss")),
    *((torch, name, PROMOTE) for name in ("cat", "concat", "concatenate", "stack", "index_copy")),
)
_OWNERS = {"torch": torch, "torch.nn.functional": functional, "torch.Tensor": torch.Tensor,
           "torch.linalg": torch.linalg}
# SoftMax.cpp, softmax(input, dim, dtype): a CUDA float16 input asked for float32 runs the kernel
# with half_to_float, reading the input as it is; any other input is first copied to the dtype
_HALF_TO_FLOAT = {"softmax": torch._softmax, "log_softmax": torch._log_softmax}
DTYPES = {"bf16": torch.bfloat16, "bfloat16": torch.bfloat16, "fp16": torch.float16, "float16": torch.float16}


def _eligible(t: torch.Tensor) -> bool:
    return t.is_floating_point() and t.dtype is not torch.float64


class _Policy:
    """The casts of one autocast region, with its cache of parameter copies."""

    def __init__(self, dtype: torch.dtype) -> None:
        self.dtype = dtype
        self.cache: dict[int, tuple[torch.Tensor, torch.Tensor]] = {}  # id(parameter) -> (parameter, its copy)

    def _cast(self, t: torch.Tensor, dtype: torch.dtype) -> torch.Tensor:
        if not _eligible(t) or t.dtype is dtype:
            return t
        cached = dtype is self.dtype and t.dtype is torch.float32 and t.requires_grad and t.is_leaf
        if cached:
            hit = self.cache.get(id(t))
            if hit is not None:
                return hit[1]
        copy = t.to(dtype)
        if cached:
            self.cache[id(t)] = (t, copy)
        return copy

    def wrap(self, original: Callable, policy: str, fused: Callable | None = None) -> Callable:
        """``original`` under ``policy``; ``fused``, where given, is the kernel CUDA runs for a float16
        input that is to come out in float32 without a float32 copy of it (softmax's half_to_float)."""
        def entry_point(*args: Any, **kwargs: Any) -> Any:
            # the mode is off while this runs: the ops that ``original`` calls are its own
            if policy == FLOAT32_OPT_DTYPE:
                # no cast of the inputs: the op computes in float32 unless the caller chose a dtype
                first = args[0] if args else None
                # a dtype of None is none chosen (torch hands F.softmax its keywords, dtype=None included)
                if kwargs.get("dtype") is None and isinstance(first, torch.Tensor) and _eligible(first):
                    dim = kwargs.get("dim", args[1] if len(args) > 1 else None)
                    if fused is not None and first.dtype is torch.float16 and isinstance(dim, int):
                        return fused(first, dim, True)
                    kwargs = {**kwargs, "dtype": torch.float32}
                dtype = None
            elif policy == LOW:
                dtype = self.dtype
            elif policy == FLOAT32:
                dtype = torch.float32
            else:
                floats = {t.dtype for t in iter_tensors((args, kwargs)) if _eligible(t)}
                dtype = max(floats, key=lambda d: d.itemsize) if len(floats) > 1 else None
            if dtype is not None:
                args, kwargs = map_tensors(lambda t: self._cast(t, dtype), (args, kwargs))
            return original(*args, **kwargs)

        return entry_point


def _cuda_entry_points() -> tuple[tuple[Any, str, str], ...]:
    """The AutocastCUDA policy at the same Python names."""
    from .cuda_policy import CUDA_AUTOCAST

    return tuple((_OWNERS[owner], name, policy) for owner, name, policy in CUDA_AUTOCAST)


def amp_dtype(amp: str | torch.dtype | None) -> torch.dtype | None:
    """The low precision of ``amp`` ("bf16", "fp16", a dtype or None)."""
    if amp is None or isinstance(amp, torch.dtype) and amp in DTYPES.values():
        return amp
    try:
        return DTYPES[str(amp).lower()]
    except KeyError:
        raise InputSpecError(f"unknown amp precision {amp!r}; use bf16 or fp16") from None


@contextmanager
def autocast(dtype: torch.dtype | None, device: str = "cpu") -> Iterator[None]:
    """``device``'s autocast policy for the block, in this thread (nothing with ``dtype=None``); the
    parameter copies it made are dropped at the end, as ``torch.autocast`` drops its cache."""
    if dtype is None:
        yield
        return
    policy = _Policy(dtype)
    table = {}
    for owner, name, kind in _cuda_entry_points() if device == "cuda" else _ENTRY_POINTS:
        current = getattr(owner, name, None)
        if current is not None:  # else not in this torch release
            fused = _HALF_TO_FLOAT.get(name) if device == "cuda" else None
            wrapper = policy.wrap(current, kind, fused)
            table.update({key: wrapper for key in keys_of(current)})
    try:
        with swapped(table):
            yield
    finally:
        policy.cache.clear()
