"""The attention kernel PyTorch 2.13's CUDA dispatcher picks for ``F.scaled_dot_product_attention``, and
that kernel's outputs on the meta device.

On meta, SDPA always takes the math path, which materialises the S x S score matrix. On a CUDA device
``select_sdp_backend`` picks a fused kernel whenever one accepts the call, and only math makes that
matrix. ``cuda_backend`` replays the chooser for a compute capability; ``cuda_attention`` then runs the
chosen kernel's aten op on meta, under autograd, so that a training trace records that kernel's backward.

Sources (torch 2.13.0, git cf30153c):
- ``sdp_utils_cpp.h``: the exact 2.13 header, as shipped in the wheel's ``torch/include``. It has the
  shared checks (tensor shapes, batch/heads with GQA, zero sequence lengths, last-dim stride, mask shape).
- ``cuda/sdp_utils.cpp``: not in the wheel and not read at the v2.13.0 tag itself, but from revisions
  either side of it (early 2026, and 001f694a after it). They are placed by the 2.13 branch cut (10 June
  2026) and by line-numbered quotes of v2.13.0: ``check_prefer_cudnn_attention`` at lines 80-107 with its
  ``CUDA_VERSION < 13000`` arm, and cuDNN's dense constraints, a list of four. So 2.13 has the mem-eff
  pointer-alignment check (#184258, May 2026). It lacks cuDNN's d=256 frontend gate and d=256 backward
  check (#185553), the sm107 gate (#190949) and mem-eff GQA (#191085, July 2026). The GQA point fits the
  wheel's own header, whose ``check_batch_size_and_num_heads_dense`` has no ``supports_mqa`` parameter.
- ``attention.cpp``: ``scaled_dot_product_attention`` and its helpers (``pad_last_dim``,
  ``post_process_flash_output``, ``preprocess_mask``, ``convert_boolean_attn_mask(_cudnn)``,
  ``should_compute_logsumexp``).

Not modelled: nested tensors; ROCm; a user priority order set through ``sdpa_kernel(set_priority=True)``;
``allow_fp16_bf16_reduction_math_sdp``; FA3 (``userEnabledFA3SDP``, off by default, adds fp8 to flash).
A build without flash, mem-eff or cuDNN attention isn't modelled either: the default wheels have all three.
cuDNN's checks for runtime versions below 9.0 are dead code here, because a build can't use cuDNN
attention with cuDNN below 9.0. Runtime flags and library versions are modelled in ``CudaBuild``, whose
defaults are those of the default wheel (CUDA 13, a bundled cuDNN newer than 9.15.0). Under 2.13's rules,
every cuDNN from 9.15.1 up chooses the same.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, Iterator

import torch
from torch.nn import functional
from torch._subclasses.fake_tensor import FakeTensor

aten = torch.ops.aten

BACKENDS = ("flash", "efficient", "cudnn", "math")
_HALF = (torch.float16, torch.bfloat16)
_CUDNN_MAX_DIM = 65535  # check_cudnn_tensor_shapes: batch and heads limit


@dataclass(frozen=True)
class CudaBuild:
    """The runtime facts besides the inputs that the 2.13 chooser reads; defaults are the default wheel's."""

    cuda: tuple[int, int] = (13, 0)  # CUDA_VERSION the wheel was built with (check_prefer_cudnn_attention)
    cudnn: int = 91900  # versionRuntimeCuDNN(); only > 91500, >= 91000/91100 and 91100 < v < 91400 matter
    cudnn_prioritized: bool = True  # TORCH_CUDNN_SDPA_DEPRIORITIZED unset
    deterministic: bool = False  # torch.use_deterministic_algorithms(True) without warn_only


DEFAULT_BUILD = CudaBuild()


