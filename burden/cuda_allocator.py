"""A pure-Python model of PyTorch's native CUDA caching allocator, to predict ``max_memory_reserved``.

``torch.cuda.max_memory_reserved()`` is not the peak of live tensor bytes: the allocator in
``c10/cuda/CUDACachingAllocator.cpp`` rounds every request, carves requests out of cached
``cudaMalloc`` segments, keeps freed blocks instead of returning them to the driver, and gives
whole free segments back only when a ``cudaMalloc`` fails (or on ``empty_cache``).  The reserved
figure therefore depends on the order of allocations and frees, so it can only be predicted by
replaying that order through the same rules.  This module replays them for one device and one
stream (the default stream, which is what a plain training step uses), following torch 2.13
(``c10/core/AllocatorConfig.h`` of the 2.13.0 wheel, git cf30153c, and the
``DeviceCachingAllocator`` of the same generation).

Not modelled, each for a stated reason:

- ``expandable_segments:True`` maps 2 MiB / 20 MiB pages into one growing virtual segment per
  stream; its reserved figure follows page mapping, not segments, so it is refused (ValueError).
- ``backend:cudaMallocAsync`` hands allocation to the driver's own pool; refused.
- ``throw_on_cudamalloc_oom:True`` together with a memory fraction rejects requests by a policy
  whose code was not available to check; refused.
- several streams, ``record_stream`` events, CUDA graph / ``MemPool`` private pools, IPC and
  free-memory callbacks: burden's traces carry none of them.
- Segment addresses are synthetic (increasing in ``cudaMalloc`` order).  They only break ties
  between free blocks of equal size, where the driver's real addresses are unknowable anyway.
"""

from __future__ import annotations

import bisect
from collections.abc import Iterable
from dataclasses import dataclass

MiB = 1 << 20
# c10/core/AllocatorConfig.h
K_MIN_BLOCK_SIZE = 512  # every size is rounded up to a multiple of this
K_SMALL_SIZE = 1 * MiB  # largest request served from the small pool
K_SMALL_BUFFER = 2 * MiB  # segment size of the small pool
K_MIN_LARGE_ALLOC = 10 * MiB  # large requests below this share a large_segment_size segment
K_ROUND_LARGE = 2 * MiB  # larger requests get their own segment, rounded to this
K_LARGE_BUFFER = 20 * MiB  # default large_segment_size (and max_non_split_rounding_size)
_SIZE_MAX = (1 << 64) - 1  # max_split_size when unset: std::numeric_limits<size_t>::max()
_INTERVALS = 16  # kRoundUpPowerOfTwoIntervals: 1 MiB .. 64 GiB, one slot per power of two

# CUDAAllocatorConfig keys that only steer pinned host memory, locking or graph capture
_IGNORED_KEYS = frozenset({
    "release_lock_on_cudamalloc", "release_lock_on_hipmalloc", "pinned_use_cuda_host_register",
    "pinned_use_hip_host_register", "pinned_num_register_threads", "pinned_use_background_threads",
    "pinned_reserve_segment_size_mb", "pinned_free_catch_all", "graph_capture_record_stream_reuse"})


@dataclass(frozen=True)
class AllocatorConfig:
    """The allocator settings that change where bytes go (sizes in bytes, not MB).

    ``roundup_power2_divisions`` is one int for every size interval (the legacy form) or a
    16-tuple, one entry per power-of-two interval starting at 1 MiB, as the list form fills it.
    ``max_non_split_rounding_size=None`` means ``large_segment_size``, the source's default.
    """

    max_split_size: int | None = None
    roundup_power2_divisions: int | tuple[int, ...] = 0
    garbage_collection_threshold: float = 0.0
    large_segment_size: int = K_LARGE_BUFFER
    max_non_split_rounding_size: int | None = None
    per_process_memory_fraction: float = 1.0

    def divisions(self, size: int) -> int:
        """AcceleratorAllocatorConfig::roundup_power2_divisions: slot by floor(log2(size)), 1 MiB first."""
        divs = self.roundup_power2_divisions
        if isinstance(divs, int):
            return divs
        log_size = size.bit_length() - 1
        return divs[min(max(log_size - 20, 0), _INTERVALS - 1)]


