"""How the peaks count bytes: the CUDA caching allocator's 512-byte blocks, and ZeRO sharding.

Hand-derived figures; a GPU check (``torch.cuda.max_memory_allocated``) runs in
``benches/memory_validation.py`` where a GPU is present.
"""

from __future__ import annotations

import math

import pytest
from torch import nn

import burden
from burden.errors import InputSpecError


def test_cuda_rounds_every_tensor_to_512_bytes():
    # weight 4,000,000 B -> 4,000,256; bias 4,000 -> 4,096; the input and the output, 4,000 -> 4,096 each;
    # and the cuBLAS workspace the first matrix product takes on the default GPU, an H100 (32 MiB:
    # parseChosenWorkspaceSize's ":4096:8" for compute capability 9.x, CublasHandlePool.cpp)
    e = burden.estimate(nn.Linear(1000, 1000), (1000,), target="cuda")
    assert e.peak_bytes == 4_000_256 + 4_096 + 4_096 + 4_096 + 32 * 2**20
    assert e.input_bytes == 4_096
    assert burden.estimate(nn.Linear(1000, 1000), (1000,)).peak_bytes == 4_004_000 + 4_000 + 4_000
    assert "max_memory_allocated" in e.accounting and "workspaces" in e.accounting


def mlp() -> nn.Module:
    return nn.Sequential(nn.Linear(100, 300), nn.ReLU(), nn.Linear(300, 10))


@pytest.mark.parametrize("zero", [1, 2, 3])
def test_zero_shards_one_device_share(zero):
    trainable = 100 * 300 + 300 + 300 * 10 + 10  # 33,310 values, 133,240 B
    plain = burden.estimate(mlp(), (100,), batch_size=4, mode="training", optimizer="adam").training
    sharded = burden.estimate(mlp(), (100,), batch_size=4, mode="training", optimizer="adam", world_size=4,
                              zero=zero).training
    # Adam's two moments per parameter, and a 4-byte step counter for each of the 4 parameters
    assert plain.optimizer_bytes == 2 * 4 * trainable + 4 * 4
    assert sharded.optimizer_bytes == math.ceil((2 * 133_240 + 16) / 4)
    assert sharded.gradient_bytes == (math.ceil(133_240 / 4) if zero >= 2 else 133_240)
    # the parameters too from stage 3: each stage takes away what it shards
    saved = plain.optimizer_bytes - sharded.optimizer_bytes
    assert plain.training_peak_bytes - sharded.training_peak_bytes >= saved
    if zero == 3:
        assert plain.training_peak_bytes - sharded.training_peak_bytes >= saved + 133_240 - math.ceil(133_240 / 4)


def test_fit_per_device_under_zero_fits_more():
    assert burden.fit("se_resnet50", "4GiB", world_size=8, zero=3).max_batch > burden.fit("se_resnet50", "4GiB").max_batch


@pytest.mark.parametrize("kwargs,needle", [({"target": "tpu"}, "target"), ({"zero": 2}, "world-size"),
                                           ({"zero": 4, "world_size": 2}, "stage"),
                                           ({"world_size": 0}, "world size")])
def test_mistakes(kwargs, needle):
    with pytest.raises(InputSpecError, match=needle):
        burden.estimate(mlp(), (100,), mode="training", **kwargs)


def test_zero_needs_a_training_step():
    with pytest.raises(InputSpecError, match="training"):
        burden.estimate(mlp(), (100,), world_size=2, zero=1)