@dataclass(frozen=True)
class AttentionCall:
    """The facts about one SDPA call that ``select_sdp_backend`` reads. ``scale`` is read by no check.

    ``requires_grad`` is ``input_requires_grad``: any of q, k, v requires grad and grad mode is on. A
    ``mask`` dtype without ``mask_shape`` means a (Lq, Lk) mask.
    """

    query: tuple[int, ...]
    key: tuple[int, ...]
    value: tuple[int, ...]
    dtype: torch.dtype
    mask: torch.dtype | None = None
    mask_shape: tuple[int, ...] | None = None
    mask_requires_grad: bool = False
    mask_last_stride: int = 1
    dropout_p: float = 0.0
    is_causal: bool = False
    enable_gqa: bool = False
    requires_grad: bool = False
    last_strides: tuple[int, int, int] = (1, 1, 1)  # stride(-1) of q, k, v
    storage_offsets: tuple[int, int, int] = (0, 0, 0)  # in elements, of q, k, v

    @classmethod
    def of(cls, query: torch.Tensor, key: torch.Tensor, value: torch.Tensor, attn_mask: torch.Tensor | None = None,
           dropout_p: float = 0.0, is_causal: bool = False, enable_gqa: bool = False) -> AttentionCall:
        """The facts of a call with these tensors, as the dispatcher would see them now."""
        qkv = (query, key, value)
        has_mask = attn_mask is not None
        return cls(
            tuple(query.shape), tuple(key.shape), tuple(value.shape), query.dtype,
            mask=attn_mask.dtype if has_mask else None,
            mask_shape=tuple(attn_mask.shape) if has_mask else None,
            mask_requires_grad=has_mask and attn_mask.requires_grad,
            mask_last_stride=attn_mask.stride(-1) if has_mask and attn_mask.dim() else 1,
            dropout_p=float(dropout_p), is_causal=bool(is_causal), enable_gqa=bool(enable_gqa),
            requires_grad=torch.is_grad_enabled() and any(t.requires_grad for t in qkv),
            last_strides=tuple(t.stride(-1) if t.dim() else 1 for t in qkv),
            storage_offsets=tuple(t.storage_offset() for t in qkv),
        )


# --- the checks, each named after the source function it models ---------------------------------------

def _four_d(c: AttentionCall) -> bool:
    """check_tensor_shapes: every fused kernel takes 4-D q, k, v only."""
    return len(c.query) == len(c.key) == len(c.value) == 4


def _batch_and_heads(c: AttentionCall, supports_gqa: bool, same_kv_heads: bool) -> bool:
    """check_batch_size_and_num_heads_dense<supports_gqa, requires_same_num_heads>: equal batches; equal
    heads, unless enable_gqa and the backend has GQA, when k (and v, unless k and v may differ) divide q."""
    if not c.query[0] == c.key[0] == c.value[0]:
        return False
    hq, hk, hv = c.query[-3], c.key[-3], c.value[-3]
    if c.enable_gqa and supports_gqa:  # check_grouped_query_attention
        if (same_kv_heads and hk != hv) or hk <= 0 or hv <= 0:
            return False
        return hq % hk == 0 and (same_kv_heads or hq % hv == 0)
    return hq == hk == hv


def _nonzero_lengths(c: AttentionCall) -> bool:
    """check_nonzero_sequence_lengths_dense: no fused kernel takes an empty Lq or Lk."""
    return c.query[-2] != 0 and c.key[-2] != 0


def _unit_last_strides(c: AttentionCall, ignore_singleton_dim: bool) -> bool:
    """check_last_dim_stride_equals_1_dense: q, k, v (and on GPUs the mask) need stride(-1) == 1; flash and
    cuDNN ignore q, k, v strides when the head dim is 1, since it gets padded anyway."""
    qkv = all(s == 1 for s in c.last_strides) or (ignore_singleton_dim and c.query[-1] == 1)
    return qkv and (c.mask is None or c.mask_last_stride == 1)


