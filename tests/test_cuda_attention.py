"""burden.cuda_attention: the CUDA SDPA chooser of torch 2.13 and the chosen kernel's meta outputs.

Each expected backend is argued from the source in a comment naming the function that decides it
(cuda/sdp_utils.cpp unless said otherwise; sdp_utils_cpp.h for the shared checks).
"""

import math
from dataclasses import replace

import pytest
import torch
from torch.nn import functional
from torch.utils._python_dispatch import TorchDispatchMode

from burden.cuda_attention import (AttentionCall, CudaBuild, cuda_attention, cuda_backend, cudnn_first,
                                   priority_order, run_kernel, why_not)

A100, H100, L4, T4, V100, B200, RTX5090 = (8, 0), (9, 0), (8, 9), (7, 5), (7, 0), (10, 0), (12, 0)
BF16, FP16, FP32 = torch.bfloat16, torch.float16, torch.float32


def call(q=(2, 8, 128, 64), k=None, v=None, dtype=BF16, **facts):
    return AttentionCall(q, k or q, v or k or q, dtype, **facts)


def meta(*shape, dtype=BF16, grad=False):
    return torch.empty(*shape, dtype=dtype, device="meta", requires_grad=grad)


# --- priority order ---------------------------------------------------------------------------------

def test_flash_first_on_a100():
    # priority_order: check_prefer_cudnn_attention is false below sm90, so Context.h's default order
    # (flash, efficient, math, cudnn) applies and flash takes a plain bf16 call
    assert priority_order(A100) == ("flash", "efficient", "math", "cudnn")
    assert cuda_backend(call(), A100) == "flash"


@pytest.mark.parametrize("capability", [H100, B200, (10, 3)])
def test_cudnn_first_on_sm90_and_sm10x(capability):
    # check_prefer_cudnn_attention: major 9 or 10 with a runtime cuDNN > 9.15.0 puts cuDNN first (2.13 does)
    assert cudnn_first(capability)
    assert cuda_backend(call(), capability) == "cudnn"


def test_cudnn_not_first_when_deprioritized_or_too_old():
    # check_prefer_cudnn_attention: TORCH_CUDNN_SDPA_DEPRIORITIZED=1, or cuDNN <= 9.15.0 (the seq_len % 128
    # fix came in 9.15.1), leave the default order, so flash wins on an H100
    assert cuda_backend(call(), H100, build=CudaBuild(cudnn_prioritized=False)) == "flash"
    assert cuda_backend(call(), H100, build=CudaBuild(cudnn=91500)) == "flash"
    assert cuda_backend(call(), H100, build=CudaBuild(cudnn=91501)) == "cudnn"


def test_cuda12_builds_prefer_cudnn_only_on_minor_0_or_3():
    # check_prefer_cudnn_attention: the CUDA_VERSION < 13000 arm adds (!minor || minor == 3)
    assert cudnn_first((10, 1), CudaBuild(cuda=(13, 0)))
    assert not cudnn_first((10, 1), CudaBuild(cuda=(12, 8)))
    assert cudnn_first((10, 3), CudaBuild(cuda=(12, 8)))
    assert not cudnn_first(RTX5090)  # sm120 is neither 9 nor 10


def test_cudnn_comes_after_math_in_the_default_order():
    # select_sdp_backend walks the default order: with math enabled it returns math before trying cuDNN
    assert cuda_backend(call(), A100, enabled=("cudnn", "math")) == "math"
    assert cuda_backend(call(), A100, enabled=("cudnn",)) == "cudnn"


def test_no_backend_raises():
    # select_sdp_backend: all four disabled -> SDPBackend::error; none taking the call -> "No available kernel"
    with pytest.raises(RuntimeError, match="No viable backend"):
        cuda_backend(call(), A100, enabled=())
    with pytest.raises(RuntimeError, match="No available kernel"):
        cuda_backend(call(dtype=FP32), A100, enabled=("flash", "cudnn"))
    with pytest.raises(ValueError):
        cuda_backend(call(), A100, enabled=("mem_efficient",))


