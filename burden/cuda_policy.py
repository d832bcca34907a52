"""What a CUDA run holds that a trace on the meta device cannot show: the cuBLAS workspaces and the autocast policy.

Pure data and small pure functions (standard library only), read from PyTorch's C++ source for torch 2.13.0
(the wheel this project pins reports ``torch.version.git_version == "cf30153c4c131c8164ee7798e5022d810682e2cb"``).
The file index holds no copy of ``CublasHandlePool.cpp`` at that commit; the 2.13 behaviour below is pinned by
(a) the 2.13 headers installed with the wheel (``ATen/cuda/CUDAContextLight.h``: a ``(handle, stream)``-keyed
``WorkspaceMapWithMutex`` of ``(DataPtr, size)``, ``getCurrentCUDABlasHandle(bool setup)``, the ``set``/``reset``
size overrides; no ``TORCH_CUBLAS_WORKSPACE_CACHE`` switch yet), (b) the 2.13 docstrings of
``torch.backends.cuda.blas_workspace_size`` ("When TORCH_CUBLASLT_UNIFIED_WORKSPACE is enabled (the default on
open-source CUDA builds), the cuBLASLt workspace is capped at the cuBLAS workspace size and physically reuses the
same allocation") and ``preferred_blas_library`` ("defaults to cuBLAS even if both cuBLAS and cuBLASLt are
available"), (c) the stored ``CublasHandlePool.cpp`` versions that match those headers, and (d) the dates of the
pull requests that changed the file against the 2.13 branch cut (8-10 June 2026, pytorch/pytorch#186934).
The autocast lists come from the 2.13 header ``ATen/autocast_mode.h`` itself and were checked against the
dispatcher of the installed wheel (every op with an ``AutocastCUDA`` kernel; ``tests/test_cuda_policy.py``).

A. cuBLAS / cuBLASLt workspaces (``aten/src/ATen/cuda/CublasHandlePool.cpp``)
----------------------------------------------------------------------------
* Size: ``parseChosenWorkspaceSize`` reads ``CUBLAS_WORKSPACE_CONFIG`` as ``:SIZE:COUNT`` pairs (SIZE in KiB),
  summing SIZE * 1024 * COUNT over every non-overlapping match of the regex ``:([0-9]+):([0-9]+)``; a value with
  no match warns "Could not parse CUBLAS_WORKSPACE_CONFIG" and falls back to the default. The default is
  ``:4096:8`` (32 MiB) when the device's compute capability major is 9, 10 or 12 (Hopper, Blackwell) and
  ``:4096:2:16:8`` (8 MiB + 128 KiB = 8,519,680 bytes) otherwise. The value is read once per process
  (a function-local ``static`` in ``getChosenWorkspaceSize``).
* Allocation: ``getNewWorkspace`` allocates through ``c10::cuda::CUDACachingAllocator::get()->allocate``, so the
  block counts in ``torch.cuda.memory_allocated``/``memory_reserved``; ``torch.cuda.empty_cache`` does not free
  it (the map still owns it), ``torch._C._cuda_clearCublasWorkspaces()`` does. A size of 0 (``:0:0``) allocates
  nothing (``NativeCachingAllocator::allocate`` skips ``malloc`` for size 0).
* When and how many: ``getCurrentCUDABlasHandle`` (every cuBLAS call: mm, bmm, addmm without the Lt path, ...)
  calls ``setWorkspaceForHandle``, which allocates on the first call for a ``(cublasHandle_t, stream)`` key and
  reuses it afterwards. Handles come from ``DeviceThreadHandlePool`` (``ATen/cuda/detail/DeviceThreadHandles.h``):
  one per host thread and device. So there is one block per (thread, stream) that ran a matmul: one for a
  forward on the default stream; a backward that autograd runs on its own device thread reserves another handle
  and, by the same key, another block (inferred from the code, not measured here).
* cuBLASLt: ``addmm`` takes the Lt path (``gemm_and_bias``, ``aten/src/ATen/native/cuda/Blas.cpp``
  ``isInputCompliesAddmmCudaLt``) when beta == 1, the bias is 1-D (or squeezes to 1-D) and contiguous, the
  result 2-D and contiguous, the dtype float32/float64/float16/bfloat16, every matrix dimension > 1 and
  ``DISABLE_ADDMM_CUDA_LT`` is not "1". ``F.linear`` with a bias reaches ``addmm`` for a 2-D input and for a
  contiguous n-D input (flattened; checked by tracing the 2.13 wheel); without a bias, or with a non-contiguous
  input, it calls ``mm``/``bmm`` (plain cuBLAS). ``mm``/``bmm``/``matmul`` use cuBLASLt only when
  ``torch.backends.cuda.preferred_blas_library("cublaslt")`` or ``TORCH_BLAS_PREFER_CUBLASLT=1``.
  ``getCUDABlasLtWorkspace`` is "unified" unless ``TORCH_CUBLASLT_UNIFIED_WORKSPACE`` is exactly "0"
  (``c10::utils::check_env``: "1" -> true, "0" -> false, anything else -> unset, with a warning): it then returns
  the cuBLAS block of the same ``(handle, stream)`` key, allocating that cuBLAS-sized block if the first matmul is
  an Lt one. With "0" it allocates a separate block per key of ``CUBLASLT_WORKSPACE_SIZE`` KiB (``std::stoi``:
  leading digits, default 1024 KiB when not a number or out of ``int`` range).

Release differences (pull requests on pytorch/pytorch; release branch cuts from pytorch/pytorch#171832):
* 2.2-2.3 (CUDA >= 12.2 builds): no explicit workspace (#113994); 2.4 restored it (#124250). 2.7 through 2.13 all
  allocate the cuBLAS workspace from the caching allocator per (handle, stream).
* Through 2.10, and most likely 2.11, the 32 MiB default was ``major == 9 && minor == 0`` only (2.7 included;
  stored ``CublasHandlePool.cpp`` at 26a39059ec58); #175344 (merge requested 19 Feb 2026, the week of the 2.11
  cut) added majors 10 and 12, so 2.12 and 2.13 use 32 MiB on Blackwell (sm100/sm103/sm120) too; the revert
  #182669 was closed unmerged. #189312 (July 2026, after the 2.13 cut) adds major 11 (Thor).
* cuBLASLt, 2.7 (before #156495, merged 27 June 2025): ``gemm_and_bias`` allocated a transient 1 MiB workspace
  from the caching allocator on every call and freed it after the call (``CUDABlas.cpp``), so no block was kept.
  From #156495 on it is one persistent block per (handle, stream). #168175 (January 2026, in 2.11) made
  "unified" the default for the *size* only: in 2.11 the Lt block was still separate (1 MiB, capped at the
  cuBLAS size) unless the variable was set to "1"; #175879 (merged 2 March 2026, so 2.12) made the block itself
  shared. A 2.11 forward whose first Lt matmul ran should therefore hold 32 MiB + 1 MiB on an H100, 2.13 32 MiB.
* The Lt *size* handed to cuBLASLt (not the allocation, in unified mode) was the cuBLAS size on main from about
  April to 20 May 2026 and 1024 KiB again after #184476 (merged 20 May 2026, before the 2.13 cut).
* After 2.13: 2.15's docs list ``TORCH_CUBLAS_WORKSPACE_CACHE`` (workspaces per operation unless it is "1").

C. The CUDA context is not allocator memory
-------------------------------------------
The CUDA context (driver state, loaded kernel modules, cuBLAS/cuDNN library state) is created by the driver, not
the caching allocator, so it is absent from ``memory_allocated`` and ``max_memory_reserved`` and present in
``nvidia-smi`` and ``torch.cuda.mem_get_info``. PyTorch publishes no fixed figure; the measurements on record are
in ``CUDA_CONTEXT_OBSERVATIONS`` with their sources. They depend on the CUDA version (lazy module loading, on by
default in PyTorch since 1.13 by pytorch/pytorch#86509 and in CUDA on Linux since 12.2 by NVIDIA's CUDA
programming guide, "Lazy Loading"), the GPU (it grows with the SM count) and which
libraries the process loads, so a device profile should take a measured value when it has one.
"""

