"""Groups of aten ops that the tracer and several conventions treat alike.

Private ops come and go between torch releases, so each group holds only the ops this torch has.
"""

from __future__ import annotations

from typing import Any

import torch

aten = torch.ops.aten


def existing_ops(*names: str) -> tuple[Any, ...]:
    """The aten ops of these names that this torch release has: ``"relu"`` is the packet (every
    overload), ``"relu.default"`` one overload."""
    found = []
    for name in names:
        packet, _, overload = name.partition(".")
        try:
            found.append(getattr(getattr(aten, packet), overload) if overload else getattr(aten, packet))
        except (AttributeError, RuntimeError):  # not in this torch release
            pass
    return tuple(found)


# Only ops that reach the tracer belong here: ops PyTorch always decomposes first (reshape, flatten,
# contiguous, dropout, max_pool2d...) are never recorded; their parts are.

# results share the input's storage: no new memory, no work
ALIAS_OPS = existing_ops(
    "view", "_unsafe_view", "alias", "detach", "t", "transpose", "permute", "expand", "squeeze", "unsqueeze",
    "slice", "select", "as_strided", "unbind", "split", "split_with_sizes", "unfold", "lift_fresh",
    "_reshape_alias", "unsafe_split", "unsafe_split_with_sizes", "view_as_real", "view_as_complex",
    # in-place changes of a tensor's shape or strides: metadata only, no data written
    "as_strided_", "squeeze_", "unsqueeze_", "transpose_", "t_", "detach_",
)
# copies and lookups: data moves, no arithmetic
COPY_OPS = existing_ops("clone", "copy_", "_to_copy", "_local_scalar_dense", "lift_fresh_copy", "embedding",
                "index_select", "gather", "index")
DROPOUT_OPS = existing_ops("native_dropout")
FACTORY_OPS = existing_ops(
    "empty", "empty_strided", "empty_like", "zeros", "zeros_like", "ones", "ones_like", "full", "full_like",
    "arange", "scalar_tensor", "new_empty", "new_empty_strided", "new_zeros", "new_ones", "new_full", "fill_",
    "zero_", "linspace", "randn", "rand", "randint", "randn_like", "rand_like", "normal_", "uniform_",
    "bernoulli_", "eye",
)
NORM_OPS = existing_ops(
    "native_batch_norm", "_native_batch_norm_legit", "_native_batch_norm_legit_no_training", "cudnn_batch_norm",
    "miopen_batch_norm", "_batch_norm_with_update", "_batch_norm_no_update",
)
SOFTMAX_OPS = existing_ops("_softmax", "softmax", "_safe_softmax")
# ops whose output shape depends on the values, not only on the shapes: they cannot run on meta
DATA_DEPENDENT_OPS = existing_ops(
    "_local_scalar_dense", "nonzero", "_unique2", "unique_dim", "unique_consecutive", "masked_select",
    "repeat_interleave", "equal", "is_nonzero", "allclose", "bincount", "histc",
)
# Losses whose kernel makes the output the input's size and then shrinks it to the reduced shape
# (``resize_`` keeps the storage): the 0-d loss holds a storage as large as its input, on the CPU as
# on any device these structured kernels serve. Meta kernels give the small one.
INPUT_SIZED_LOSSES = existing_ops("mse_loss", "smooth_l1_loss", "soft_margin_loss", "binary_cross_entropy")
# fused attention kernels: (query, key, value, ...) -> (output, statistics saved for backward, ...)
ATTENTION_OPS = existing_ops(
    "_scaled_dot_product_flash_attention", "_scaled_dot_product_efficient_attention",
    "_scaled_dot_product_cudnn_attention", "_scaled_dot_product_flash_attention_for_cpu",
)

# ops whose outputs after the first are saved for backward (statistics, pooling indices, masks),
# not features of the forward pass
AUX_OUTPUT_OPS = {
    *NORM_OPS, *ATTENTION_OPS,
    *existing_ops("native_layer_norm", "native_group_norm", "native_dropout",
          "max_pool2d_with_indices", "max_pool3d_with_indices", "adaptive_max_pool2d", "adaptive_max_pool3d"),
}


_DECOMPOSES: dict[Any, bool] = {}


