"""Running ops on the meta device as the target device would run them, and fast.

Three things happen here and nowhere else:
- **Remembered results.** Meta kernels are pure functions of metadata, and many run in Python
  (refs, decompositions) at 100-500 us an op. A network repeats the same blocks at the same
  shapes, so a result is remembered by the op and its arguments' metadata, and a repeat call
  gets fresh meta outputs of the remembered shapes. Only results that are new storages are
  remembered: an output that shares an input's storage (a view, or ``_unsafe_view``, whose
  schema does not say that it aliases) must stay a view, so such calls always run the kernel.
- **burden's own shape rules** (``shape_rules``) first, for the common ops whose meta kernels
  run in Python; the meta kernel for everything else.
- **The kernel the target would pick.** ``scaled_dot_product_attention`` chooses its kernel by
  device; on meta it always takes the math path, which materialises the attention matrix, while
  the CPU takes its fused flash kernel when the inputs allow, and a GPU its flash, memory-efficient
  or cuDNN kernel. ``target_attention`` asks the CPU's own chooser, or applies CUDA's rules, and
  runs the fused op on meta when the target would.
"""

from __future__ import annotations

import importlib
import sys
import threading
import time
from collections import OrderedDict
from typing import Any, Callable

import torch
from torch.nn import functional
from torch.utils._python_dispatch import _disable_current_modes

from .containers import leaves, map_leaves
from .records import schema_facts
from .shape_rules import RETURNS_NOTHING, shape_rule

aten = torch.ops.aten


class _Uncacheable(Exception):
    pass


_SCALARS = (bool, int, float, str, torch.dtype, torch.device, torch.memory_format, torch.layout, type(None))


def _leaf_key(value: Any) -> Any:
    kind = type(value)
    if kind is int or kind is float or kind is bool:  # the common scalars, without isinstance
        return (kind, value)
    if kind is torch.Tensor or isinstance(value, torch.Tensor):
        return (tuple(value.shape), value.stride(), value.dtype, value.storage_offset())
    if isinstance(value, _SCALARS):
        return (type(value), value)  # True and 1 are equal keys otherwise
    raise _Uncacheable


def _describe(out: Any) -> tuple[bool, tuple]:
    """(whether the op returned a tuple, the (shape, stride, dtype) of each output)."""
    if isinstance(out, torch.Tensor):
        return False, ((tuple(out.shape), out.stride(), out.dtype),)
    if type(out) is tuple and all(isinstance(t, torch.Tensor) for t in out):
        return True, tuple((tuple(t.shape), t.stride(), t.dtype) for t in out)
    raise _Uncacheable


def _rebuild(spec: tuple[bool, tuple]) -> Any:
    many, outputs = spec
    out = tuple(torch.empty_strided(shape, stride, dtype=dtype, device="meta") for shape, stride, dtype in outputs)
    return out if many else out[0]


def _storages(value: Any) -> set[int]:
    return {t.untyped_storage()._cdata for t in leaves(value) if isinstance(t, torch.Tensor)}


# Before 2.8, some of torch's meta kernels (its Python references) run through
# ``torch._compile._disable_dynamo``, which imports torch._dynamo on first use; that import discovers
# torch's builtins with a function mode of its own, which fails where burden's bookkeeping has
# torch-function handling off. There it is imported before the first trace (the kernels would import
# it in that trace anyway).
_DYNAMO_IN_KERNELS = tuple(int(part) for part in torch.__version__.split(".")[:2]) < (2, 8)


class MetaKernels:
    """Meta results remembered across analyses, bounded, and forgotten when torch's kernel
    registrations change (a library registering a new meta kernel mid-session). Traces in several
    threads share it: each entry is whole before it is stored, and the table changes under a lock."""

    def __init__(self, limit: int = 1 << 14) -> None:
        self.limit = limit
        self._lock = threading.Lock()
        self._results: OrderedDict[Any, tuple[bool, tuple]] = OrderedDict()
        self._generation: Any = None
        self._checked = float("-inf")  # when the generation was last read

    def clear(self) -> None:
        with self._lock:
            self._results.clear()

    def _check_generation(self) -> None:
        # The number of registered ops and Python kernels changes when anything registers new ones.
        generation = (len(torch._C._dispatch_get_all_op_names()) if hasattr(torch._C, "_dispatch_get_all_op_names")
                      else None, len(getattr(torch._ops, "_higher_order_ops", {})))
        if generation != self._generation:
            self.clear()
            self._generation = generation

    def begin(self) -> None:
        """Called once per analysis, not per op: invalidation is checked here, at most once a second
        (listing torch's ops takes milliseconds; registrations come from a user's code, between calls)."""
        if _DYNAMO_IN_KERNELS and "torch._dynamo" not in sys.modules:
            importlib.import_module("torch._dynamo")  # see _DYNAMO_IN_KERNELS
        now = time.monotonic()
        if now - self._checked >= 1.0:
            self._checked = now
            self._check_generation()

    @staticmethod
    def _remembers(func: torch._ops.OpOverload) -> bool:
        mutable, declared_new = schema_facts(func)
        return not mutable and all(declared_new)

    def __call__(self, func: torch._ops.OpOverload, args: tuple, kwargs: dict) -> Any:
        key = None
        if self._remembers(func):
            try:
                key = (func, map_leaves(_leaf_key, args, rebuild="frozen"),
                       map_leaves(_leaf_key, kwargs, rebuild="frozen"))
            except _Uncacheable:
                key = None
            if key is not None:
                with self._lock:
                    spec = self._results.get(key)
                    if spec is not None:
                        self._results.move_to_end(key)
                if spec is not None:
                    return _rebuild(spec)
        out = shape_rule(func, args, kwargs)
        if out is RETURNS_NOTHING:
            return None
        if out is None:
            out = func(*args, **kwargs)
        if key is not None and not (_storages(out) & _storages((args, kwargs))):
            try:
                spec = _describe(out)
            except _Uncacheable:
                return out
            with self._lock:
                self._results[key] = spec
                if len(self._results) > self.limit:
                    self._results.popitem(last=False)
        return out