from __future__ import annotations

import re
from typing import Mapping

KIB = 1024
MIB = 1024 * KIB
_SIZE_T = 1 << 64
_INT_MAX = (1 << 31) - 1
_INT_MIN = -(1 << 31)

TORCH_VERSION = "2.13.0"
TORCH_COMMIT = "cf30153c4c131c8164ee7798e5022d810682e2cb"

# parseChosenWorkspaceSize: majors given ":4096:8" (Hopper and Blackwell in 2.12/2.13; 2.11 and older: (9, 0) only)
LARGE_WORKSPACE_MAJORS = frozenset({9, 10, 12})
LARGE_DEFAULT_BYTES = 4096 * KIB * 8  # ":4096:8" = 32 MiB
SMALL_DEFAULT_BYTES = 4096 * KIB * 2 + 16 * KIB * 8  # ":4096:2:16:8" = 8,519,680 bytes
CUBLASLT_DEFAULT_KIB = 1024  # parseCUDABlasLtWorkspaceSize, "default size in KiB according to #73328"
_PAIR = re.compile(r":([0-9]+):([0-9]+)")


def default_cublas_workspace_bytes(capability: tuple[int, int]) -> int:
    """The cuBLAS workspace without ``CUBLAS_WORKSPACE_CONFIG``: 32 MiB for majors 9, 10 and 12, else
    ``:4096:2:16:8``. Source: ``CublasHandlePool.cpp`` ``parseChosenWorkspaceSize`` (2.13)."""
    return LARGE_DEFAULT_BYTES if capability[0] in LARGE_WORKSPACE_MAJORS else SMALL_DEFAULT_BYTES