def _is_power_of_2(value: int) -> bool:
    return value > 0 and value & (value - 1) == 0


def _parse_roundup(tokens: list[str], i: int) -> tuple[int | tuple[int, ...], int]:
    """parseRoundUpPower2Divisions: ``N`` for all slots, or ``[MB:N,...,>:N]`` per interval."""
    if tokens[i] != "[":
        value = int(tokens[i])
        if not _is_power_of_2(value):  # the legacy form rejects 0, as llvm::isPowerOf2_64 does
            raise ValueError(f"roundup_power2_divisions must be a power of 2, got {value}")
        return value, i
    divs = [0] * _INTERVALS
    first, last_index = True, 0
    i += 1
    while i < len(tokens) and tokens[i] != "]":
        key = tokens[i]
        if i + 2 >= len(tokens) or tokens[i + 1] != ":":
            raise ValueError("roundup_power2_divisions list expects boundary:divisions pairs")
        value = int(tokens[i + 2])
        if value != 0 and not _is_power_of_2(value):
            raise ValueError(f"roundup_power2_divisions must be a power of 2 or 0, got {value}")
        if key == ">":  # every interval above the last named boundary
            divs[last_index + 1:] = [value] * (_INTERVALS - last_index - 1)
        else:
            boundary = int(key)
            if not _is_power_of_2(boundary):
                raise ValueError(f"roundup_power2_divisions boundaries must be powers of 2, got {boundary}")
            index = min(boundary.bit_length() - 1, _INTERVALS - 1)
            if first:  # the first boundary also covers every interval below it
                divs[:index] = [value] * index
                first = False
            divs[index] = value
            last_index = index
        i += 3
        if i < len(tokens) and tokens[i] == ",":
            i += 1
    if i >= len(tokens):
        raise ValueError("roundup_power2_divisions list is missing its closing ']'")
    return tuple(divs), i