def decomposes(func: torch._ops.OpOverload) -> bool:
    """Whether ``func`` breaks into other ops before burden records it (a CompositeImplicitAutograd
    kernel, in C++ or Python), as on a real device: an op that also has a CPU or CUDA kernel of
    its own (``silu_backward``) runs that one kernel there, with none of the decomposition's
    intermediates. Asked once per op, not on every call."""
    known = _DECOMPOSES.get(func)
    if known is None:
        key = torch._C.DispatchKey.CompositeImplicitAutograd
        try:
            name = func.name()
            known = (key in func.py_kernels or torch._C._dispatch_has_kernel_for_dispatch_key(name, key)) and not any(
                torch._C._dispatch_has_kernel_for_dispatch_key(name, device) for device in ("CPU", "CUDA"))
        except RuntimeError:  # not a registered aten op
            known = False
        _DECOMPOSES[func] = known
    return known


def never_recorded(target: Any) -> bool:
    """True for an op (packet or overload) that always decomposes, so that burden never sees it."""
    if isinstance(target, torch._ops.OpOverload):
        return decomposes(target)
    if isinstance(target, torch._ops.OpOverloadPacket):
        # the out= variants are never what a model calls
        overloads = [getattr(target, name) for name in target.overloads() if not name.endswith("out")]
        return bool(overloads) and all(decomposes(o) for o in overloads)
    return False


def _collective_ops() -> dict[Any, tuple[str, tuple[str, ...], tuple[str, ...]]]:
    """Collectives, by kind, with the arguments that hold what a rank sends and what it receives
    ("" for the op's result): the process-group ops that ``torch.distributed`` calls (FSDP's) and
    the functional ones that DTensor calls (tensor parallelism's)."""
    table = {
        "c10d._allgather_base_": ("all-gather", ("input_tensor",), ("output_tensor",)),
        "c10d.allgather_": ("all-gather", ("input_tensors",), ("output_tensors",)),
        "c10d.allgather_into_tensor_coalesced_": ("all-gather", ("inputs",), ("outputs",)),
        "c10d._reduce_scatter_base_": ("reduce-scatter", ("input_tensor",), ("output_tensor",)),
        "c10d.reduce_scatter_": ("reduce-scatter", ("input_tensors",), ("output_tensors",)),
        "c10d.reduce_scatter_tensor_coalesced_": ("reduce-scatter", ("inputs",), ("outputs",)),
        "c10d.allreduce_": ("all-reduce", ("tensors",), ("tensors",)),
        "c10d.allreduce_coalesced_": ("all-reduce", ("tensors",), ("tensors",)),
        "c10d.broadcast_": ("broadcast", ("tensors",), ("tensors",)),
        "c10d.alltoall_base_": ("all-to-all", ("input",), ("output",)),
        "_c10d_functional.all_gather_into_tensor": ("all-gather", ("input",), ("",)),
        "_c10d_functional.all_gather_into_tensor_coalesced": ("all-gather", ("inputs",), ("",)),
        "_c10d_functional.reduce_scatter_tensor": ("reduce-scatter", ("input",), ("",)),
        "_c10d_functional.reduce_scatter_tensor_coalesced": ("reduce-scatter", ("inputs",), ("",)),
        "_c10d_functional.all_reduce": ("all-reduce", ("input",), ("",)),
        "_c10d_functional.all_reduce_": ("all-reduce", ("input",), ("input",)),
        "_c10d_functional.all_reduce_coalesced": ("all-reduce", ("inputs",), ("",)),
        "_c10d_functional.all_to_all_single": ("all-to-all", ("input",), ("",)),
        "_c10d_functional.broadcast": ("broadcast", ("input",), ("",)),
    }
    return {op: facts for name, facts in table.items() for op in [_distributed_op(name)] if op is not None}


def _distributed_op(name: str) -> Any:
    """The default overload of ``namespace.op``, or None where this torch release (or a build
    without torch.distributed) has no such op."""
    namespace, _, op = name.partition(".")
    try:
        return getattr(getattr(torch.ops, namespace), op).default
    except (AttributeError, RuntimeError):
        return None


# collective op -> (kind, arguments sent, arguments received)
COLLECTIVES = _collective_ops()
# the wait for a functional collective's result
WAIT_TENSOR = _distributed_op("_c10d_functional.wait_tensor")


# namespaces of a parallel engine's ops, which do no arithmetic of the model's: the collectives (a
# reduction's sums are communication), the wait for a functional one, FSDP's copies into and out of
# its flat buffers (registered when FSDP loads), the ranges ``record_function`` marks
PARALLEL_NAMESPACES = frozenset({"c10d", "_c10d_functional", "_c10d_functional_autograd", "fsdp", "profiler"})