def parse_cublas_workspace_config(value: str) -> int | None:
    """The bytes ``CUBLAS_WORKSPACE_CONFIG`` asks for, or None where torch warns and keeps the default.

    Every non-overlapping ``:SIZE:COUNT`` match anywhere in the string counts (``std::sregex_iterator``), so
    ``":4096:8:16:8"`` is 4096 KiB * 8 + 16 KiB * 8 and text around the pairs is ignored; the sum is a ``size_t``
    and wraps like one. A number beyond ``unsigned long long`` makes ``std::stoull`` throw, which torch does not
    catch: ValueError here."""
    matches = list(_PAIR.finditer(value))
    if not matches:
        return None
    total = 0
    for match in matches:
        size, count = int(match.group(1)), int(match.group(2))
        if size >= _SIZE_T or count >= _SIZE_T:
            raise ValueError(f"CUBLAS_WORKSPACE_CONFIG number out of range in {value!r} (std::stoull throws)")
        total = (total + size * KIB * count) % _SIZE_T
    return total


def cublas_workspace_bytes(capability: tuple[int, int], env: Mapping[str, str] = {}) -> int:
    """Bytes of one cuBLAS workspace block on a device of ``capability`` (major, minor).

    ``CUBLAS_WORKSPACE_CONFIG`` wins when it holds at least one ``:SIZE:COUNT`` pair; a set but unparsable value
    (the empty string included: ``c10::utils::get_env`` returns it as set) falls back to the default. Source:
    ``CublasHandlePool.cpp`` ``parseChosenWorkspaceSize``/``getChosenWorkspaceSize`` (2.13). A size set at run time
    with ``torch.backends.cuda.cublas_workspace_size(n)`` overrides both (``setChosenWorkspaceSize``)."""
    value = env.get("CUBLAS_WORKSPACE_CONFIG")
    if value is not None:
        parsed = parse_cublas_workspace_config(value)
        if parsed is not None:
            return parsed
    return default_cublas_workspace_bytes(capability)


def check_env_flag(value: str | None) -> bool | None:
    """``c10::utils::check_env``: "1" is True, "0" is False, anything else (or unset) is None (torch warns)."""
    return {"1": True, "0": False}.get(value) if value is not None else None