def parse_alloc_conf(text: str | None) -> AllocatorConfig:
    """Read a PYTORCH_CUDA_ALLOC_CONF string the way AcceleratorAllocatorConfig::parseArgs does.

    The tokenizer splits on ``, : [ ]`` and drops whitespace; ``large_segment_size_mb`` is read in a
    first pass because the lower bounds of ``max_split_size_mb`` and ``max_non_split_rounding_mb``
    are that segment size.  Values torch rejects raise ValueError; options whose behaviour is not
    modelled raise ValueError too, rather than silently predicting the wrong figure.
    """
    tokens: list[str] = []
    buf = ""
    for ch in text or "":
        if ch in ",:[]":
            if buf:
                tokens.append(buf)
                buf = ""
            tokens.append(ch)
        elif not ch.isspace():
            buf += ch
    if buf:
        tokens.append(buf)

    def value_at(i: int) -> str:
        if i + 1 >= len(tokens) or tokens[i] != ":":
            raise ValueError(f"expected ':' and a value after {tokens[i - 1]!r}")
        return tokens[i + 1]

    large_segment = K_LARGE_BUFFER
    for i, tok in enumerate(tokens):
        if tok == "large_segment_size_mb":
            mb = int(value_at(i + 1))
            if mb <= K_MIN_LARGE_ALLOC // MiB:
                raise ValueError(f"large_segment_size_mb must be > {K_MIN_LARGE_ALLOC // MiB}, got {mb}")
            large_segment = mb * MiB
    fields: dict[str, object] = {"large_segment_size": large_segment}
    throw_on_oom, fraction = False, 1.0
    i = 0
    while i < len(tokens):
        key, last = tokens[i], i + 2  # last: index of the final token of this key's value
        if key in ("max_split_size_mb", "max_non_split_rounding_mb"):
            mb = int(value_at(i + 1))
            if mb < large_segment // MiB:
                raise ValueError(f"{key} must be >= {large_segment // MiB}, got {mb}")
            name = "max_split_size" if key == "max_split_size_mb" else "max_non_split_rounding_size"
            fields[name] = mb * MiB
        elif key == "garbage_collection_threshold":
            value = float(value_at(i + 1))
            if not 0.0 < value < 1.0:
                raise ValueError(f"garbage_collection_threshold must be in (0, 1), got {value}")
            fields["garbage_collection_threshold"] = value
        elif key == "per_process_memory_fraction":
            value = float(value_at(i + 1))
            if not 0.0 <= value <= 1.0:
                raise ValueError(f"per_process_memory_fraction must be in [0, 1], got {value}")
            fields["per_process_memory_fraction"] = fraction = value
        elif key in ("expandable_segments", "throw_on_cudamalloc_oom"):
            flag = value_at(i + 1)
            if flag not in ("True", "False"):
                raise ValueError(f"{key} expects True or False, got {flag!r}")
            if key == "expandable_segments" and flag == "True":
                raise ValueError("expandable_segments:True is not modelled: it maps pages into one growing "
                                 "segment per stream, so reserved memory does not follow cudaMalloc segments")
            throw_on_oom = throw_on_oom or (key == "throw_on_cudamalloc_oom" and flag == "True")
        elif key == "backend":
            if value_at(i + 1) != "native":
                raise ValueError(f"backend:{tokens[i + 2]} is not modelled; only the native caching allocator is")
        elif key == "roundup_power2_divisions":
            value_at(i + 1)
            fields["roundup_power2_divisions"], last = _parse_roundup(tokens, i + 2)
        elif key == "large_segment_size_mb" or key in _IGNORED_KEYS:  # read above / no effect on the device
            value_at(i + 1)
        else:
            raise ValueError(f"unrecognized key {key!r} in allocator config")
        i = last + 1
        if i < len(tokens):
            if tokens[i] != ",":
                raise ValueError(f"expected ',' in allocator config, got {tokens[i]!r}")
            i += 1
    if throw_on_oom and fraction < 1.0:
        raise ValueError("throw_on_cudamalloc_oom:True with a memory fraction is not modelled")
    return AllocatorConfig(**fields)  # type: ignore[arg-type]


DEFAULT_CONFIG = AllocatorConfig()