def _gemm_alignment(capability: tuple[int, int], dtype: torch.dtype) -> int:
    """minimum_gemm_alignment: elements per CUTLASS access; 128 bits where tensor cores run (sm80+, or
    sm70+ for 16-bit types), at least 4 from sm80 on, else 1."""
    half = dtype in _HALF
    alignment = 4 if capability[0] >= 8 else 1
    if capability[0] >= 8 or (capability[0] >= 7 and half):
        alignment = max(alignment, 128 // (16 if half else 32))
    return alignment


def _flash_training_head_dim(c: AttentionCall, capability: tuple[int, int]) -> bool:
    """check_requires_grad_and_head_dim_gt192_constraints_on_sm86_89_or_120: flash's backward fails on
    sm86-89 and sm120-121 for head dims in (192, 224], and above 224 with dropout."""
    if not c.requires_grad or not ((8, 6) <= capability <= (8, 9) or (12, 0) <= capability <= (12, 1)):
        return True
    d = c.query[-1]
    return d <= 192 or (d > 224 and c.dropout_p <= 0.0)


def _flash(c: AttentionCall, cap: tuple[int, int], enabled: frozenset, build: CudaBuild) -> Iterator:
    """can_use_flash_attention, in the source's order."""
    yield "check_runtime_disabled_flash", "flash" in enabled
    yield "check_tensor_shapes", _four_d(c)
    yield "check_for_attn_mask", c.mask is None
    yield "check_head_dim_size_flash", c.query[-1] == c.key[-1] == c.value[-1] and c.query[-1] <= 256
    yield "check_flash_attention_hardware_support", (8, 0) <= cap <= (12, 1)
    yield "check_requires_grad_and_head_dim_gt192_constraints_on_sm86_89_or_120", _flash_training_head_dim(c, cap)
    yield "check_flash_causal_non_square_seqlens", not c.is_causal or c.query[-2] == c.key[-2]
    # check_dtypes_flash_attention -> check_dtypes_low_precision: fp16, and bf16 from sm80 (FA3 off)
    yield "check_dtypes_flash_attention", c.dtype in (_HALF if cap[0] >= 8 else (torch.float16,))
    yield "check_batch_size_and_num_heads_dense", _batch_and_heads(c, supports_gqa=True, same_kv_heads=True)
    yield "check_nonzero_sequence_lengths_dense", _nonzero_lengths(c)
    yield "check_last_dim_stride_equals_1_dense", _unit_last_strides(c, ignore_singleton_dim=True)


def _efficient(c: AttentionCall, cap: tuple[int, int], enabled: frozenset, build: CudaBuild) -> Iterator:
    """can_use_mem_efficient_attention, in the source's order."""
    yield "check_runtime_disabled_mem_efficient", "efficient" in enabled
    yield "check_mem_efficient_hardware_support", (5, 0) <= cap <= (12, 1)
    yield "check_tensor_shapes", _four_d(c)
    align = _gemm_alignment(cap, c.dtype)
    dq, dk, dv = c.query[-1], c.key[-1], c.value[-1]
    # check_head_dim_size_mem_efficient: dq == dk, both head dims aligned and positive; no upper limit on CUDA
    yield "check_head_dim_size_mem_efficient", dq == dk and dq > 0 and dv > 0 and dq % align == dv % align == 0
    # check_data_ptr_alignment_mem_efficient: from sm80, storage offsets aligned to the gemm alignment
    # (the caching allocator's bases are 256-byte aligned); empty tensors are exempt
    aligned = cap[0] < 8 or all(math.prod(shape) == 0 or offset % align == 0
                                for shape, offset in zip((c.query, c.key, c.value), c.storage_offsets))
    yield "check_data_ptr_alignment_mem_efficient", aligned
    yield "check_nonzero_sequence_lengths_dense", _nonzero_lengths(c)
    yield "check_last_dim_stride_equals_1_dense", _unit_last_strides(c, ignore_singleton_dim=False)
    yield "check_batch_size_and_num_heads_dense", _batch_and_heads(c, supports_gqa=False, same_kv_heads=True)
    # check_tensor_dtype: fp16, fp32, and bf16 from sm80
    dtypes = (torch.float16, torch.float32, torch.bfloat16) if cap[0] >= 8 else (torch.float16, torch.float32)
    yield "check_tensor_dtype", c.dtype in dtypes


def _equal_or_one(size: int, target: int) -> bool:
    return size == target or size == 1


def _cudnn_mask_shape(c: AttentionCall) -> bool:
    """check_attn_mask_shape: a mask that needs no grad, 2-D (Lq|1, Lk|1) or 4-D (B|1, H|1, Lq|1, Lk|1)."""
    if c.mask is None:
        return True
    shape = c.mask_shape if c.mask_shape is not None else (c.query[-2], c.key[-2])
    fits = _equal_or_one
    if c.mask_requires_grad or len(shape) < 2 or not (fits(shape[-2], c.query[2]) and fits(shape[-1], c.key[2])):
        return False
    return len(shape) == 2 or (len(shape) == 4 and fits(shape[0], c.query[0]) and fits(shape[1], c.query[1]))


def _cudnn_shapes(c: AttentionCall, cap: tuple[int, int], build: CudaBuild) -> bool:
    """check_cudnn_tensor_shapes (cuDNN 9+ branches): B, H <= 65535; head dims <= 128 (256 on sm90 from
    cuDNN 9.10, 192/128 on sm10x from 9.11) and multiples of 8; Lk != 1; Lq != 1 with dropout."""
    s_q, s_k, d_qk, d_v = c.query[2], c.key[2], c.query[3], c.value[3]
    if c.query[0] > _CUDNN_MAX_DIM or c.query[1] > _CUDNN_MAX_DIM:
        return False
    limit = 128
    if build.cudnn >= 91000 and cap == (9, 0):
        limit = 256
    if build.cudnn >= 91100 and cap[0] == 10 and d_qk == 192 and d_v == 128:
        limit = 192
    if d_qk > limit or d_v > limit or d_qk % 8 or d_v % 8:
        return False
    return s_k != 1 and not (s_q == 1 and c.dropout_p != 0.0)


def _cudnn(c: AttentionCall, cap: tuple[int, int], enabled: frozenset, build: CudaBuild) -> Iterator:
    """can_use_cudnn_attention, in the source's order."""
    yield "cudnn built and >= 9.0", build.cudnn >= 90000
    yield "cudnn 9.11-9.13 dropout", not (c.dropout_p > 0.0 and 91100 < build.cudnn < 91400)
    yield "check_runtime_disabled_cudnn", "cudnn" in enabled
    yield "check_tensor_shapes", _four_d(c)
    yield "check_cudnn_deterministic", not build.deterministic
    # check_dtypes_low_precision: fp16, and bf16 from sm80
    yield "check_dtypes_low_precision", c.dtype in (_HALF if cap[0] >= 8 else (torch.float16,))
    yield "check_attn_mask_shape", _cudnn_mask_shape(c)
    yield "check_cudnn_hardware_support", (8, 0) <= cap <= (12, 1)
    # check_cudnn_dropout: cuDNN's dropout resolution is 1/16
    yield "check_cudnn_dropout", c.dropout_p * 16.0 == math.floor(c.dropout_p * 16.0)
    yield "check_nonzero_sequence_lengths_dense", _nonzero_lengths(c)
    yield "check_last_dim_stride_equals_1_dense", _unit_last_strides(c, ignore_singleton_dim=True)
    yield "check_batch_size_and_num_heads_dense", _batch_and_heads(c, supports_gqa=True, same_kv_heads=False)
    yield "check_cudnn_tensor_shapes", _cudnn_shapes(c, cap, build)


_CHECKS = {"flash": _flash, "efficient": _efficient, "cudnn": _cudnn}


def _enabled(enabled: tuple[str, ...] | frozenset) -> frozenset:
    chosen = frozenset(enabled)
    unknown = chosen - set(BACKENDS)
    if unknown:
        raise ValueError(f"unknown SDPA backends {sorted(unknown)}; expected some of {BACKENDS}")
    return chosen


def why_not(call: AttentionCall, capability: tuple[int, int], backend: str,
            enabled: tuple[str, ...] | frozenset = BACKENDS, build: CudaBuild = DEFAULT_BUILD) -> str | None:
    """The first check of ``can_use_<backend>_attention`` that rejects ``call``, by its source name; None
    when the backend takes it. ``math`` only needs to be enabled."""
    chosen = _enabled(enabled)
    if backend == "math":
        return None if "math" in chosen else "userEnabledMathSDP"
    for name, passed in _CHECKS[backend](call, tuple(capability), chosen, build):
        if not passed:
            return name
    return None


def cudnn_first(capability: tuple[int, int], build: CudaBuild = DEFAULT_BUILD) -> bool:
    """check_prefer_cudnn_attention: cuDNN goes first on sm9x/sm10x with a runtime cuDNN newer than 9.15.0
    (9.15.1 fixed sequence lengths not divisible by 128); builds before CUDA 13 also need minor 0 or 3."""
    if not build.cudnn_prioritized or build.cudnn <= 91500 or capability[0] not in (9, 10):
        return False
    return build.cuda >= (13, 0) or capability[1] in (0, 3)


def priority_order(capability: tuple[int, int], build: CudaBuild = DEFAULT_BUILD) -> tuple[str, ...]:
    """priority_order: Context.h's default (flash, efficient, math, cudnn), or cudnn, flash, efficient, math
    where ``cudnn_first``. Under the default order cuDNN is tried only when math is disabled."""
    if cudnn_first(capability, build):
        return ("cudnn", "flash", "efficient", "math")
    return ("flash", "efficient", "math", "cudnn")


def cuda_backend(call: AttentionCall, capability: tuple[int, int], enabled: tuple[str, ...] | frozenset = BACKENDS,
                 build: CudaBuild = DEFAULT_BUILD) -> str:
    """The backend ``select_sdp_backend`` returns for ``call`` on a GPU of ``capability``: "flash",
    "efficient", "cudnn" or "math". ``enabled`` plays ``torch.backends.cuda.enable_*_sdp`` / ``sdpa_kernel``.
    Raises RuntimeError where CUDA raises: nothing enabled, or no enabled backend takes the call."""
    chosen = _enabled(enabled)
    if not chosen:
        raise RuntimeError("No viable backend for scaled_dot_product_attention was found.")
    for backend in priority_order(capability, build):
        if why_not(call, capability, backend, chosen, build) is None:
            return backend
    raise RuntimeError("No available kernel. Aborting execution.")


# --- running the chosen kernel on meta ------------------------------------------------------------------

def _additive_mask(mask: torch.Tensor | None, dtype: torch.dtype, masked_out: float) -> torch.Tensor | None:
    """convert_boolean_attn_mask (-inf) and its cuDNN twin (-65504, for cuDNN's -inf issue): a bool mask
    becomes an additive one in q's dtype; a float mask passes through."""
    if mask is None or mask.dtype != torch.bool:
        return mask
    zero = torch.scalar_tensor(0.0, dtype=dtype, device=mask.device)
    return torch.where(mask.logical_not(), masked_out, zero)


def _efficient_bias(mask: torch.Tensor, query: torch.Tensor, key: torch.Tensor) -> torch.Tensor:
    """preprocess_mask: mem-eff wants strides that are multiples of 8 and a unit last stride, so a mask that
    lacks them is padded in its last dim and sliced back (pad_bias<8>), then expanded to (B, H, Lq, Lk)."""
    aligned = all(s % 8 == 0 for s in mask.stride()[:-1]) and mask.stride(-1) == 1
    if not aligned:
        last = mask.size(-1)
        mask = functional.pad(mask, (0, 8 - last % 8))[..., :last]
    return mask.expand(query.size(0), query.size(1), query.size(2), key.size(2))


def run_kernel(backend: str, query: torch.Tensor, key: torch.Tensor, value: torch.Tensor,
               attn_mask: torch.Tensor | None = None, dropout_p: float = 0.0, is_causal: bool = False,
               scale: float | None = None) -> tuple[torch.Tensor, tuple]:
    """What attention.cpp's ``scaled_dot_product_attention`` does on CUDA for a fused ``backend``: the
    attention output it returns, and the aten op's whole output tuple (logsumexp, seeds, ...)."""
    # should_compute_logsumexp: the logsumexp the backward needs, only when a backward can happen
    logsumexp = torch.is_grad_enabled() and any(t.requires_grad for t in (query, key, value))
    if backend == "flash":
        # FlashAttention-2 wants head dims that are multiples of 8: pad_last_dim<8, false> pads q, k, v
        # (copies the autograd sees), the scale comes from the unpadded head dim, and
        # post_process_flash_output slices the output back
        head_dim = query.size(-1)
        padded = [functional.pad(t, (0, -head_dim % 8)) if head_dim % 8 else t for t in (query, key, value)]
        og_scale = scale if scale is not None else 1.0 / math.sqrt(head_dim)
        outs = aten._scaled_dot_product_flash_attention(*padded, dropout_p, is_causal, False, scale=og_scale)
        out = outs[0]
        return (out[..., :head_dim] if out.size(-1) != head_dim else out), outs
    if backend == "efficient":
        bias = _additive_mask(attn_mask, query.dtype, -math.inf)
        if bias is not None:
            bias = _efficient_bias(bias, query, key)
        outs = aten._scaled_dot_product_efficient_attention(query, key, value, bias, logsumexp, dropout_p, is_causal,
                                                            scale=scale)
        return outs[0], outs
    if backend == "cudnn":
        bias = _additive_mask(attn_mask, query.dtype, -65504.0)
        outs = aten._scaled_dot_product_cudnn_attention(query, key, value, bias, logsumexp, dropout_p, is_causal,
                                                        False, scale=scale)
        return outs[0], outs
    raise ValueError(f"no fused kernel named {backend!r}")


def _sdpa_arguments(query: Any, key: Any, value: Any, attn_mask: Any = None, dropout_p: float = 0.0,
                    is_causal: bool = False, scale: float | None = None, enable_gqa: bool = False) -> tuple:
    """``F.scaled_dot_product_attention``'s arguments, bound by its own signature."""
    return query, key, value, attn_mask, dropout_p, is_causal, scale, enable_gqa


def _shapes_only(t: torch.Tensor) -> bool:
    """A tensor with no data, that takes any kernel: on meta, or fake (a sharded step's, ``burden.sharded``)."""
    return t.device.type == "meta" or isinstance(t, FakeTensor)


def cuda_attention(args: tuple, kwargs: dict, *, capability: tuple[int, int],
                   enabled: tuple[str, ...] | frozenset = BACKENDS,
                   build: CudaBuild = DEFAULT_BUILD) -> torch.Tensor | None:
    """``F.scaled_dot_product_attention(*args, **kwargs)`` on meta tensors as a GPU of ``capability``
    runs it: the fused kernel's output where CUDA picks one, else None, and the caller keeps the
    default (math) path.

    None as well for calls this module leaves to the default path: tensors with data, nested tensors, and inputs
    that ``validate_sdpa_input`` rejects, so that the real error is raised there. No fused backend gets
    a GQA call it can't take natively in 2.13 (mem-eff has no GQA), so k and v are never repeated here.
    """
    query, key, value, attn_mask, dropout_p, is_causal, scale, enable_gqa = _sdpa_arguments(*args, **kwargs)
    qkv = (query, key, value)
    if not all(isinstance(t, torch.Tensor) for t in qkv) or any(t.is_nested or not _shapes_only(t) for t in qkv):
        return None
    if not (query.dtype == key.dtype == value.dtype) or min(t.dim() for t in qkv) < 2:
        return None  # validate_sdpa_input
    if attn_mask is not None and (not isinstance(attn_mask, torch.Tensor) or attn_mask.dtype not in (torch.bool,
                                                                                                     query.dtype)):
        return None
    call = AttentionCall.of(query, key, value, attn_mask, dropout_p, is_causal, enable_gqa)
    backend = cuda_backend(call, capability, enabled, build)
    if backend == "math":
        return None
    return run_kernel(backend, query, key, value, attn_mask, dropout_p, is_causal, scale)[0]
