"""Hand-worked checks of the CUDA caching allocator model against the rules of the torch 2.13 source.

Every expected figure below is derived by hand from the constants and functions named in its
comment (c10/core/AllocatorConfig.h and DeviceCachingAllocator in c10/cuda/CUDACachingAllocator.cpp),
not by running the model.
"""

from __future__ import annotations

import random

import pytest

from burden.cuda_allocator import (
    AllocatorConfig,
    CachingAllocator,
    OutOfMemory,
    allocation_size,
    parse_alloc_conf,
    round_size,
    simulate,
)

KiB = 1 << 10
MiB = 1 << 20


def test_round_size_minimum_and_512_multiples() -> None:
    # round_size: below kMinBlockSize (512) -> 512; otherwise the next multiple of 512
    assert round_size(1) == 512
    assert round_size(512) == 512
    assert round_size(513) == 1024
    assert round_size(1_200_000) == 2344 * 512  # ceil(1_200_000 / 512) = 2344


def test_round_size_power2_divisions() -> None:
    config = parse_alloc_conf("roundup_power2_divisions:4")
    # 1_200_000 lies in [1 MiB, 2 MiB); 4 divisions -> steps of 256 KiB: 1 MiB + 256 KiB = 1_310_720
    assert round_size(1_200_000, config) == MiB + 256 * KiB
    # 5 MiB + 1 lies in [4 MiB, 8 MiB); steps of 1 MiB -> 6 MiB
    assert round_size(5 * MiB + 1, config) == 6 * MiB
    # roundup_power2_next_division returns powers of 2 unchanged
    assert round_size(4 * MiB, config) == 4 * MiB
    # only applies when size > kMinBlockSize * divisions = 2048: 1200 -> ceil to 512 multiple = 1536
    assert round_size(1200, config) == 1536


def test_round_size_power2_divisions_list_form() -> None:
    # parseRoundUpPower2Divisions: "64:8" -> slot log2(64) = 6 ([64 MiB, 128 MiB)) and, being the first
    # boundary, every slot below it get 8; ">:1" -> slots 7.. get 1 (plain 512 rounding)
    config = parse_alloc_conf("roundup_power2_divisions:[64:8,>:1]")
    assert config.roundup_power2_divisions == (8,) * 7 + (1,) * 9
    # 100 MiB + 1 in [64 MiB, 128 MiB): steps of 8 MiB -> 104 MiB
    assert round_size(100 * MiB + 1, config) == 104 * MiB
    # 200 MiB + 1 in [128 MiB, 256 MiB): 1 division -> next multiple of 512
    assert round_size(200 * MiB + 1, config) == 200 * MiB + 512
    # 3 MiB + 1 in slot 1 (first-boundary fill, 8 divisions): steps of 256 KiB -> 3 MiB + 256 KiB
    assert round_size(3 * MiB + 1, config) == 3 * MiB + 256 * KiB


def test_allocation_size() -> None:
    # get_allocation_size: <= kSmallSize (1 MiB) -> kSmallBuffer (2 MiB)
    assert allocation_size(512) == 2 * MiB
    assert allocation_size(MiB) == 2 * MiB
    # < kMinLargeAlloc (10 MiB) -> large_segment_size (default kLargeBuffer, 20 MiB)
    assert allocation_size(MiB + 512) == 20 * MiB
    assert allocation_size(10 * MiB - 512) == 20 * MiB
    # otherwise rounded up to kRoundLarge (2 MiB)
    assert allocation_size(10 * MiB) == 10 * MiB
    assert allocation_size(12 * MiB) == 12 * MiB
    assert allocation_size(11 * MiB + 512) == 12 * MiB


def test_small_requests_share_a_2mib_segment() -> None:
    alloc = CachingAllocator()
    alloc.malloc(1000)  # round_size -> 1024; small pool; new kSmallBuffer segment of 2 MiB, split
    assert (alloc.reserved, alloc.allocated, alloc.cuda_mallocs) == (2 * MiB, 1024, 1)
    alloc.malloc(1000)  # best fit: the 2 MiB - 1024 remainder, split again; no cudaMalloc
    assert (alloc.reserved, alloc.allocated, alloc.cuda_mallocs, alloc.segments) == (2 * MiB, 2048, 1, 1)


