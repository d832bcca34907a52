"""The figures burden reports: plain frozen data, and nothing live.

One record per layer, the totals of an analysis with the rules behind them in words, a
comparison of several, and the feature-extraction scale table. Nothing here counts or formats:
counting fills these records, ``burden.render`` turns them into text, JSON and HTML, and
``burden.results`` adds the convenience methods a notebook uses.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from functools import cached_property
from typing import Any

from .errors import UnknownLayerError
from .suggest import did_you_mean


@dataclass(frozen=True)
class LayerFigures:
    """One module's figures. ``params``, ``feature_bytes`` and ``flops`` include its submodules;
    the ``self_`` figures are its own: its direct parameters and the ops its ``forward`` runs
    outside any submodule. A parent's figure is the sum of its children's plus its own."""

    name: str  # module path; "" for the model itself
    type: str
    depth: int
    output_shape: Any  # nested lists of ints, as the module's output nests tensors; None if never called
    calls: int
    params: int
    param_bytes: int
    feature_bytes: int
    flops: int
    self_params: int
    self_param_bytes: int
    self_feature_bytes: int
    self_flops: int
    details: str = ""  # kernel, stride, padding, dilation, groups, channels or features, as in "k3 s2 64->128"
    call_output_shapes: tuple = ()  # the output shapes of every call, in order (output_shape is the first's)
    shared_params: int = 0  # parameters this module holds that another module holds too (tied): counted there
    bytes_moved: int = 0  # read and written by its ops (rulebook.TRAFFIC), its submodules' included
    self_bytes_moved: int = 0


@dataclass(frozen=True)
class UncountedOp:
    """An op the convention has no rule for: it counted 0 FLOPs, its output memory still counted."""

    op: str
    calls: int
    layers: tuple[str, ...]


@dataclass(frozen=True)
class LayerTime:
    """One module's roofline: its real FLOPs, the bytes its ops move, and the sum of their times
    (rulebook.LATENCY); submodules included."""

    name: str
    flops: int
    bytes_moved: int
    predicted_seconds: float
    bound: str  # "compute", "memory", or "" for a module whose ops do nothing

    @property
    def intensity(self) -> float | None:
        """FLOPs per byte moved; None when it moves nothing."""
        return self.flops / self.bytes_moved if self.bytes_moved else None

    @property
    def attained_flops(self) -> float | None:
        """FLOP/s if it ran at its predicted time."""
        return self.flops / self.predicted_seconds if self.predicted_seconds else None


@dataclass(frozen=True)
class LatencyFigures:
    """A roofline prediction of one forward pass on a device profile: a lower bound on time."""

    profile: str
    device: str  # what the profile describes, with where its figures come from
    dtype: str  # the dtype (or tfloat32, the tensor-core mode) whose peak most FLOPs use
    threads: int | None  # the CPU threads whose roofs were used; None for a GPU
    peak_flops: float  # that dtype's peak, FLOP/s
    bandwidth: float  # main memory, bytes/s
    cache_bytes: int
    cache_bandwidth: float
    flops: int  # real FLOPs (the roofline convention)
    bytes_moved: int
    predicted_seconds: float
    compute_seconds: float  # of which compute-bound ops
    memory_seconds: float  # of which memory-bound ops
    batch: int
    layers: tuple[LayerTime, ...]  # in the order of EstimateFigures.layers
    uncounted_ops: tuple[UncountedOp, ...] = ()  # no FLOP rule: their bytes still count
    rules: tuple[tuple[str, str], ...] = field(default=(), compare=False)

    @property
    def samples_per_second(self) -> float:
        return self.batch / self.predicted_seconds if self.predicted_seconds else float("inf")

    @property
    def bound(self) -> str:
        return "compute" if self.compute_seconds >= self.memory_seconds else "memory"

    @cached_property
    def _by_name(self) -> dict[str, LayerTime]:
        # the views look a layer up once per row: a scan each time would be quadratic in the layers
        return {record.name: record for record in self.layers}

    def layer(self, name: str) -> LayerTime | None:
        return self._by_name.get(name)


@dataclass(frozen=True)
class ModuleTime:
    """One top-level module's measured time per pass, beside its roofline bound."""

    name: str
    type: str
    median_seconds: float
    predicted_seconds: float | None
    efficiency: float | None  # predicted / measured: the fraction of the bound the real kernels reach