# --- flash ------------------------------------------------------------------------------------------

def test_flash_head_dim_limit_and_equal_dims():
    # check_head_dim_size_flash: q, k, v head dims equal and <= 256; mem-eff has no upper limit on CUDA
    assert cuda_backend(call((2, 8, 128, 256)), A100) == "flash"
    assert why_not(call((2, 8, 128, 264)), A100, "flash") == "check_head_dim_size_flash"
    assert cuda_backend(call((2, 8, 128, 264)), A100) == "efficient"
    assert cuda_backend(call((2, 8, 128, 64), v=(2, 8, 128, 32)), A100) == "efficient"


def test_flash_needs_sm80_and_fp16_or_bf16():
    # check_flash_attention_hardware_support: [sm80, sm121]; below it mem-eff runs fp16 and fp32 but not bf16
    # (can_use_mem_efficient_attention's less_than_sm80 dtypes), so bf16 on a T4 or V100 falls to math
    assert why_not(call(dtype=FP16), T4, "flash") == "check_flash_attention_hardware_support"
    assert cuda_backend(call(dtype=FP16), T4) == "efficient"
    assert cuda_backend(call(dtype=BF16), T4) == "math"
    assert cuda_backend(call(dtype=FP32), V100) == "efficient"
    # check_dtypes_flash_attention: fp32 never goes to flash (FA3 off)
    assert why_not(call(dtype=FP32), A100, "flash") == "check_dtypes_flash_attention"
    assert cuda_backend(call(dtype=FP32), RTX5090) == "efficient"
    # check_mem_efficient_hardware_support: [sm50, sm121]; nothing fused below sm50 or above sm121
    assert cuda_backend(call(dtype=FP32), (3, 7)) == "math"
    assert cuda_backend(call(), (13, 0)) == "math"


def test_flash_rejects_masks():
    # check_for_attn_mask: flash takes no mask, so a masked bf16 call goes to mem-eff on an A100
    assert why_not(call(mask=torch.bool), A100, "flash") == "check_for_attn_mask"
    assert cuda_backend(call(mask=torch.bool), A100) == "efficient"


@pytest.mark.parametrize("head_dim, dropout, grad, capability, expected", [
    (200, 0.0, True, L4, "efficient"),  # (192, 224] in training on sm86-89: flash's backward would fail
    (200, 0.0, False, L4, "flash"),  # inference: no backward, no limit
    (200, 0.0, True, A100, "flash"),  # sm80 is not in the range
    (200, 0.0, True, RTX5090, "efficient"),  # sm120-121 share the limit
    (256, 0.1, True, L4, "efficient"),  # above 224 only with dropout
    (256, 0.0, True, L4, "flash"),
    (192, 0.1, True, L4, "flash"),
])
def test_flash_training_head_dims_on_sm86_89_and_sm120(head_dim, dropout, grad, capability, expected):
    # check_requires_grad_and_head_dim_gt192_constraints_on_sm86_89_or_120
    c = call((2, 8, 128, head_dim), dropout_p=dropout, requires_grad=grad)
    assert cuda_backend(c, capability) == expected


def test_flash_causal_needs_square_lengths():
    # check_flash_causal_non_square_seqlens: FA2 aligns causal masks bottom-right, so Lq != Lk with
    # is_causal is refused; mem-eff (top-left causal) takes it
    c = call((2, 8, 1, 64), k=(2, 8, 128, 64), is_causal=True)
    assert why_not(c, A100, "flash") == "check_flash_causal_non_square_seqlens"
    assert cuda_backend(c, A100) == "efficient"
    assert cuda_backend(replace(c, is_causal=False), A100) == "flash"


# --- heads, GQA, shapes, strides --------------------------------------------------------------------