def cublaslt_workspace_is_unified(env: Mapping[str, str] = {}) -> bool:
    """Whether cuBLASLt shares cuBLAS's block: unless ``TORCH_CUBLASLT_UNIFIED_WORKSPACE`` is exactly "0".

    Source: ``CublasHandlePool.cpp`` ``unified_cublas_and_lt_workspaces`` (open-source builds; FBCODE builds
    default to separate). In 2.11 this default held for the size but the block itself was shared only with "1"
    (#175879 fixed that for 2.12)."""
    return check_env_flag(env.get("TORCH_CUBLASLT_UNIFIED_WORKSPACE")) is not False


def _stoi_kib(value: str) -> int | None:
    """``std::stoi`` on ``value``: leading white space, an optional sign and digits; None where it throws."""
    match = re.match(r"\s*([+-]?[0-9]+)", value)
    if match is None:
        return None
    number = int(match.group(1))
    return number if _INT_MIN <= number <= _INT_MAX else None


def cublaslt_workspace_bytes(capability: tuple[int, int], env: Mapping[str, str] = {}) -> int:
    """The workspace cuBLASLt is told it may use (``getCUDABlasLtWorkspaceSize``), in bytes.

    ``CUBLASLT_WORKSPACE_SIZE`` in KiB (``std::stoi``: "2048abc" reads 2048; no digits or beyond ``int`` keeps the
    1024 KiB default with a warning; a negative number wraps as ``size_t``), then, when unified, capped at the
    cuBLAS size. Whether this is a block of its own: ``cublaslt_workspace_is_unified`` (unified: no, cuBLASLt
    writes into the cuBLAS block, which is allocated at cuBLAS size). Source: ``CublasHandlePool.cpp``
    ``parseCUDABlasLtWorkspaceSize`` and ``getCUDABlasLtWorkspaceSize`` (2.13, after #184476)."""
    kib = CUBLASLT_DEFAULT_KIB
    value = env.get("CUBLASLT_WORKSPACE_SIZE")
    if value is not None:
        parsed = _stoi_kib(value)
        if parsed is not None:
            kib = parsed
    size = (kib % _SIZE_T) * KIB % _SIZE_T
    if cublaslt_workspace_is_unified(env):
        size = min(size, cublas_workspace_bytes(capability, env))
    return size


def matmul_workspaces(capability: tuple[int, int], env: Mapping[str, str] = {}, *, cublas: bool = True,
                      cublaslt: bool = True, handles: int = 1) -> tuple[tuple[str, int], ...]:
    """The blocks the caching allocator keeps once matrix products have run, named, in bytes (torch 2.13).

    ``cublas``: a plain cuBLAS call ran (mm, bmm, matmul, addmm off the Lt path; float32 and bfloat16 alike).
    ``cublaslt``: an Lt call ran (``addmm`` with a 1-D bias, i.e. ``F.linear`` with a bias on a contiguous input).
    ``handles``: the (host thread, stream) pairs that ran them; 1 for a forward on the default stream, 2 once a
    backward has run matmuls on autograd's device thread. Unified (the default), one ``cublas_workspace`` block per
    pair serves both libraries; with ``TORCH_CUBLASLT_UNIFIED_WORKSPACE=0`` an Lt call adds a
    ``cublaslt_workspace`` block of its own per pair, and a Lt-only run holds no cuBLAS block (the Lt handle is
    fetched with ``setup=false``). Zero-byte workspaces allocate nothing and are left out."""
    blocks: list[tuple[str, int]] = []
    cublas_size = cublas_workspace_bytes(capability, env)
    if cublaslt_workspace_is_unified(env):
        if cublas or cublaslt:
            blocks.append(("cublas_workspace", cublas_size))
    else:
        if cublas:
            blocks.append(("cublas_workspace", cublas_size))
        if cublaslt:
            blocks.append(("cublaslt_workspace", cublaslt_workspace_bytes(capability, env)))
    return tuple((name, size) for name, size in blocks if size > 0) * max(handles, 0)


# -- B. CUDA autocast (aten/src/ATen/autocast_mode.h, 2.13: the AT_FORALL_* lists registered for AutocastCUDA) --

