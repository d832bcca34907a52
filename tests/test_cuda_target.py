"""The CUDA target's rules, each against a figure worked out from PyTorch's C++ source (cited), never
from burden: the cuBLAS workspace, the caching allocator's reserved memory and what fits a card, the
attention kernel CUDA picks, and CUDA's autocast policy. No GPU is needed: these are the rules a
GPU run follows. (``tests/test_cuda_allocator.py``, ``test_cuda_attention.py`` and
``test_cuda_policy.py`` check each rule's module on its own.)
"""

from __future__ import annotations

import dataclasses

import pytest
import torch
import torch.nn.functional as F
from torch import nn

import burden
from burden.devices import BUILT_IN
from burden.trace import trace_forward

MiB = 2**20
# CublasHandlePool.cpp, parseChosenWorkspaceSize: ":4096:8" (32 MiB) on compute capability 9.x,
# ":4096:2:16:8" = 2 x 4096 KiB + 8 x 16 KiB = 8,519,680 bytes elsewhere
H100_WORKSPACE = 4096 * 1024 * 8
A100_WORKSPACE = 4096 * 1024 * 2 + 16 * 1024 * 8


def linear(bias: bool = True) -> nn.Module:
    return nn.Linear(1000, 1000, bias=bias)


@pytest.mark.parametrize("profile, workspace", [("h100", H100_WORKSPACE), ("a100", A100_WORKSPACE),
                                                ("t4", A100_WORKSPACE)])
def test_one_matrix_product_holds_the_cublas_workspace(profile, workspace):
    # weight 4,000,000 -> 4,000,256 (512-byte blocks), bias, input and output 4,000 -> 4,096 each
    e = burden.estimate(linear(), (1000,), target="cuda", device_profile=profile)
    assert e.peak_bytes == 4_000_256 + 3 * 4_096 + workspace
    assert burden.estimate(linear(), (1000,)).peak_bytes == 4_004_000 + 2 * 4_000  # the CPU target: none


def test_the_workspace_follows_cublas_workspace_config(monkeypatch):
    # ":1024:2" = 2 x 1024 KiB; an unparsable value warns and keeps the default
    monkeypatch.setenv("CUBLAS_WORKSPACE_CONFIG", ":1024:2")
    e = burden.estimate(linear(), (1000,), target="cuda", device_profile="h100")
    assert e.peak_bytes == 4_000_256 + 3 * 4_096 + 2 * MiB


def test_no_matrix_product_no_workspace():
    # a convolution runs on cuDNN (whose workspace burden does not count), never on cuBLAS
    e = burden.estimate(nn.Conv2d(3, 8, 3, bias=False), (3, 32, 32), target="cuda", device_profile="h100")
    # weight 864 bytes, image 12,288, output 8 x 30 x 30 x 4 = 28,800: each in 512-byte blocks
    assert e.peak_bytes == 1_024 + 12_288 + 29_184


def test_training_holds_a_workspace_per_host_thread():
    # A forward's products run on the caller's thread, a backward's on autograd's device thread: each
    # thread has its own cuBLAS handle (DeviceThreadHandlePool), so its own workspace.
    t = burden.estimate(linear(bias=False), (1000,), mode="training", optimizer="sgd", target="cuda",
                        device_profile="h100").training
    assert dict(t.peak_parts)["cuBLAS workspaces"] == 2 * H100_WORKSPACE
    cpu = burden.estimate(linear(bias=False), (1000,), mode="training", optimizer="sgd").training
    assert dict(cpu.peak_parts)["cuBLAS workspaces"] == 0


def a100_with_context(context: int):
    return dataclasses.replace(BUILT_IN["a100"], name="a100-test", context_bytes=context)


def test_reserved_memory_by_hand():
    # CUDACachingAllocator.cpp on an A100, Linear(1024, 1024, bias=False) at batch 1008, in this order:
    # - the weight, 4 MiB: a large request (> kSmallSize, 1 MiB) under kMinLargeAlloc (10 MiB) takes a
    #   kLargeBuffer segment of 20 MiB (get_allocation_size), split: 16 MiB stay free;
    # - the input, 1008 x 4096 = 4,128,768 bytes, from that free block: 12,648,448 left;
    # - the output of mm, as large, from it: 8,519,680 left;
    # - the cuBLAS workspace, 8,519,680 bytes, takes that block whole.
    # One 20 MiB segment: reserved 20,971,520 bytes, every byte of it allocated.
    e = burden.estimate(nn.Linear(1024, 1024, bias=False), (1024,), batch_size=1008, target="cuda",
                        device_profile="a100")
    assert e.peak_bytes == 4 * MiB + 2 * 4_128_768 + A100_WORKSPACE == 20 * MiB
    assert e.reserved_bytes == 20 * MiB
    # batch 1009: the workspace no longer fits beside them (8,511,488 bytes left) and takes a segment of
    # its own, 20 MiB again (under 10 MiB)
    e = burden.estimate(nn.Linear(1024, 1024, bias=False), (1024,), batch_size=1009, target="cuda",
                        device_profile="a100")
    assert e.reserved_bytes == 40 * MiB