def test_gqa_flash_and_cudnn_only():
    # check_batch_size_and_num_heads_dense: flash <supports_gqa=true>, cuDNN <true, requires_same=false>,
    # mem-eff <false> in 2.13 (its GQA came after the branch cut)
    gqa = call((2, 8, 128, 64), k=(2, 2, 128, 64), enable_gqa=True)
    assert cuda_backend(gqa, A100) == "flash"
    assert cuda_backend(replace(gqa, mask=torch.bool), A100) == "math"  # no flash (mask), no mem-eff (GQA)
    assert cuda_backend(replace(gqa, mask=torch.bool), H100) == "cudnn"
    # without enable_gqa, differing heads suit no fused kernel
    assert cuda_backend(replace(gqa, enable_gqa=False), H100) == "math"
    # check_grouped_query_attention: heads must divide
    assert cuda_backend(call((2, 8, 128, 64), k=(2, 3, 128, 64), enable_gqa=True), A100) == "math"


def test_gqa_with_different_key_and_value_heads():
    # check_grouped_query_attention<requires_same_num_heads>: flash needs Hk == Hv, cuDNN only Hq % Hk == Hq % Hv == 0
    c = call((2, 8, 128, 64), k=(2, 2, 128, 64), v=(2, 4, 128, 64), enable_gqa=True)
    assert why_not(c, A100, "flash") == "check_batch_size_and_num_heads_dense"
    assert cuda_backend(c, A100) == "math"
    assert cuda_backend(c, H100) == "cudnn"


def test_shapes_lengths_and_batches():
    # check_tensor_shapes: fused kernels take 4-D only
    assert cuda_backend(call((8, 128, 64)), A100) == "math"
    # check_nonzero_sequence_lengths_dense
    assert cuda_backend(call((2, 8, 0, 64), k=(2, 8, 128, 64)), A100) == "math"
    # check_batch_size_and_num_heads_dense: batches must be equal (no broadcasting for dense inputs)
    assert cuda_backend(call((2, 8, 128, 64), k=(1, 8, 128, 64)), A100) == "math"


def test_last_dim_stride():
    # check_last_dim_stride_equals_1_dense: every fused kernel wants stride(-1) == 1; flash and cuDNN ignore
    # it at head dim 1 (which is padded), mem-eff does not
    assert cuda_backend(call(last_strides=(2, 1, 1)), A100) == "math"
    assert cuda_backend(call((2, 8, 128, 1), last_strides=(2, 1, 1)), A100) == "flash"
    # ... and on GPUs the mask's last stride too
    strided_mask = call(mask=torch.bool, mask_last_stride=2)
    assert why_not(strided_mask, A100, "efficient") == "check_last_dim_stride_equals_1_dense"


# --- mem-efficient ----------------------------------------------------------------------------------

def test_efficient_head_dim_alignment():
    # check_head_dim_size_mem_efficient with minimum_gemm_alignment: sm80+ wants 8 elements for 16-bit types
    # and 4 for fp32; sm70-75 runs fp32 without tensor cores, alignment 1
    masked = dict(mask=torch.bool)  # keeps flash out
    assert cuda_backend(call((2, 8, 128, 68), dtype=FP16, **masked), A100) == "math"
    assert cuda_backend(call((2, 8, 128, 72), dtype=FP16, **masked), A100) == "efficient"
    assert cuda_backend(call((2, 8, 128, 66), dtype=FP32), A100) == "math"
    assert cuda_backend(call((2, 8, 128, 68), dtype=FP32), A100) == "efficient"
    assert cuda_backend(call((2, 8, 128, 66), dtype=FP32), V100) == "efficient"
    assert cuda_backend(call((2, 8, 128, 66), dtype=FP16), V100) == "math"