def round_size(nbytes: int, config: AllocatorConfig = DEFAULT_CONFIG) -> int:
    """round_size: at least kMinBlockSize, then 512-byte multiples or the next power-of-2 division."""
    if nbytes < K_MIN_BLOCK_SIZE:
        return K_MIN_BLOCK_SIZE
    divisions = config.divisions(nbytes)
    if divisions > 1 and nbytes > K_MIN_BLOCK_SIZE * divisions:
        # roundup_power2_next_division: split [2^k, 2^(k+1)) into `divisions` equal steps
        if _is_power_of_2(nbytes):
            return nbytes
        floor = 1 << (nbytes.bit_length() - 1)
        step = floor >> (divisions.bit_length() - 1)
        if step == 0:
            return floor << 1
        rounded = nbytes & ~(step - 1)
        return nbytes if rounded == nbytes else rounded + step
    return -(-nbytes // K_MIN_BLOCK_SIZE) * K_MIN_BLOCK_SIZE


def allocation_size(size: int, config: AllocatorConfig = DEFAULT_CONFIG) -> int:
    """get_allocation_size: the cudaMalloc size used when no cached block can serve `size`."""
    if size <= K_SMALL_SIZE:
        return K_SMALL_BUFFER
    if size < K_MIN_LARGE_ALLOC:
        return config.large_segment_size
    return -(-size // K_ROUND_LARGE) * K_ROUND_LARGE


class OutOfMemory(Exception):
    """The allocator gave up: cudaMalloc failed even after every free cached segment was released."""

    def __init__(self, nbytes: int, alloc_size: int, allocated: int, reserved: int,
                 capacity: int | None, allowed: int | None) -> None:
        self.nbytes, self.alloc_size = nbytes, alloc_size
        self.allocated, self.reserved = allocated, reserved
        self.capacity, self.allowed = capacity, allowed
        limit = f"{capacity} bytes capacity" if allowed is None else f"{allowed} bytes allowed"
        super().__init__(f"CUDA out of memory: tried to allocate {alloc_size} bytes (request {nbytes}) with "
                         f"{limit}; {allocated} bytes allocated, {reserved - allocated} reserved but unallocated")


@dataclass(frozen=True)
class AllocatorStats:
    """Counters named after DeviceStats: *allocated* is allocated_bytes, *reserved* reserved_bytes."""

    allocated: int
    peak_allocated: int
    reserved: int
    peak_reserved: int
    segments: int
    peak_segments: int
    cuda_mallocs: int  # num_device_alloc: successful cudaMalloc calls
    cuda_frees: int  # num_device_free
    alloc_retries: int  # num_alloc_retries: reached "free all cached blocks and retry"
    ooms: int


class _Block:
    __slots__ = ("addr", "allocated", "gc_base", "next", "prev", "size", "small")

    def __init__(self, addr: int, size: int, small: bool) -> None:
        self.addr, self.size, self.small = addr, size, small
        self.allocated = False
        self.prev: _Block | None = None
        self.next: _Block | None = None
        self.gc_base = 0

    def is_split(self) -> bool:
        return self.prev is not None or self.next is not None


class CachingAllocator:
    """DeviceCachingAllocator for one device and one stream.

    `capacity` is what cudaMalloc can hand this process in all (None: unlimited).  It also stands
    for the device's total memory when ``per_process_memory_fraction`` < 1, since the source caps
    reserved bytes at fraction * totalGlobalMem.
    """

    def __init__(self, config: AllocatorConfig = DEFAULT_CONFIG, capacity: int | None = None) -> None:
        self.config, self.capacity = config, capacity
        self.allowed: int | None = None
        if config.per_process_memory_fraction < 1.0:
            if capacity is None:
                raise ValueError("per_process_memory_fraction < 1 needs a capacity (the device's total memory)")
            self.allowed = int(config.per_process_memory_fraction * capacity)
        self._mss = _SIZE_MAX if config.max_split_size is None else config.max_split_size
        rounding = config.max_non_split_rounding_size
        self._rounding = config.large_segment_size if rounding is None else rounding
        self._gc = self.allowed is not None and config.garbage_collection_threshold > 0.0
        # BlockPool::blocks, ordered by (size, address); small pool under True
        self._pools: dict[bool, list[tuple[int, int, _Block]]] = {True: [], False: []}
        self._free_block_calls = {True: 0, False: 0}  # get_free_blocks_call_count, for GC ages
        self._live: dict[int, _Block | None] = {}
        self._next_handle, self._next_addr = 1, 0
        self.allocated = self.peak_allocated = self.reserved = self.peak_reserved = 0
        self.segments = self.peak_segments = 0
        self.cuda_mallocs = self.cuda_frees = self.alloc_retries = self.ooms = 0

    def malloc(self, nbytes: int) -> int:
        """Serve `nbytes` as DeviceCachingAllocator::malloc does; returns a handle for free()."""
        if nbytes < 0:
            raise ValueError(f"negative allocation size {nbytes}")
        handle, self._next_handle = self._next_handle, self._next_handle + 1
        if nbytes == 0:  # NativeCachingAllocator::allocate hands out a null pointer, no block
            self._live[handle] = None
            return handle
        size = round_size(nbytes, self.config)
        small = size <= K_SMALL_SIZE
        alloc_size = allocation_size(size, self.config)
        block = self._get_free_block(size, small)
        if block is None:
            if self._gc:
                self._garbage_collect()
            block = self._alloc_block(alloc_size, small, retry=False)
            if block is None and self._release_available_cached_blocks(size, small):
                block = self._alloc_block(alloc_size, small, retry=False)
            if block is None:
                self._release_cached_blocks()
                block = self._alloc_block(alloc_size, small, retry=True)
            if block is None:
                self.ooms += 1
                raise OutOfMemory(nbytes, alloc_size, self.allocated, self.reserved, self.capacity, self.allowed)
        self._live[handle] = self._alloc_found_block(block, size)
        return handle

    def free(self, handle: int) -> None:
        """free + free_block: the block goes back to its pool, merged with free neighbours."""
        try:
            block = self._live.pop(handle)
        except KeyError:
            raise ValueError(f"unknown or already freed handle {handle}") from None
        if block is None:
            return
        block.allocated = False
        self.allocated -= block.size
        for neighbour in (block.prev, block.next):
            self._try_merge(block, neighbour)
        self._insert(block)

    def empty_cache(self) -> None:
        """torch.cuda.empty_cache: release_cached_blocks, which frees only whole free segments."""
        self._release_cached_blocks()

    def reset_peak_stats(self) -> None:
        """resetPeakStats: peaks restart from the current figures."""
        self.peak_allocated, self.peak_reserved, self.peak_segments = self.allocated, self.reserved, self.segments

    def stats(self) -> AllocatorStats:
        """A frozen copy, so a caller's figures do not move as replay goes on."""
        return AllocatorStats(self.allocated, self.peak_allocated, self.reserved, self.peak_reserved, self.segments,
                              self.peak_segments, self.cuda_mallocs, self.cuda_frees, self.alloc_retries, self.ooms)

    # --- pool bookkeeping -------------------------------------------------------------------------

    def _insert(self, block: _Block) -> None:
        block.gc_base = self._free_block_calls[block.small]  # BlockPool::insert_into_blocks
        bisect.insort(self._pools[block.small], (block.size, block.addr, block))

    def _remove(self, block: _Block) -> None:
        pool = self._pools[block.small]
        i = bisect.bisect_left(pool, (block.size, block.addr))
        assert pool[i][2] is block
        del pool[i]

    def _get_free_block(self, size: int, small: bool) -> _Block | None:
        """get_free_block: best fit (smallest, then lowest address), with the max_split_size limits."""
        pool = self._pools[small]
        if self._gc:
            self._free_block_calls[small] += 1
        i = bisect.bisect_left(pool, (size, -1))
        if i == len(pool):
            return None
        block = pool[i][2]
        if size < self._mss <= block.size:  # never hand an oversize block to a splittable request
            return None
        if size >= self._mss and block.size >= size + self._rounding:  # oversize: round up only so far
            return None
        del pool[i]
        return block

    def _should_split(self, block: _Block, size: int) -> bool:
        """should_split: small remainders down to 512 B are reusable; large ones only above 1 MiB."""
        remaining = block.size - size
        if block.small:
            return remaining >= K_MIN_BLOCK_SIZE
        return size < self._mss and remaining > K_SMALL_SIZE

    def _alloc_found_block(self, block: _Block, size: int) -> _Block:
        """alloc_found_block: split the front off when should_split says so; the rest stays cached."""
        if self._should_split(block, size):
            front = _Block(block.addr, size, block.small)
            front.prev, front.next = block.prev, block
            if block.prev is not None:
                block.prev.next = front
            block.prev = front
            block.addr += size
            block.size -= size
            self._insert(block)
            block = front
        block.allocated = True
        self.allocated += block.size
        self.peak_allocated = max(self.peak_allocated, self.allocated)
        return block

    def _try_merge(self, dst: _Block, src: _Block | None) -> None:
        """try_merge_blocks: a free neighbour in the same segment is absorbed, undoing an old split."""
        if src is None or src.allocated:
            return
        self._remove(src)
        if dst.prev is src:
            dst.addr, dst.prev = src.addr, src.prev
            if dst.prev is not None:
                dst.prev.next = dst
        else:
            dst.next = src.next
            if dst.next is not None:
                dst.next.prev = dst
        dst.size += src.size

    # --- segments ---------------------------------------------------------------------------------

    def _alloc_block(self, alloc_size: int, small: bool, retry: bool) -> _Block | None:
        """alloc_block: the memory-fraction cap first, then cudaMalloc against the capacity."""
        if retry:
            self.alloc_retries += 1
        if self.allowed is not None and self.reserved + alloc_size > self.allowed:
            return None
        if self.capacity is not None and self.reserved + alloc_size > self.capacity:
            return None
        block = _Block(self._next_addr, alloc_size, small)
        self._next_addr += alloc_size
        self.reserved += alloc_size
        self.segments += 1
        self.cuda_mallocs += 1
        self.peak_reserved = max(self.peak_reserved, self.reserved)
        self.peak_segments = max(self.peak_segments, self.segments)
        return block

    def _release_block(self, block: _Block) -> None:
        """release_block: cudaFree takes whole segments only, so only unsplit blocks come here."""
        assert not block.is_split(), "only whole segments go back to the driver"
        self._remove(block)
        self.reserved -= block.size
        self.segments -= 1
        self.cuda_frees += 1

    def _release_available_cached_blocks(self, size: int, small: bool) -> bool:
        """release_available_cached_blocks: with max_split_size set, free just enough oversize blocks.

        One cached block of at least max(size, max_split_size) if there is one, else oversize blocks
        from the largest down until their sizes add up to that figure.
        """
        if self.config.max_split_size is None:
            return False
        pool = self._pools[small]
        key = max(size, self._mss)
        i = bisect.bisect_left(pool, (key, -1))
        if i < len(pool):
            self._release_block(pool[i][2])
            return True
        if i == 0:
            return False
        released, i = 0, i - 1
        while released < key and pool[i][0] >= self._mss:
            cur, first = pool[i][2], i == 0
            i -= 1
            released += cur.size
            self._release_block(cur)  # deleting above index i leaves pool[i] in place
            if first:
                break
        return released >= key

    def _release_cached_blocks(self) -> bool:
        """release_cached_blocks / release_blocks: free every cached block that is a whole segment."""
        for small in (False, True):
            for _, _, block in list(self._pools[small]):
                if not block.is_split():
                    self._release_block(block)
        return True

    def _garbage_collect(self) -> None:
        """garbage_collect_cached_blocks: above threshold * allowed, free the oldest whole large blocks.

        A block's age is the number of get_free_block calls on its pool since it was cached; rounds
        free every block at least as old as the average until enough bytes came back.
        """
        threshold = int(self.config.garbage_collection_threshold * (self.allowed or 0))
        if self.reserved <= threshold:
            return
        target = self.reserved - threshold
        calls = self._free_block_calls[False]
        whole = [b for _, _, b in self._pools[False] if not b.is_split()]
        total_age, count = sum(calls - b.gc_base for b in whole), len(whole)
        reclaimed, freed = 0, True
        while reclaimed < target and freed and count > 0:
            average = total_age / count
            freed = False
            for _, _, block in list(self._pools[False]):
                age = calls - block.gc_base
                if not block.is_split() and age >= average:
                    freed = True
                    reclaimed += block.size
                    total_age -= age
                    count -= 1
                    self._release_block(block)


def simulate(events: Iterable[tuple[str, int, int]], config: AllocatorConfig = DEFAULT_CONFIG,
             capacity: int | None = None) -> AllocatorStats:
    """Replay ``("malloc", key, nbytes)`` / ``("free", key, 0)`` events; OutOfMemory propagates."""
    allocator = CachingAllocator(config, capacity)
    handles: dict[int, int] = {}
    for op, key, nbytes in events:
        if op == "malloc":
            if key in handles:
                raise ValueError(f"key {key} allocated twice without a free")
            handles[key] = allocator.malloc(nbytes)
        elif op == "free":
            if key not in handles:
                raise ValueError(f"free of unknown key {key}")
            allocator.free(handles.pop(key))
        else:
            raise ValueError(f"unknown event {op!r}")
    return allocator.stats()