@dataclass(frozen=True)
class BenchFigures:
    """Measured forward passes of the real model (random weights), with the roofline beside them."""

    model: str
    input: tuple[int, ...]
    batch: int
    dtype: str
    device: str  # "cpu" or "cuda"
    device_name: str  # the processor and its threads, or the GPU
    threads: int | None
    median_seconds: float  # per forward pass
    iqr_seconds: float  # the spread: interquartile range of the timed blocks
    min_seconds: float
    max_seconds: float
    runs: int  # timed blocks
    calls_per_run: int  # forward passes per block
    predicted_seconds: float | None  # the roofline bound on the profile, None without one
    profile: str | None  # the profile it came from
    modules: tuple[ModuleTime, ...]  # the model's top-level modules, measured with forward hooks
    peak_bytes: int  # what burden predicted the run holds: weights and peak features
    notes: tuple[str, ...] = ()

    @property
    def samples_per_second(self) -> float:
        return self.batch / self.median_seconds

    @property
    def efficiency(self) -> float | None:
        """predicted / measured: 1 would be a run at the roofline."""
        return self.predicted_seconds / self.median_seconds if self.predicted_seconds is not None else None


@dataclass(frozen=True)
class Collective:
    """One kind of collective in one rank's training step."""

    kind: str  # all-gather, reduce-scatter, all-reduce, broadcast, all-to-all
    calls: int
    sent_bytes: int  # the buffers the rank contributes (an all-gather's input, a reduce-scatter's input)
    received_bytes: int  # the buffers the rank gets (an all-gather's output, a reduce-scatter's output)
    wire_bytes: int  # what a ring algorithm sends from the rank: (n-1)/n of the whole, twice for all-reduce


@dataclass(frozen=True)
class ShardedFigures:
    """The plan one rank's training step was traced under, and what its collectives moved."""

    world_size: int
    rank: int
    fsdp: bool
    tensor_parallel: int
    units: tuple[str, ...]  # the modules FSDP wrapped ("" the root)
    collectives: tuple[Collective, ...]
    communication_seconds: float | None = None  # wire bytes over the profile's interconnect, if it has one

    @property
    def sent_bytes(self) -> int:
        return sum(c.sent_bytes for c in self.collectives)

    @property
    def received_bytes(self) -> int:
        return sum(c.received_bytes for c in self.collectives)

    @property
    def wire_bytes(self) -> int:
        return sum(c.wire_bytes for c in self.collectives)

    @property
    def data_parallel(self) -> int:
        """Ranks that each take their own batch (the tensor-parallel ones share one)."""
        return self.world_size // self.tensor_parallel

    @property
    def plan(self) -> str:
        parts = []
        if self.fsdp:
            blocks = len(self.units) - 1
            parts.append(f"FSDP2 over {self.data_parallel} ranks ({blocks} blocks and the root)")
        if self.tensor_parallel > 1:
            parts.append(f"tensor parallel {self.tensor_parallel}")
        return " x ".join(parts) + f"; rank {self.rank} of {self.world_size}, traced"


@dataclass(frozen=True)
class TrainingFigures:
    """One whole training step, in the steady state: what it holds (bytes) and what it costs (FLOPs).

    The step is ``grad_accum`` micro-batches of forward and backward (from ``loss``), then
    ``optimizer.step()`` and ``zero_grad(set_to_none=True)``; the optimizer's state exists from the
    step before. Held throughout: ``param_bytes``, ``optimizer_bytes`` (the optimizer's own state
    tensors, as its code made them) and ``input_bytes`` (the batch). On top of them come the
    gradients, saved activations and temporaries as eager PyTorch allocates and frees them.
    ``forward_peak_bytes``, ``backward_peak_bytes`` and ``optimizer_step_peak_bytes`` are the
    most held during each phase, everything included; ``training_peak_bytes`` is the highest of
    them, reached in ``peak_phase`` at ``peak_op``, and ``peak_parts`` says what it holds.
    """

    optimizer: str  # the optimizer's class, as built
    optimizer_impl: str  # single, foreach or fused; "" where the optimizer has one implementation
    grad_accum: int  # micro-batches per optimizer step
    loss: str  # where the backward starts: the model's loss, its scalar output, or the sum of its outputs
    param_bytes: int
    gradient_bytes: int
    optimizer_bytes: int
    input_bytes: int
    saved_activation_bytes: int  # what autograd holds for backward when the (first) forward ends
    forward_peak_bytes: int
    backward_peak_bytes: int
    optimizer_step_peak_bytes: int
    training_peak_bytes: int
    peak_phase: str  # "forward", "backward" or "optimizer step" (with its micro-batch under accumulation)
    peak_op: PeakOp | None
    peak_parts: tuple[tuple[str, int], ...]  # (what, bytes) at the peak, summing to training_peak_bytes
    forward_flops: int  # the forwards of the step, in training mode (batch statistics, dropout on)
    backward_flops: int  # the backwards of the step, the recomputation of checkpointed modules included
    backward_uncounted_ops: tuple[UncountedOp, ...]
    forward_uncounted_ops: tuple[UncountedOp, ...] = ()
    backward_flops_by_module: tuple[tuple[str, int], ...] = ()  # (module path, its own backward FLOPs), nonzero
    # activation checkpointing (``checkpoint=``): the modules run again in backward, the FLOPs of
    # that recomputation, the most held while it runs and the training peak the same step has
    # without checkpointing
    checkpointed: tuple[str, ...] = ()
    recompute_flops: int = 0
    recompute_peak_bytes: int = 0
    unchecked_peak_bytes: int = 0
    reserved_bytes: int = 0  # on the CUDA target: the caching allocator's most reserved, simulated; else 0
    sharding: ShardedFigures | None = None  # one rank of a sharded step: its plan and collectives