CUDA_AUTOCAST_DEFAULT_DTYPE = "float16"  # autocast_mode.cpp autocast_dtype[] (CUDA: at::kHalf); CPU: bfloat16
LOW, FLOAT32, PROMOTE, FLOAT32_OPT_DTYPE = "low", "float32", "promote", "float32_opt_dtype"
OWNERS = ("torch", "torch.nn.functional", "torch.Tensor", "torch.linalg")

# category -> aten op names ("name.overload" where the source names one), as the 2.13 macros and
# autocast_mode.cpp's TORCH_LIBRARY_IMPL(aten, Autocast, m) register them for CUDA
CUDA_AUTOCAST_OPS: dict[str, tuple[str, ...]] = {
    "lower_precision_fp": (  # AT_FORALL_LOWER_PRECISION_FP, plus cudnn_convolution(_transpose) in the .cpp
        "_convolution.deprecated", "_convolution", "conv1d", "conv2d", "conv3d", "conv_tbc", "conv_transpose1d",
        "conv_transpose2d.input", "conv_transpose3d.input", "convolution", "prelu", "addmm", "addmv", "addr",
        "matmul", "einsum", "mm", "mv", "linalg_vecdot", "linear", "addbmm", "baddbmm", "bmm", "chain_matmul",
        "linalg_multi_dot", "_thnn_fused_lstm_cell", "_thnn_fused_gru_cell", "lstm_cell", "gru_cell",
        "rnn_tanh_cell", "rnn_relu_cell", "_scaled_dot_product_flash_attention", "scaled_dot_product_attention",
        "cudnn_convolution", "cudnn_convolution_transpose"),
    "fp32": (  # AT_FORALL_FP32
        "acos", "asin", "cosh", "erfinv", "exp", "expm1", "log", "log10", "log2", "log1p", "reciprocal", "rsqrt",
        "sinh", "tan", "pow.Tensor_Scalar", "pow.Tensor_Tensor", "pow.Scalar", "softplus", "layer_norm",
        "native_layer_norm", "rms_norm", "group_norm", "frobenius_norm.dim", "nuclear_norm", "nuclear_norm.dim",
        "cosine_similarity", "poisson_nll_loss", "cosine_embedding_loss", "nll_loss", "nll_loss2d",
        "hinge_embedding_loss", "kl_div", "l1_loss", "smooth_l1_loss", "huber_loss", "mse_loss",
        "margin_ranking_loss", "multilabel_margin_loss", "soft_margin_loss", "triplet_margin_loss",
        "multi_margin_loss", "binary_cross_entropy_with_logits", "dist", "pdist", "cdist", "renorm", "logsumexp",
        "upsample_nearest1d", "_upsample_nearest_exact1d", "upsample_nearest2d", "_upsample_nearest_exact2d",
        "upsample_nearest3d", "_upsample_nearest_exact3d", "upsample_linear1d", "upsample_bilinear2d",
        "_upsample_bilinear2d_aa", "upsample_trilinear3d", "upsample_bicubic2d", "_upsample_bicubic2d_aa"),
    "fp32_set_opt_dtype": (  # AT_FORALL_FP32_SET_OPT_DTYPE (the Dimname overloads of older releases are gone)
        "prod", "prod.dim_int", "softmax.int", "log_softmax.int", "cumprod", "cumsum", "linalg_vector_norm",
        "linalg_matrix_norm", "linalg_matrix_norm.str_ord", "sum", "sum.dim_IntList"),
    "fp32_append_dtype": ("norm.Scalar", "norm.ScalarOpt_dim"),  # AT_FORALL_DIFFERENT_REDISPATCH_SIGNATURE
    "promote": (  # AT_FORALL_PROMOTE
        "addcdiv", "addcmul", "atan2", "bilinear", "cross", "dot", "vdot", "grid_sampler", "index_put",
        "tensordot", "scatter_add"),
    "banned": ("binary_cross_entropy",),  # binary_cross_entropy_banned: raises under CUDA autocast
}