META_KERNELS = MetaKernels()


# --- the attention kernel the CPU would run ----------------------------------------------------

_FLASH = getattr(torch.nn.attention, "SDPBackend", None)
_FLASH_CPU = getattr(aten, "_scaled_dot_product_flash_attention_for_cpu", None)


def _cpu_probe(t: Any) -> Any:
    # Uninitialised CPU memory is never touched, so even a large probe costs no resident memory;
    # the chooser reads only shapes, strides, dtypes and flags.
    if isinstance(t, torch.Tensor) and t.device.type == "meta":
        return torch.empty_strided(t.shape, t.stride(), dtype=t.dtype, device="cpu").requires_grad_(t.requires_grad)
    return t


def _bool_mask_to_float(mask: Any, dtype: torch.dtype) -> Any:
    """What the CPU's attention does to a boolean mask before its fused kernel sees it."""
    if isinstance(mask, torch.Tensor) and mask.dtype == torch.bool:
        return torch.where(mask, torch.scalar_tensor(0.0, dtype=dtype, device=mask.device),
                           torch.scalar_tensor(float("-inf"), dtype=dtype, device=mask.device))
    return mask


def target_attention(capability: tuple[int, int] | None = None) -> dict[Any, Callable[..., Any]]:
    """The swap (for ``burden.patching.swapped``) under which ``scaled_dot_product_attention`` on
    meta tensors runs the kernel the target would pick: the CPU's (``capability`` None), or CUDA's on
    a GPU of that compute capability (``burden.cuda_attention``, by the rules of PyTorch's
    ``sdp_utils``). Models call it as ``torch.nn.functional.scaled_dot_product_attention``, and so
    does torch from inside its own Python functions (``multi_head_attention_forward``)."""
    original = functional.scaled_dot_product_attention
    if capability is not None:
        from .cuda_attention import cuda_attention  # CUDA's rules, read only for a CUDA target

    def attention(*args: Any, **kwargs: Any) -> Any:
        if capability is None:
            out = choose_attention(args, kwargs)
        else:
            out = cuda_attention(args, kwargs, capability=capability)
        return out if out is not None else original(*args, **kwargs)

    return {original: attention}


def choose_attention(args: tuple, kwargs: dict) -> Any:
    """The fused CPU kernel's output where the CPU would run it, else None (the default path)."""
    query = args[0] if args else kwargs.get("query")
    if _FLASH is None or _FLASH_CPU is None or not isinstance(query, torch.Tensor) or query.device.type != "meta":
        return None
    try:
        # outside the recorder: the probe is burden's question, not the model's work
        with _disable_current_modes():
            choice = torch._fused_sdp_choice(*map_leaves(_cpu_probe, args), **map_leaves(_cpu_probe, kwargs))
    except Exception:  # a signature this torch's chooser does not take: keep the default path
        return None
    if choice != _FLASH.FLASH_ATTENTION.value:
        return None
    names = ("query", "key", "value", "attn_mask", "dropout_p", "is_causal")
    given = dict(zip(names, args), **kwargs)
    # grouped-query attention needs nothing more: the CPU's flash kernel reads key and value heads
    # in groups itself (the chooser refuses it where a release's kernel cannot)
    mask = _bool_mask_to_float(given.get("attn_mask"), query.dtype)
    out = _FLASH_CPU(given["query"], given["key"], given["value"], float(given.get("dropout_p", 0.0)),
                     bool(given.get("is_causal", False)), attn_mask=mask, scale=given.get("scale"))
    return out[0]
