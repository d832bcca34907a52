"""What a failed trace says: which layer, which op, which shapes, and whose fault it is.

Three kinds of failure, told apart so that the message is true:
- the model needs real values (``.item()``, ``nonzero``, boolean masks) that the meta device
  does not have: ``DataDependentError``;
- an op refused its inputs (shapes that do not fit), or the model's own code raised:
  ``ShapeError`` / ``ForwardError``;
- burden's own bookkeeping failed: ``InternalError``, a bug to report, with what to report.
"""

from __future__ import annotations

from typing import Any

import torch

from .containers import leaves
from .errors import BurdenError, DataDependentError, ForwardError, InternalError, ShapeError
from .op_groups import DATA_DEPENDENT_OPS
from .records import ModuleInfo, TensorInfo

# what torch says when a kernel needs values that a meta tensor does not have
_NEEDS_VALUES = ("meta tensor", "no data", "data-dependent", "data dependent", "without output_size",
                 "fake impl or meta kernel", "register_meta function", "unallocated storage")
# what torch says when an op's tensors are on two devices, or of two dtypes it cannot mix
_OTHER_DEVICE = ("different device", "devices must match", "same device")
_OTHER_DTYPE = ("expected scalar type", "same dtype", "dtypes must match")


def describe_dtypes(value: Any) -> str:
    """Shapes and dtypes of the tensors in an argument list: ``1x128 bfloat16``."""
    found = [f"{'x'.join(str(int(d)) for d in t.shape)} {str(t.dtype).removeprefix('torch.')}" for t in leaves(value)
             if isinstance(t, (torch.Tensor, TensorInfo))]
    return ", ".join(found) if found else "no tensors"


def describe_shapes(value: Any) -> str:
    """Shapes of the tensors in an argument list, as a person reads them: ``1x3x224x224``."""
    shapes = ["x".join(str(int(d)) for d in t.shape) for t in leaves(value)
              if isinstance(t, (torch.Tensor, TensorInfo))]
    return ", ".join(shapes) if shapes else "no tensors"


def where(path: str, modules: dict[str, ModuleInfo]) -> str:
    if path == "" or path not in modules:
        return "the model's own forward"
    return f"layer {path} ({modules[path].type})"


def first_line(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()
    return text[0] if text else type(exc).__name__


def _op_name(func: Any) -> str:
    return str(getattr(func, "overloadpacket", func)).replace("aten::", "aten.")


def needs_values(exc: BaseException) -> bool:
    text = str(exc).lower()
    return any(marker in text for marker in _NEEDS_VALUES) or "DataDependent" in type(exc).__name__


def needs_values_message(what: str, at: str) -> str:
    return (f"the model needs real tensor values, which the meta device does not have: {what} at {at}; "
            f"analyse it with device='cpu' (--device cpu)")


def _mixes(exc: BaseException, words: tuple[str, ...]) -> bool:
    text = str(exc).lower()
    return any(word in text for word in words)


def op_failure(func: Any, module: str, modules: dict[str, ModuleInfo], args: tuple, exc: Exception,
               meta: bool) -> BurdenError:
    """What an op's refusal means: values it needs, tensors on two devices (on meta, where burden
    put every tensor, its own bug), dtypes the model's code mixes, or shapes that do not fit."""
    at = where(module, modules)
    if meta and (getattr(func, "overloadpacket", None) in DATA_DEPENDENT_OPS or needs_values(exc)):
        return DataDependentError(needs_values_message(f"{_op_name(func)} depends on the values", at))
    if meta and _mixes(exc, _OTHER_DEVICE):
        return internal_failure(func, module, modules, args, exc)
    if _mixes(exc, _OTHER_DTYPE):
        return ForwardError(f"the model's forward mixes dtypes at {at}: {_op_name(func)} got "
                            f"{describe_dtypes(args)}: {first_line(exc)}")
    return ShapeError(f"the input does not fit at {at}: {_op_name(func)} got {describe_shapes(args)}: "
                      f"{first_line(exc)}")


def forward_failure(stack: list[str], modules: dict[str, ModuleInfo], args: Any, exc: Exception) -> BurdenError:
    at = where(stack[-1] if stack else "", modules)
    if needs_values(exc):
        return DataDependentError(needs_values_message(first_line(exc), at))
    return ForwardError(f"forward failed at {at}, which got {describe_shapes(args)}: "
                        f"{type(exc).__name__}: {first_line(exc)}")


def internal_failure(func: Any, module: str, modules: dict[str, ModuleInfo], args: Any,
                     exc: BaseException) -> InternalError:
    return InternalError(f"internal error in burden (a bug in burden, please report it) while recording "
                         f"{_op_name(func)} at {where(module, modules)} with inputs {describe_shapes(args)}: "
                         f"{type(exc).__name__}: {first_line(exc)}")