# aten/src/ATen/cudnn/AutocastRNN.cpp (cuDNN builds only, so absent from a CPU wheel's dispatcher): _cudnn_rnn,
# which nn.RNN/LSTM/GRU reach through torch.rnn_tanh/rnn_relu/lstm/gru, casts input, hx, cx and a flat copy of the
# weights to float16 whatever the autocast dtype (read in a stored copy of that file, not at the 2.13 commit).
CUDA_AUTOCAST_CUDNN_RNN: tuple[tuple[str, str], ...] = (
    ("torch", "rnn_tanh"), ("torch", "rnn_relu"), ("torch", "lstm"), ("torch", "gru"))

CUDA_AUTOCAST_BANNED: tuple[tuple[str, str], ...] = (("torch.nn.functional", "binary_cross_entropy"),)


def _entries(owner: str, policy: str, names: str) -> tuple[tuple[str, str, str], ...]:
    return tuple((owner, name, policy) for name in names.split())


# (owner, attribute, policy): the Python names through which a model reaches the ops above. Every entry was
# checked in the 2.13 wheel to exist and to behave so under CUDA autocast (fake CUDA tensors; see the tests).
CUDA_AUTOCAST: tuple[tuple[str, str, str], ...] = (
    *_entries("torch", LOW, "conv1d conv2d conv3d conv_tbc conv_transpose1d conv_transpose2d conv_transpose3d "
                            "convolution prelu addmm addmv addr matmul einsum mm mv addbmm baddbmm bmm "
                            "chain_matmul lstm_cell gru_cell rnn_tanh_cell rnn_relu_cell"),
    *_entries("torch.nn.functional", LOW, "linear conv1d conv2d conv3d conv_tbc conv_transpose1d "
                                          "conv_transpose2d conv_transpose3d prelu scaled_dot_product_attention"),
    *_entries("torch.Tensor", LOW, "matmul __matmul__ __rmatmul__ mm mv bmm addmm addmv addr addbmm baddbmm"),
    *_entries("torch.linalg", LOW, "vecdot multi_dot"),
    *_entries("torch", FLOAT32, "acos arccos asin arcsin cosh erfinv exp expm1 log log10 log2 log1p reciprocal "
                                "rsqrt sinh tan pow layer_norm native_layer_norm rms_norm group_norm "
                                "frobenius_norm nuclear_norm cosine_similarity poisson_nll_loss "
                                "cosine_embedding_loss hinge_embedding_loss kl_div margin_ranking_loss "
                                "triplet_margin_loss binary_cross_entropy_with_logits dist pdist cdist renorm "
                                "logsumexp"),
    *_entries("torch.nn.functional", FLOAT32, "softplus layer_norm rms_norm group_norm cosine_similarity pdist "
                                              "poisson_nll_loss cosine_embedding_loss nll_loss "
                                              "hinge_embedding_loss kl_div l1_loss smooth_l1_loss huber_loss "
                                              "mse_loss margin_ranking_loss multilabel_margin_loss "
                                              "soft_margin_loss triplet_margin_loss multi_margin_loss "
                                              "binary_cross_entropy_with_logits cross_entropy interpolate "
                                              "upsample upsample_nearest upsample_bilinear"),
    *_entries("torch.Tensor", FLOAT32, "acos arccos asin arcsin cosh erfinv exp expm1 log log10 log2 log1p "
                                       "reciprocal rsqrt sinh tan pow __pow__ __rpow__ dist renorm logsumexp"),
    *_entries("torch", FLOAT32_OPT_DTYPE, "prod softmax log_softmax cumprod cumsum sum norm"),
    *_entries("torch.nn.functional", FLOAT32_OPT_DTYPE, "softmax log_softmax softmin"),
    *_entries("torch.Tensor", FLOAT32_OPT_DTYPE, "prod softmax log_softmax cumprod cumsum sum norm"),
    *_entries("torch.linalg", FLOAT32_OPT_DTYPE, "vector_norm matrix_norm norm"),
    *_entries("torch", PROMOTE, "addcdiv addcmul atan2 arctan2 bilinear cross dot vdot grid_sampler index_put "
                                "tensordot scatter_add"),
    *_entries("torch.nn.functional", PROMOTE, "bilinear grid_sample"),
    *_entries("torch.Tensor", PROMOTE, "addcdiv addcmul atan2 arctan2 cross dot vdot index_put scatter_add"),
)
CUDA_AUTOCAST_NOTES = """How the Python names map onto the CUDA lists, and where the CPU policy differs.

* ``float32_opt_dtype`` (``fp32_set_opt_dtype``): autocast does not cast the input; when the first argument is an
  eligible CUDA floating tensor (not float64) and the caller left ``dtype`` unset, it calls the op with
  ``dtype=torch.float32``, so the result (and for sum/prod/cumsum the accumulation) is float32; a ``dtype=`` the
  caller passed is kept. Memory: ``softmax``/``log_softmax`` of a float16 CUDA input with ``dtype=float32`` run a
  fused half-to-float kernel (no float32 copy of the input), while a bfloat16 input is first copied to float32
  (``aten/src/ATen/native/SoftMax.cpp``, ``softmax(input, dim, dtype)``). ``torch.norm``/``Tensor.norm`` are
  listed here: the C++ ``norm`` overloads are ``fp32_append_dtype`` (float32 appended as the output dtype), and
  the Python ``torch.norm`` mostly routes to ``linalg.vector_norm``; either way float32 unless ``dtype=`` given.
  ``torch.linalg.norm`` reaches ``linalg_vector_norm``/``linalg_matrix_norm`` the same way.
* ``F.cross_entropy`` has no kernel of its own under CUDA autocast (CPU registers ``cross_entropy_loss``); it runs
  ``log_softmax`` (float32 output) and ``nll_loss`` (float32), so it is listed as ``float32``. ``F.interpolate``
  and the ``F.upsample*`` wrappers are ``float32`` for every mode but ``"area"`` (adaptive_avg_pool, not listed).
  ``F.grid_sample`` reaches ``grid_sampler`` (promote). In-place forms (``exp_``, ``x[i] = v`` via ``index_put_``)
  are not registered and keep their dtype.
* The cast cache is the CPU one (``cached_cast``): only low-precision casts of float32 leaves that require grad
  and are not views are cached, until the autocast region exits.
* Against ``burden/autocast.py``'s CPU policy (2.13 AutocastCPU): on CUDA softmax, log_softmax, layer_norm,
  group_norm, rms_norm, exp/log/pow and the other unary ops above, cumsum/sum/prod, logsumexp, upsampling and
  softplus produce float32 from float16/bfloat16 inputs, where on CPU they run in the input's low precision;
  ``cat``/``stack``/``index_copy`` promote on CPU only; ``binary_cross_entropy`` is float32 on CPU and raises on
  CUDA; ``addmv``/``addr``/``mv``/``chain_matmul``/``linalg.multi_dot``/RNN cells and ``einsum`` have CUDA
  kernels (CPU reaches einsum's inner ``bmm`` only); ``quantile``/``stft``/``polar``/3-D pooling/``ctc_loss`` are
  float32 on CPU only; the default low precision is float16 on CUDA, bfloat16 on CPU.
"""

# Measurements of the CUDA context on record: (figure, what was measured, source). Not allocator memory.
CUDA_CONTEXT_OBSERVATIONS: tuple[tuple[str, str, str], ...] = (
    ("287,047,680 bytes lazy vs 666,632,192 bytes eager", "memory usage in the test of the PR that made PyTorch "
     "1.13 set CUDA_MODULE_LOADING=LAZY", "https://github.com/pytorch/pytorch/pull/86509"),
    ("~300 MB (over 1000 MB before CUDA 11.7)", "ptrblck on the context of a resnet process, Aug 2023",
     "https://github.com/pytorch/pytorch/issues/107667"),
    ("200+ MB to 700+ MB", "nvidia-smi minus memory_allocated after CUDA init, PyTorch 1.3, CUDA 10.1, K40c",
     "https://github.com/pytorch/pytorch/issues/28113"),
    ("555 MiB (RTX PRO 6000 Blackwell), 107 MiB (RTX 4060 Ti)", "bare primary context from cudaMemGetInfo, no "
     "PyTorch kernels loaded; grows with the SM count", "https://github.com/ggml-org/llama.cpp/pull/23604"),
)