def test_small_pool_split_needs_512_bytes_left() -> None:
    alloc = CachingAllocator()
    alloc.malloc(MiB)  # kSmallSize is still small: 2 MiB segment, remainder 1 MiB split off
    alloc.malloc(MiB - 512)  # remainder 1 MiB - (1 MiB - 512) = 512 >= kMinBlockSize -> split (should_split)
    assert alloc.allocated == 2 * MiB - 512
    alloc.malloc(1)  # round_size 512 fits the 512-byte remainder exactly
    assert (alloc.allocated, alloc.cuda_mallocs) == (2 * MiB, 1)


def test_just_over_1mib_goes_to_large_pool() -> None:
    alloc = CachingAllocator()
    alloc.malloc(MiB + 1)  # round_size -> 1 MiB + 512 > kSmallSize: large pool, 20 MiB segment
    assert (alloc.reserved, alloc.allocated) == (20 * MiB, MiB + 512)


def test_5mib_requests_share_a_20mib_segment() -> None:
    alloc = CachingAllocator()
    alloc.malloc(5 * MiB)  # 1 MiB < 5 MiB < kMinLargeAlloc -> 20 MiB segment; remainder 15 MiB > kSmallSize: split
    assert (alloc.reserved, alloc.allocated, alloc.cuda_mallocs) == (20 * MiB, 5 * MiB, 1)
    alloc.malloc(5 * MiB)  # best fit is the 15 MiB remainder; split again, 10 MiB stays cached
    assert (alloc.reserved, alloc.allocated, alloc.cuda_mallocs) == (20 * MiB, 10 * MiB, 1)


def test_large_requests_get_2mib_rounded_segments() -> None:
    alloc = CachingAllocator()
    alloc.malloc(12 * MiB)  # >= kMinLargeAlloc: segment = 12 MiB (already a kRoundLarge multiple)
    assert (alloc.reserved, alloc.allocated) == (12 * MiB, 12 * MiB)
    alloc.malloc(11 * MiB + 1)  # round_size 11 MiB + 512; segment rounded up to kRoundLarge -> 12 MiB
    # remainder 12 MiB - (11 MiB + 512) < kSmallSize: not split, whole 12 MiB block counted allocated
    assert (alloc.reserved, alloc.allocated, alloc.cuda_mallocs) == (24 * MiB, 24 * MiB, 2)


def test_large_pool_remainder_of_exactly_1mib_is_not_split() -> None:
    alloc = CachingAllocator()
    alloc.malloc(19 * MiB)  # segment 20 MiB (kRoundLarge); remainder 1 MiB is not > kSmallSize (should_split)
    assert (alloc.reserved, alloc.allocated) == (20 * MiB, 20 * MiB)
    alloc.malloc(19 * MiB - 512)  # new 20 MiB segment; remainder 1 MiB + 512 > kSmallSize -> split
    assert (alloc.reserved, alloc.allocated) == (40 * MiB, 39 * MiB - 512)


def test_free_then_malloc_reuses_cached_block() -> None:
    alloc = CachingAllocator()
    h = alloc.malloc(12 * MiB)
    alloc.free(h)  # free_block: cached, not cudaFree'd
    assert (alloc.allocated, alloc.reserved) == (0, 12 * MiB)
    alloc.malloc(12 * MiB)  # get_free_block finds the cached 12 MiB block
    assert (alloc.cuda_mallocs, alloc.reserved, alloc.allocated) == (1, 12 * MiB, 12 * MiB)
    assert alloc.peak_reserved == 12 * MiB


def test_adjacent_free_blocks_merge() -> None:
    alloc = CachingAllocator()
    a = alloc.malloc(5 * MiB)  # [a 5][15 free] in one 20 MiB segment
    b = alloc.malloc(5 * MiB)  # [a 5][b 5][10 free]
    alloc.malloc(5 * MiB)  # [a 5][b 5][c 5][5 free]
    alloc.free(a)
    alloc.free(b)  # free_block/try_merge_blocks: b merges with free a -> [10 free][c 5][5 free]
    alloc.malloc(8 * MiB)  # best fit is the merged 10 MiB block: no new segment
    assert (alloc.cuda_mallocs, alloc.reserved, alloc.allocated) == (1, 20 * MiB, 13 * MiB)