@dataclass(frozen=True)
class PeakOp:
    """Where live memory peaks: the op's position in the run, its name and its module."""

    index: int  # position in the trace's events
    op: str  # aten.convolution
    module: str  # module path; "" for the model's own forward


@dataclass(frozen=True)
class EstimateFigures:
    """The burden of one model at one input size, batch size and dtype, under one convention,
    with the rules that produced it."""

    model: str
    input: tuple[int, ...]  # per-sample shape, [C, H, W] for images
    batch: int
    dtype: str
    convention: str
    memory_convention: str
    params: int
    trainable_params: int
    param_bytes: int
    feature_bytes: int
    flops: int
    layers: tuple[LayerFigures, ...]
    uncounted_ops: tuple[UncountedOp, ...]
    # inference peak: the most feature memory live at once when buffers are freed as eager
    # PyTorch frees them, the op where it is reached, and parameters + that peak
    peak_feature_bytes: int = 0
    peak_op: PeakOp | None = None
    peak_bytes: int = 0  # held_bytes + input_bytes + peak_feature_bytes
    held_bytes: int = 0  # parameters and buffers (integer ones too) as the target holds them
    input_bytes: int = 0  # the input batch, which lives on the device through the pass
    # on the CUDA target: the caching allocator's most reserved memory (max_memory_reserved), simulated,
    # and the CUDA context beside it (0 elsewhere)
    reserved_bytes: int = 0
    context_bytes: int = 0
    mode: str = "inference"
    training: TrainingFigures | None = None  # with mode="training"
    # the rules in words, as every view shows them; not part of equality, which compares figures
    convention_summary: str = field(default="", compare=False)
    rules: tuple[tuple[str, str], ...] = field(default=(), compare=False)  # (what, how it counts)
    memory_summary: str = field(default="", compare=False)
    # where the pass was traced, and what the reader must know about how the figures were obtained
    device: str = field(default="meta", compare=False)
    notes: tuple[str, ...] = field(default=(), compare=False)
    # live feature memory after each op (for charts), and the stages along it: (index of the first
    # op, the depth-1 module that op belongs to, "" for the model's own forward), one per run of ops
    live_curve: tuple[int, ...] = field(default=(), compare=False, repr=False)
    live_stages: tuple[tuple[int, str], ...] = field(default=(), compare=False, repr=False)
    # the model's name when burden can load it again (a registered name or a factory path); None
    # for an nn.Module, which an estimate never holds
    # mixed precision: the low precision of torch.autocast's policy in the forward ("bfloat16"), or None
    amp: str | None = None
    # how the peaks count bytes when not as the CPU allocator does: the CUDA allocator, a ZeRO device
    accounting: str = ""
    bytes_moved: int = 0  # read and written by every op (rulebook.TRAFFIC)
    latency: LatencyFigures | None = None  # with a device profile: the roofline prediction
    source: str | None = field(default=None, compare=False, repr=False)

    def layer(self, name: str) -> LayerFigures:
        """One layer's record by module path (``""`` for the model itself)."""
        for record in self.layers:
            if record.name == name:
                return record
        hint = did_you_mean(name, [r.name for r in self.layers], otherwise="the names are the module paths in e.layers")
        raise UnknownLayerError(f"the model has no layer {name!r}{hint}")