def test_efficient_storage_offset_alignment_from_sm80():
    # check_data_ptr_alignment_mem_efficient: from sm80, storage_offset * itemsize must be a multiple of
    # 16 bytes (the gemm alignment); older GPUs are not checked
    c = call(dtype=FP16, mask=torch.bool, storage_offsets=(4, 0, 0))
    assert why_not(c, A100, "efficient") == "check_data_ptr_alignment_mem_efficient"
    assert cuda_backend(c, A100) == "math"
    assert cuda_backend(c, V100) == "efficient"
    assert cuda_backend(replace(c, storage_offsets=(8, 0, 0)), A100) == "efficient"


# --- cuDNN ------------------------------------------------------------------------------------------

def test_cudnn_mask_rules():
    # check_attn_mask_shape: a 2-D or 4-D mask broadcastable by 1s and not requiring grad
    ok = call(mask=torch.bool, mask_shape=(2, 1, 128, 128))
    assert cuda_backend(ok, H100) == "cudnn"
    assert cuda_backend(replace(ok, mask_shape=(2, 128, 128)), H100) == "efficient"  # 3-D
    assert cuda_backend(replace(ok, mask_shape=(2, 1, 64, 128)), H100) == "efficient"  # Lq 64 != 128
    assert cuda_backend(replace(ok, mask=BF16, mask_requires_grad=True), H100) == "efficient"


@pytest.mark.parametrize("capability, q, v, expected", [
    (H100, (2, 8, 128, 256), None, "cudnn"),  # sm90 with cuDNN >= 9.10: head dims up to 256
    (B200, (2, 8, 128, 256), None, "flash"),  # sm10x: 128, so flash takes it
    (B200, (2, 8, 128, 192), (2, 8, 128, 128), "cudnn"),  # the DeepSeek 192/128 case on sm10x from 9.11
    (H100, (2, 8, 128, 60), None, "flash"),  # head dims must be multiples of 8 (flash pads them)
    (H100, (2, 8, 128, 512), None, "efficient"),  # above every fused limit but mem-eff's
])
def test_cudnn_head_dims(capability, q, v, expected):
    # check_cudnn_tensor_shapes
    assert cuda_backend(call(q, v=v), capability) == expected


def test_cudnn_other_tensor_shape_limits():
    # check_cudnn_tensor_shapes: Lk == 1 refused; Lq == 1 refused only with dropout; B, H <= 65535
    assert cuda_backend(call((2, 8, 16, 64), k=(2, 8, 1, 64)), H100) == "flash"
    assert cuda_backend(call((2, 8, 1, 64), k=(2, 8, 128, 64)), H100) == "cudnn"
    assert cuda_backend(call((2, 8, 1, 64), k=(2, 8, 128, 64), dropout_p=0.125), H100) == "flash"
    assert cuda_backend(call((70000, 1, 16, 64)), H100) == "flash"


def test_cudnn_dropout_and_flags():
    # check_cudnn_dropout: probabilities in steps of 1/16
    assert cuda_backend(call(dropout_p=0.125), H100) == "cudnn"
    assert cuda_backend(call(dropout_p=0.1), H100) == "flash"
    # can_use_cudnn_attention: cuDNN 9.11-9.13 has no SDPA dropout
    assert why_not(call(dropout_p=0.125), H100, "cudnn", build=CudaBuild(cudnn=91200)) == "cudnn 9.11-9.13 dropout"
    # check_cudnn_deterministic: deterministic algorithms (without warn_only) rule cuDNN out
    assert cuda_backend(call(), H100, build=CudaBuild(deterministic=True)) == "flash"
    # check_dtypes_low_precision: fp16/bf16 only, so fp32 goes to mem-eff even on an H100
    assert cuda_backend(call(dtype=FP32), H100) == "efficient"
    # check_cudnn_hardware_support: [sm80, sm121]
    assert why_not(call(dtype=FP16), T4, "cudnn") == "check_cudnn_hardware_support"