def test_max_split_size_keeps_oversize_blocks_for_large_requests() -> None:
    config = parse_alloc_conf("max_split_size_mb:20")
    alloc = CachingAllocator(config)
    h = alloc.malloc(30 * MiB)  # 30 MiB segment, size >= max_split_size: never split
    alloc.free(h)
    # get_free_block: a request below max_split_size may not take a block >= max_split_size
    alloc.malloc(5 * MiB)
    assert (alloc.cuda_mallocs, alloc.reserved, alloc.allocated) == (2, 50 * MiB, 5 * MiB)
    # oversize request: the cached 30 MiB block is < 24 MiB + max_non_split_rounding (20 MiB), taken whole
    alloc.malloc(24 * MiB)
    assert (alloc.cuda_mallocs, alloc.reserved, alloc.allocated) == (2, 50 * MiB, 35 * MiB)


def test_max_non_split_rounding_limit() -> None:
    alloc = CachingAllocator(parse_alloc_conf("max_split_size_mb:20"))
    alloc.free(alloc.malloc(50 * MiB))
    # get_free_block: 50 MiB >= 24 MiB + 20 MiB, too much waste -> new 24 MiB segment
    alloc.malloc(24 * MiB)
    assert (alloc.cuda_mallocs, alloc.reserved, alloc.allocated) == (2, 74 * MiB, 24 * MiB)


def test_release_available_cached_blocks_frees_just_enough() -> None:
    alloc = CachingAllocator(parse_alloc_conf("max_split_size_mb:20"), capacity=100 * MiB)
    handles = [alloc.malloc(30 * MiB) for _ in range(3)]  # three 30 MiB segments, 90 MiB reserved
    for h in handles:
        alloc.free(h)
    # 40 MiB: no cached block fits, cudaMalloc 90 + 40 > 100 fails; release_available_cached_blocks
    # frees oversize blocks from the largest (highest address on ties) until >= 40 MiB: two of them
    alloc.malloc(40 * MiB)
    assert (alloc.reserved, alloc.segments, alloc.cuda_frees, alloc.cuda_mallocs) == (70 * MiB, 2, 2, 4)
    assert (alloc.peak_reserved, alloc.alloc_retries) == (90 * MiB, 0)


def test_release_available_cached_blocks_frees_one_big_enough_block() -> None:
    alloc = CachingAllocator(parse_alloc_conf("max_split_size_mb:20"), capacity=60 * MiB)
    alloc.free(alloc.malloc(50 * MiB))
    # 24 MiB: the cached 50 MiB block is refused (>= 24 + 20), cudaMalloc 50 + 24 > 60 fails;
    # the first cached block >= max(24, 20) MiB is released alone, then cudaMalloc succeeds
    alloc.malloc(24 * MiB)
    assert (alloc.reserved, alloc.cuda_frees, alloc.alloc_retries) == (24 * MiB, 1, 0)


def test_capacity_releases_whole_cached_segments_then_retries() -> None:
    alloc = CachingAllocator(capacity=20 * MiB)
    alloc.free(alloc.malloc(1 * KiB))  # 2 MiB small segment, cached whole
    # 20 MiB: cudaMalloc 2 + 20 > 20 fails; no max_split_size, so release_cached_blocks frees the
    # unsplit small segment and alloc_block retries (num_alloc_retries)
    alloc.malloc(20 * MiB)
    assert (alloc.reserved, alloc.segments, alloc.cuda_frees, alloc.alloc_retries) == (20 * MiB, 1, 1, 1)
    assert alloc.peak_reserved == 20 * MiB


def test_out_of_memory_after_release() -> None:
    alloc = CachingAllocator(capacity=30 * MiB)
    alloc.malloc(5 * MiB)  # 20 MiB segment, split: it can never be released while 5 MiB is live
    alloc.free(alloc.malloc(1 * KiB))  # 2 MiB small segment, cached whole
    with pytest.raises(OutOfMemory) as err:
        alloc.malloc(16 * MiB)  # 15 MiB remainder too small; 22 + 16 > 30; release -> 20 + 16 > 30 still
    assert (err.value.alloc_size, err.value.allocated, err.value.reserved) == (16 * MiB, 5 * MiB, 20 * MiB)
    assert (alloc.ooms, alloc.alloc_retries, alloc.cuda_frees) == (1, 1, 1)