def test_fit_plans_against_the_card_less_the_context():
    # A 122 MiB card whose CUDA context takes 100 MiB leaves the allocator 22 MiB. Up to batch 256 the
    # input and output (8,192 bytes a sample in all) are small requests (kSmallSize): one kSmallBuffer
    # segment of 2 MiB holds both, beside the weight's 20 MiB one, whose free 16 MiB takes the workspace.
    # From batch 257 they are large and share the weight's segment with the workspace: batch 1008 fits
    # in it exactly (above); batch 1009 needs a second 20 MiB segment, and with nothing cached to free,
    # the allocator gives up.
    f = burden.fit(nn.Linear(1024, 1024, bias=False), 122 * MiB, (1024,), mode="inference", target="cuda",
                   device_profile=a100_with_context(100 * MiB))
    assert f.max_batch == 1008
    assert f.peak_bytes == f.reserved_bytes == 20 * MiB and f.context_bytes == 100 * MiB
    around = {p.batch: p for p in f.around}
    assert around[1008].fits and not around[1009].fits and around[1009].traced


def attention_model():
    class Attention(nn.Module):
        def forward(self, q, k, v):
            return F.scaled_dot_product_attention(q, k, v, is_causal=True)

    return Attention()


def attention_inputs(dtype=torch.float16):
    return tuple(burden.TensorSpec(1, 8, 1024, 64, dtype=dtype) for _ in range(3))


@pytest.mark.parametrize("profile, kernel", [("a100", "aten._scaled_dot_product_flash_attention"),
                                             ("h100", "aten._scaled_dot_product_cudnn_attention"),
                                             ("t4", "aten._scaled_dot_product_efficient_attention")])
def test_attention_runs_the_kernel_cuda_picks(profile, kernel):
    # sdp_utils.cpp's priority: cuDNN first on sm90 (check_prefer_cudnn_attention), flash on sm80, and on
    # sm75 flash is refused (check_sm_version: sm80 or newer) for the memory-efficient kernel
    e = burden.estimate(attention_model(), inputs=attention_inputs(), target="cuda", device_profile=profile,
                        dtype="float16")
    names = [ev.name for ev in _trace(profile).events]
    assert kernel in names and "aten.bmm" not in names
    # no 1 x 8 x 1024 x 1024 score matrix (16 MiB in float16): the output (1 MiB) and the log-sum-exp
    # statistics (float32, 1 x 8 x 1024 (32 KiB), or cuDNN's 1 x 8 x 1024 x 1)
    assert e.peak_feature_bytes < 2 * MiB


def _trace(profile):
    from burden.kernels import Kernels

    q = torch.empty(1, 8, 1024, 64, dtype=torch.float16, device="meta")
    kernels = Kernels("cuda", BUILT_IN[profile].capability)
    with torch.no_grad():
        return trace_forward(attention_model(), (q, q.clone(), q.clone()), kernels=kernels)


def test_the_cpu_target_keeps_the_cpus_choice():
    # the CPU has no flash kernel for float16 at this size in every release: whatever it picks, never
    # a CUDA kernel
    trace = trace_forward(attention_model(), tuple(torch.empty(1, 8, 64, 32, device="meta") for _ in range(3)))
    assert not any("cudnn" in e.name or "efficient" in e.name for e in trace.events)


def test_cuda_autocast_runs_softmax_in_float32():
    # autocast_mode.h: softmax is in CUDA's fp32_set_opt_dtype list (float32 out, no input cast); the
    # CPU policy has no softmax entry, so it stays in the low precision
    model = nn.Sequential(nn.Linear(256, 256), nn.Softmax(-1))
    cuda = burden.estimate(model, (256,), batch_size=8, amp="fp16", target="cuda", device_profile="h100")
    cpu = burden.estimate(model, (256,), batch_size=8, amp="fp16")
    assert cuda.layer("1").feature_bytes == 8 * 256 * 4
    assert cpu.layer("1").feature_bytes == 8 * 256 * 2
    # the linear layer runs in float16 on both (lower_precision_fp): the float16 copies of its weight and
    # bias (65,792 values), of its input, and its output
    assert cuda.layer("0").feature_bytes == cpu.layer("0").feature_bytes == 65_792 * 2 + 2 * 8 * 256 * 2


def test_a_cpu_profile_is_refused_for_the_cuda_target():
    from burden.devices import DeviceProfile, Roof

    cpu = DeviceProfile("laptop", "a CPU", "cpu", (Roof((("float32", 1e11),), 1e10),))
    with pytest.raises(burden.BurdenError, match="needs a GPU"):
        burden.estimate(linear(), (1000,), target="cuda", device_profile=cpu)


def test_every_result_names_what_is_not_counted():
    e = burden.estimate(linear(), (1000,), target="cuda", device_profile="h100", mode="training")
    assert "cuDNN" in e.accounting and "NCCL" in e.accounting
    f = burden.fit(linear(), "1GiB", (1000,), target="cuda", device_profile="h100")
    assert "cuDNN" in f.accounting and "NCCL" in f.accounting