def test_attention_call_of_tensors():
    q = meta(2, 8, 128, 64, grad=True)
    kv = meta(2, 8, 256, 64)
    c = AttentionCall.of(q[:, :, 1:], kv, kv, attn_mask=meta(128, 256, dtype=torch.bool), enable_gqa=True)
    assert c.requires_grad and c.storage_offsets == (64, 0, 0) and c.mask_shape == (128, 256)
    with torch.no_grad():  # input_requires_grad needs grad mode on
        assert not AttentionCall.of(q, kv, kv).requires_grad


# --- the chosen kernel on meta ----------------------------------------------------------------------

class _Record(TorchDispatchMode):
    """The aten calls made, with their outputs."""

    def __init__(self):
        super().__init__()
        self.calls = []

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        out = func(*args, **(kwargs or {}))
        self.calls.append((func, args, kwargs or {}, out))
        return out

    def names(self):
        return [str(f.overloadpacket) for f, *_ in self.calls]

    def largest_output(self):
        outs = [o for *_, out in self.calls for o in (out if isinstance(out, (tuple, list)) else (out,))]
        return max(o.numel() for o in outs if isinstance(o, torch.Tensor))


def test_flash_outputs_and_padding():
    # attention.cpp: pad_last_dim<8> pads head dim 60 to 64, the scale is 1/sqrt(60) of the unpadded dim,
    # post_process_flash_output slices the output back; logsumexp is (B, H, Lq) float32
    q, k, v = (meta(2, 8, 128, 60, grad=True) for _ in range(3))
    with _Record() as rec:
        out, outs = run_kernel("flash", q, k, v)
    (func, args, kwargs, _), = [c for c in rec.calls if "flash" in str(c[0])]
    assert tuple(args[0].shape) == (2, 8, 128, 64) and kwargs["scale"] == pytest.approx(1 / math.sqrt(60))
    assert tuple(outs[0].shape) == (2, 8, 128, 64) and tuple(out.shape) == (2, 8, 128, 60)
    assert tuple(outs[1].shape) == (2, 8, 128) and outs[1].dtype == torch.float32
    out.sum().backward()
    assert "Flash" in type(outs[0].grad_fn).__name__ and q.grad.shape == q.shape and v.grad.shape == v.shape


def test_efficient_outputs_logsumexp_and_bias():
    # _scaled_dot_product_efficient_attention: logsumexp (B, H, ceil(Lq/32)*32) float32 when
    # should_compute_logsumexp, else (B, H, 0); preprocess_mask pads an unaligned bias (Lk 77) to 80 and
    # slices it back, and expands it to (B, H, Lq, Lk)
    q = meta(2, 8, 100, 64, dtype=FP32, grad=True)
    k, v = meta(2, 8, 77, 64, dtype=FP32, grad=True), meta(2, 8, 77, 32, dtype=FP32, grad=True)
    mask = meta(100, 77, dtype=FP32, grad=True)
    with _Record() as rec:
        out, outs = run_kernel("efficient", q, k, v, mask)
    assert "aten.constant_pad_nd" in rec.names()
    (_, args, _, _), = [c for c in rec.calls if "efficient" in str(c[0])]
    bias = args[3]
    assert tuple(bias.shape) == (2, 8, 100, 77) and bias.stride()[-2] == 80
    assert tuple(out.shape) == (2, 8, 100, 32)
    assert tuple(outs[1].shape) == (2, 8, 128) and outs[1].dtype == torch.float32
    out.sum().backward()
    assert mask.grad.shape == mask.shape and k.grad.shape == k.shape
    with torch.no_grad():
        assert tuple(run_kernel("efficient", q, k, v)[1][1].shape) == (2, 8, 0)