def test_memory_fraction_caps_reserved() -> None:
    # setMemoryFraction: allowed = fraction * total; alloc_block refuses past it before cudaMalloc
    alloc = CachingAllocator(parse_alloc_conf("per_process_memory_fraction:0.5"), capacity=100 * MiB)
    alloc.malloc(30 * MiB)
    with pytest.raises(OutOfMemory) as err:
        alloc.malloc(30 * MiB)  # 30 + 30 > 50 MiB allowed, nothing cached to release
    assert err.value.allowed == 50 * MiB


def _gc_trace(alloc: CachingAllocator) -> None:
    # get_free_block calls on the large pool are counted (only while GC is active)
    a = alloc.malloc(12 * MiB)  # call 1; new 12 MiB segment
    b = alloc.malloc(14 * MiB)  # call 2; new 14 MiB segment, reserved 26 MiB
    alloc.free(b)  # cached with base 2
    alloc.free(a)  # cached with base 2
    alloc.free(alloc.malloc(12 * MiB))  # call 3 reuses a; re-cached with base 3
    alloc.malloc(16 * MiB)  # call 4: nothing fits


def test_garbage_collection_frees_oldest_blocks() -> None:
    config = parse_alloc_conf("per_process_memory_fraction:0.5,garbage_collection_threshold:0.5")
    alloc = CachingAllocator(config, capacity=100 * MiB)
    _gc_trace(alloc)
    # garbage_collect_cached_blocks: threshold 0.5 * 50 MiB = 25 MiB < 26 MiB reserved -> target 1 MiB;
    # ages a = 4 - 3 = 1, b = 4 - 2 = 2, average 1.5: only b (14 MiB) is freed; then 12 + 16 MiB
    assert (alloc.reserved, alloc.cuda_frees, alloc.segments, alloc.peak_reserved) == (28 * MiB, 1, 2, 28 * MiB)


def test_garbage_collection_needs_a_memory_fraction() -> None:
    # get_free_block / malloc only collect when allowed_memory_maximum is set (fraction < 1)
    alloc = CachingAllocator(parse_alloc_conf("garbage_collection_threshold:0.5"), capacity=100 * MiB)
    _gc_trace(alloc)
    assert (alloc.reserved, alloc.cuda_frees) == (42 * MiB, 0)


def test_zero_byte_request_takes_no_block() -> None:
    # NativeCachingAllocator::allocate: size 0 -> null pointer, DeviceCachingAllocator::malloc not called
    alloc = CachingAllocator()
    h = alloc.malloc(0)
    assert alloc.stats() == CachingAllocator().stats()
    alloc.free(h)  # free(nullptr) returns at once
    with pytest.raises(ValueError):
        alloc.free(h)


def test_simulate_and_peaks() -> None:
    events = [("malloc", 1, 4 * MiB), ("malloc", 2, 3 * MiB), ("free", 1, 0), ("malloc", 3, 12 * MiB),
              ("free", 2, 0), ("free", 3, 0)]
    stats = simulate(events)
    # 4 and 3 MiB share one 20 MiB segment: [4][3][13 free]; freeing 1 gives [4 free][3][13 free].
    # 12 MiB: best fit is the 13 MiB tail; its 1 MiB remainder is not > kSmallSize (should_split), so
    # the whole 13 MiB block is handed out: peak allocated 3 + 13 = 16 MiB, still one segment
    assert (stats.reserved, stats.peak_reserved, stats.cuda_mallocs) == (20 * MiB, 20 * MiB, 1)
    assert (stats.allocated, stats.peak_allocated, stats.segments) == (0, 16 * MiB, 1)


def test_empty_cache_releases_only_whole_segments() -> None:
    alloc = CachingAllocator()
    alloc.malloc(5 * MiB)  # 20 MiB segment, split, 15 MiB remainder cached
    alloc.free(alloc.malloc(16 * MiB))  # does not fit the 15 MiB remainder: own 16 MiB segment, then cached
    assert alloc.reserved == 36 * MiB
    alloc.empty_cache()  # release_cached_blocks: the split 20 MiB segment stays, the whole 16 MiB one goes
    assert (alloc.reserved, alloc.cuda_frees) == (20 * MiB, 1)