@dataclass(frozen=True)
class BatchPeak:
    """The predicted peak at one batch size; ``traced``: measured by a trace, not extrapolated."""

    batch: int
    peak_bytes: int
    traced: bool
    fits: bool = True  # within the budget (on CUDA: the allocator never runs out; predicted where not traced)


@dataclass(frozen=True)
class FitFigures:
    """The largest batch whose predicted peak fits a memory budget (``burden.fit``).

    ``peak_bytes`` is the peak at ``max_batch`` and ``next_peak_bytes`` that at ``max_batch + 1``,
    both from traces: the estimate's peak at that batch (the training step's for ``mode="training"``),
    the input batch included, to the byte. ``breakdown`` says what the peak at
    ``max_batch`` holds. ``max_batch`` is 0 when even batch 1 does not fit (``notes`` says why).
    """

    model: str
    input: tuple[int, ...]
    dtype: str
    mode: str
    optimizer: str | None  # None in inference
    budget_bytes: int
    max_batch: int  # per device and per micro-batch
    peak_bytes: int
    next_peak_bytes: int
    breakdown: tuple[tuple[str, int], ...]  # (what, bytes) at max_batch, summing to peak_bytes
    around: tuple[BatchPeak, ...]  # peaks at batch sizes around the answer
    traces: int  # how many traces the search took
    notes: tuple[str, ...] = ()
    checkpointed: tuple[str, ...] = ()  # modules under activation checkpointing
    amp: str | None = None  # mixed precision's low precision, or None
    accounting: str = ""  # how bytes are counted when not as the CPU allocator does
    optimizer_impl: str = ""  # single, foreach or fused
    grad_accum: int = 1  # micro-batches per optimizer step
    effective_batch: int = 0  # max_batch x grad_accum x world_size: the samples each optimizer step sees
    peak_phase: str = ""  # where the step at max_batch peaks
    # on the CUDA target: what the caching allocator reserves at max_batch (simulated), and the CUDA
    # context beside it; the answer is the largest batch whose run never runs out of budget - context
    reserved_bytes: int = 0
    context_bytes: int = 0
    sharding: ShardedFigures | None = None  # a sharded step: its plan and collectives at max_batch


@dataclass(frozen=True)
class GenerationPhase:
    """One phase of a generation (the prefill, or the last decode step): the most held while it
    ran (weights, cache, activations, logits), its FLOPs under the convention, the bytes its ops
    move, and with a device profile its roofline time."""

    peak_bytes: int
    flops: int
    bytes_moved: int
    reserved_bytes: int = 0  # on the CUDA target: the caching allocator's most reserved, simulated
    latency: LatencyFigures | None = None


@dataclass(frozen=True)
class GenerateFigures:
    """A causal language model's ``generate()``: ``batch`` sequences of ``prompt`` tokens, each
    given ``new_tokens`` more, greedy, with the model's own KV cache (``burden.generate``).

    ``kv_cache_bytes`` is the cache at the end (``prompt + new_tokens - 1`` tokens: the last token
    is produced, not fed back; a static cache is made that long), every tensor once;
    ``kv_cache_bytes_per_token`` that over the batch and ``cached_tokens``. ``peak_bytes`` is the
    higher of the two phases' peaks. ``decode`` is None with
    one new token: the prefill makes it."""

    model: str
    batch: int
    prompt: int
    new_tokens: int
    dtype: str
    cache: str  # "dynamic" (the model's own choice) or "static"
    convention: str
    params: int
    param_bytes: int  # the weights and buffers as the device holds them
    input_bytes: int  # the prompt's ids and attention mask
    kv_cache_bytes: int
    kv_cache_bytes_per_token: int
    prefill: GenerationPhase
    decode: GenerationPhase | None
    peak_bytes: int
    context_bytes: int = 0  # on the CUDA target: the CUDA context beside the allocator
    accounting: str = ""
    notes: tuple[str, ...] = field(default=(), compare=False)

    @property
    def cached_tokens(self) -> int:
        """The tokens of each sequence the cache holds at the end (a static cache is made that long)."""
        return self.prompt + self.new_tokens - 1

    @property
    def time_to_first_token_seconds(self) -> float | None:
        """The prefill's roofline time (a lower bound), with a device profile."""
        return self.prefill.latency.predicted_seconds if self.prefill.latency is not None else None

    @property
    def seconds_per_output_token(self) -> float | None:
        """The last decode step's roofline time, the longest of all steps (a lower bound)."""
        latency = (self.decode or self.prefill).latency
        return latency.predicted_seconds if latency is not None else None

    @property
    def tokens_per_second(self) -> float | None:
        """New tokens a second over the batch, at the last step's pace."""
        seconds = self.seconds_per_output_token
        return self.batch / seconds if seconds else None