def test_bool_masks_become_additive():
    # convert_boolean_attn_mask: -inf where False; convert_boolean_attn_mask_cudnn: -65504 (cuDNN's -inf issue)
    q = meta(2, 8, 128, 64)
    mask = meta(2, 1, 128, 128, dtype=torch.bool)
    for backend in ("efficient", "cudnn"):
        with _Record() as rec:
            run_kernel(backend, q, q, q, mask)
        (_, args, _, _), = [c for c in rec.calls if backend in str(c[0])]
        assert args[3].dtype == BF16
        fills = {c[1][0] for c in rec.calls if str(c[0].overloadpacket) == "aten.scalar_tensor"}
        assert fills == {0.0, -math.inf if backend == "efficient" else -65504.0}


def test_cudnn_outputs_with_gqa():
    # _scaled_dot_product_cudnn_attention takes GQA natively: no repeat_interleave, k/v grads keep 2 heads;
    # its meta logsumexp is (B, H, Lq, 1) float32
    q = meta(2, 8, 128, 64, grad=True)
    k, v = meta(2, 2, 256, 64, grad=True), meta(2, 2, 256, 64, grad=True)
    with _Record() as rec:
        out = cuda_attention((q, k, v), {"enable_gqa": True}, capability=H100)
    assert "aten._scaled_dot_product_cudnn_attention" in rec.names() and "aten.repeat_interleave" not in rec.names()
    assert tuple(out.shape) == (2, 8, 128, 64)
    out.sum().backward()
    assert k.grad.shape == k.shape
    outs = run_kernel("cudnn", q, k, v)[1]
    # the statistics are what this release's meta kernel says: (B, H, Lq, 1) in 2.13, (B, H, Lq) in 2.7
    assert tuple(outs[1].shape) in ((2, 8, 128, 1), (2, 8, 128)) and outs[1].dtype == torch.float32


@pytest.mark.parametrize("capability, dtype, kernel", [
    (A100, BF16, "flash"), (H100, BF16, "cudnn"), (T4, FP16, "efficient"), (A100, FP32, "efficient")])
def test_no_score_matrix_where_a_fused_kernel_runs(capability, dtype, kernel):
    # the point: the math path allocates B*H*Lq*Lk scores; the fused kernels never do
    q, k, v = (meta(2, 8, 1024, 64, dtype=dtype, grad=True) for _ in range(3))
    scores = 2 * 8 * 1024 * 1024
    with _Record() as rec:
        out = cuda_attention((q, k, v), {"is_causal": True}, capability=capability)
        out.sum().backward()
    assert f"aten._scaled_dot_product_{kernel}_attention" in rec.names()
    assert rec.largest_output() < scores
    with _Record() as rec:
        functional.scaled_dot_product_attention(q, k, v, is_causal=True).sum().backward()
    assert rec.largest_output() >= scores


def test_math_and_unhandled_calls_return_none():
    q = meta(2, 8, 128, 64)
    # math on CUDA: the caller keeps the default path
    assert cuda_attention((q, q, q), {}, capability=T4) is None  # bf16 below sm80
    # not meta, mixed dtypes (validate_sdpa_input raises on the default path), a mask of a third dtype
    cpu = torch.empty(2, 8, 16, 64)
    assert cuda_attention((cpu, cpu, cpu), {}, capability=A100) is None
    assert cuda_attention((q, meta(2, 8, 128, 64, dtype=FP16), q), {}, capability=A100) is None
    assert cuda_attention((q, q, q, meta(128, 128, dtype=FP16)), {}, capability=A100) is None


def test_output_matches_the_math_path_shape():
    q = meta(2, 8, 100, 40, dtype=FP16)
    k, v = meta(2, 8, 77, 40, dtype=FP16), meta(2, 8, 77, 24, dtype=FP16)
    mask = meta(2, 1, 100, 77, dtype=torch.bool)
    for capability in (A100, H100, T4):
        out = cuda_attention((q, k, v, mask), {}, capability=capability)
        expected = functional.scaled_dot_product_attention(q, k, v, mask)
        assert out.shape == expected.shape and out.dtype == expected.dtype