def test_invariants_on_a_random_trace() -> None:
    # whatever the order, the source's bookkeeping holds: segments are tiled by their blocks,
    # try_merge_blocks leaves no two free neighbours, and the counters match the blocks
    rng = random.Random(0)
    alloc = CachingAllocator(parse_alloc_conf("max_split_size_mb:64"), capacity=384 * MiB)
    live: list[int] = []
    for _ in range(3000):
        if live and rng.random() < 0.5:
            alloc.free(live.pop(rng.randrange(len(live))))
        else:
            try:  # a tight capacity drives the release-and-retry paths, and sometimes OOM
                live.append(alloc.malloc(rng.choice([0, 1, 700, 3 * KiB, 300 * KiB, MiB, 3 * MiB, 12 * MiB,
                                                     90 * MiB])))
            except OutOfMemory:
                pass
        blocks = [b for b in alloc._live.values() if b is not None]
        blocks += [b for pool in alloc._pools.values() for _, _, b in pool]
        assert alloc.allocated == sum(b.size for b in blocks if b.allocated)
        heads = [b for b in blocks if b.prev is None]
        assert len(heads) == alloc.segments and len(blocks) == len({id(b) for b in blocks})
        total = 0
        for head in heads:
            block: object = head
            while block is not None:
                nxt = block.next  # type: ignore[attr-defined]
                if nxt is not None:
                    assert nxt.addr == block.addr + block.size  # type: ignore[attr-defined]
                    assert block.allocated or nxt.allocated  # type: ignore[attr-defined]
                total += block.size  # type: ignore[attr-defined]
                block = nxt
        assert total == alloc.reserved <= alloc.peak_reserved
    assert alloc.cuda_frees > 0 and alloc.alloc_retries > 0 and alloc.ooms > 0  # it reached every path


def test_parse_alloc_conf() -> None:
    assert parse_alloc_conf(None) == AllocatorConfig()
    assert parse_alloc_conf("") == AllocatorConfig()
    config = parse_alloc_conf(" max_split_size_mb : 100 , garbage_collection_threshold:0.6,"
                              "roundup_power2_divisions:4,release_lock_on_cudamalloc:True,backend:native")
    assert config == AllocatorConfig(max_split_size=100 * MiB, roundup_power2_divisions=4,
                                     garbage_collection_threshold=0.6)
    # large_segment_size_mb is read first; max_non_split_rounding defaults to it
    config = parse_alloc_conf("max_split_size_mb:40,large_segment_size_mb:40,max_non_split_rounding_mb:60")
    assert (config.large_segment_size, config.max_split_size, config.max_non_split_rounding_size) == (
        40 * MiB, 40 * MiB, 60 * MiB)
    assert allocation_size(5 * MiB, config) == 40 * MiB
    assert parse_alloc_conf("expandable_segments:False") == AllocatorConfig()


@pytest.mark.parametrize("text, message", [
    ("max_split_size_mb:19", ">= 20"),  # parseMaxSplitSize: at least large_segment_size
    ("large_segment_size_mb:30,max_split_size_mb:20", ">= 30"),
    ("large_segment_size_mb:10", "> 10"),  # parseLargeSegmentSize: above kMinLargeAlloc
    ("roundup_power2_divisions:3", "power of 2"),
    ("roundup_power2_divisions:0", "power of 2"),  # the legacy single value rejects 0
    ("garbage_collection_threshold:1.0", "(0, 1)"),
    ("expandable_segments:True", "not modelled"),
    ("expandable_segments:yes", "True or False"),
    ("backend:cudaMallocAsync", "not modelled"),
    ("per_process_memory_fraction:0.5,throw_on_cudamalloc_oom:True", "not modelled"),
    ("no_such_option:1", "unrecognized"),
    ("max_split_size_mb", "expected ':'"),
    ("max_split_size_mb:100;garbage_collection_threshold:0.5", "invalid literal"),
])
def test_parse_alloc_conf_rejects(text: str, message: str) -> None:
    with pytest.raises(ValueError, match=message.replace("(", r"\(").replace(")", r"\)")):
        parse_alloc_conf(text)


def test_fraction_needs_capacity() -> None:
    with pytest.raises(ValueError, match="capacity"):
        CachingAllocator(AllocatorConfig(per_process_memory_fraction=0.5))