@dataclass(frozen=True)
class GenerateBenchFigures:
    """A real ``generate()`` with random weights, timed (``burden.bench_generate``): time to first
    token (median of one-token generations) and the mean decode step, beside the prediction."""

    model: str
    batch: int
    prompt: int
    new_tokens: int
    dtype: str
    device: str
    device_name: str
    threads: int | None
    time_to_first_token_seconds: float
    seconds_per_output_token: float  # the mean decode step
    predicted: GenerateFigures | None  # with a device profile
    profile: str | None
    notes: tuple[str, ...] = ()

    @property
    def tokens_per_second(self) -> float:
        return self.batch / self.seconds_per_output_token if self.seconds_per_output_token else float("inf")

    @property
    def prefill_efficiency(self) -> float | None:
        """Predicted / measured time to first token."""
        p = self.predicted
        return p.time_to_first_token_seconds / self.time_to_first_token_seconds if p is not None else None

    @property
    def decode_efficiency(self) -> float | None:
        """Predicted (the last step's) / measured (the mean step's) time per token."""
        p = self.predicted
        if p is None or not self.seconds_per_output_token:
            return None
        return p.seconds_per_output_token / self.seconds_per_output_token


@dataclass(frozen=True)
class GenerateFitFigures:
    """The largest batch (``search="batch"``) or the longest prompt (``search="prompt"``) whose
    generation fits a memory budget (``burden.fit_generate``), confirmed by traces: the answer
    fits, the next size does not. ``generation`` is the answer's figures (None when even size 1
    does not fit)."""

    model: str
    budget_bytes: int
    search: str
    batch: int  # the answer when searching the batch
    prompt: int  # the answer when searching the prompt
    new_tokens: int
    peak_bytes: int
    next_peak_bytes: int | None  # the next size's peak, as traced
    generation: GenerateFigures | None
    traces: int  # generate() runs traced
    reserved_bytes: int = 0  # on the CUDA target: the most the caching allocator reserves within the budget
    context_bytes: int = 0
    accounting: str = ""
    notes: tuple[str, ...] = field(default=(), compare=False)

    @property
    def answer(self) -> int:
        return self.batch if self.search == "batch" else self.prompt


@dataclass(frozen=True)
class ComparisonFigures:
    """Several models' estimates under the same settings: the reference table's shape. With
    ``fits`` (one ``FitFigures`` per estimate, same budget), the table ranks the models by the
    largest batch that fits."""

    estimates: tuple[EstimateFigures, ...]
    fits: tuple["FitFigures", ...] = ()
    benches: tuple[BenchFigures, ...] = ()  # with bench=True: each model's measured forward pass


@dataclass(frozen=True)
class ScaleRow:
    scale: float
    input: tuple[int, ...]  # [C, H, W]
    output_shape: Any  # the trunk's output shape, batch first; None when the size does not fit
    feature_bytes: int | None
    flops: int | None
    error: str | None  # why the network cannot take this size

    @property
    def fits(self) -> bool:
        return self.error is None


@dataclass(frozen=True)
class ScaleFigures:
    """The feature-extraction table: a trunk's output and cost over a range of input sizes."""

    model: str
    batch: int
    trunk: str
    dtype: str
    convention: str
    rows: tuple[ScaleRow, ...]


# --- burden check: each convention beside the tools it claims to equal -------------------------

@dataclass(frozen=True)
class ToolCount:
    tool: str
    total: int
    by_module: dict[str, int]  # module path -> FLOPs including submodules


@dataclass(frozen=True)
class ConventionCheck:
    convention: str
    flops: int
    equals: str | None  # the tool this convention claims to reproduce
    tool_flops: int | None
    differences: tuple[tuple[str, int, int], ...]  # (module path, burden, tool) where they differ

    @property
    def agrees(self) -> bool:
        return self.equals is None or (self.flops == self.tool_flops and not self.differences)


@dataclass(frozen=True)
class CheckReport:
    model: str
    input: tuple[int, ...]
    batch: int
    checks: tuple[ConventionCheck, ...]
    tools: tuple[ToolCount, ...]

    @property
    def ok(self) -> bool:
        return all(c.agrees for c in self.checks)
