"""The library API: ``estimate`` one model, ``compare`` several, ``scale`` a trunk over input sizes.

A thin layer: ``burden.analysis`` does the work and returns plain figures; this module wraps them
in the result types users see and guarantees that nothing but a ``BurdenError`` leaves it. The
CLI is a thin layer over these functions.
"""

from __future__ import annotations

from typing import Any, Callable, Iterable, Mapping, Sequence

import torch
from torch import nn

from . import analysis, benchmark, calibration, devices, generation, generation_bench, planner, serving
from .accounting import accounting
from .autocast import amp_dtype
from .boundary import guarded
from .conventions import get_convention, get_memory_convention
from .devices import DeviceProfile, load as load_profile
from .errors import InputSpecError
from .inputs import parse_batch, parse_dtype, parse_input_size, parse_memory
from .machine import run_device
from .optimizers import OptimizerSpec, check_impl, factory
from .options import (DEFAULT_CONVENTION, DEFAULT_OPTIMIZER, DEFAULT_SCALE_BASE, DEFAULT_SCALE_BATCH, DEFAULT_SCALES,
                      MODES, ROUTINGS)
from .request import Request, Training, check_device, check_grad_accum, sharding
from .results import Bench, Comparison, Estimate, Fit, Generate, GenerateBench, GenerateFit, ScaleTable, as_estimate

def request(input_size: Any = (3, 224, 224), batch_size: Any = 1, *, dtype: Any = None,
            convention: str = DEFAULT_CONVENTION, device: Any = None, memory: str | None = None,
            formulas: Mapping[Any, Callable[..., int]] | None = None, check_memory: bool = True,
            progress: Callable[[str], None] | None = None, amp: Any = None, target: str = "cpu",
            world_size: int = 1, zero: int = 0, device_profile: str | DeviceProfile | None = None,
            mode: str = "inference", optimizer: OptimizerSpec = DEFAULT_OPTIMIZER, optimizer_impl: str | None = None,
            grad_accum: int = 1, seq: int | None = None, routing: str = ROUTINGS[0], shard: str | None = None,
            tensor_parallel: int = 1, shard_modules: Sequence[str] | str | None = None,
            tp_plan: Mapping[str, str] | str | None = None, rank: int = 0) -> Request:
    """The request that every layer below takes whole, each option checked once, here at the boundary,
    before any model is built or traced. ``seq`` (a sequence length) replaces ``input_size`` for a
    language model: its inputs are token ids and a mask; ``input_size=None`` is the model's own size,
    found once the model is known (``analysis.model_and_request``)."""
    rules = get_convention(convention).with_formulas(formulas or {})
    low = amp_dtype(amp)
    parsed = None if dtype is None else parse_dtype(dtype)
    if low is not None and parsed not in (None, torch.float32):
        raise InputSpecError("mixed precision keeps float32 weights: leave out --dtype (dtype=) with --amp (amp=)")
    if mode not in MODES:
        raise InputSpecError(f"unknown mode {mode!r}; choose inference or training")
    factory(optimizer)
    training = Training(optimizer, check_impl(optimizer_impl), check_grad_accum(grad_accum))
    profile = None if device_profile is None else load_profile(device_profile)
    if seq is not None:
        if isinstance(seq, bool) or not isinstance(seq, int) or seq < 1:
            raise InputSpecError(f"the sequence length must be a whole number from 1, got {seq!r}")
    if routing not in ROUTINGS:
        raise InputSpecError(f"unknown routing {routing!r}; choose {' or '.join(ROUTINGS)}")
    size = (seq,) if seq is not None else None if input_size is None else parse_input_size(input_size)
    plan = sharding(shard, world_size, zero, tensor_parallel, shard_modules, tp_plan, rank)
    if plan is not None and (low is not None or device not in (None, "meta")):
        raise InputSpecError("a sharded step is traced with fake tensors in PyTorch's own parallel code: leave out "
                             "--amp (amp=) and --device (device=) with --shard or --tensor-parallel")
    return Request(size=size, batch=parse_batch(batch_size), dtype=parsed, convention=rules,
                   memory=get_memory_convention(memory or rules.memory), device=check_device(device),
                   check_memory=check_memory, progress=progress, amp=low,
                   accounting=accounting(target, world_size, zero, profile), profile=profile, mode=mode,
                   training=training, tokens=seq is not None, routing=routing, sharding=plan)


@guarded
def estimate(model: nn.Module | str, input_size: int | str | Sequence[int] | None = None, *,
             batch_size: int = 1, dtype: str | torch.dtype | None = None, convention: str = DEFAULT_CONVENTION,
             memory: str | None = None, inputs: Any = None, device: str | None = None, mode: str = "inference",
             optimizer: str = DEFAULT_OPTIMIZER, formulas: Mapping[Any, Callable[..., int]] | None = None,
             check_memory: bool = True, progress: Callable[[str], None] | None = None,
             checkpoint: Sequence[str] | str | None = None, checkpoint_depth: int | None = None,
             amp: str | torch.dtype | None = None, target: str = "cpu", world_size: int = 1,
             zero: int = 0, device_profile: str | DeviceProfile | None = None, optimizer_impl: str | None = None,
             grad_accum: int = 1, seq: int | None = None, routing: str = ROUTINGS[0], shard: str | None = None,
             tensor_parallel: int = 1, shard_modules: Sequence[str] | str | None = None,
             tp_plan: Mapping[str, str] | str | None = None, rank: int = 0) -> Estimate:
    """Parameter memory, feature memory and FLOPs of ``model`` for one forward pass.

    ``model`` is an ``nn.Module`` or a name: ``burden.list_models()``, ``package.module:factory``,
    ``torchvision:NAME`` or ``timm:NAME``. ``input_size`` is the per-sample shape, ``(3, 224, 224)``,
    ``(224, 320)`` for an RGB image's height and width (as ``--input 224x320``), or ``224`` for a
    square one, and ``batch_size`` is prepended. Left out, it is the model's own: timm's
    ``pretrained_cfg["input_size"]``, the crop of torchvision's default weights, a registered
    model's own; 3 x 224 x 224 where the model does not say (``Estimate.input`` shows the size
    used). A Hugging Face config (a ``config.json`` path, a folder holding one, or ``hf:ORG/NAME``)
    is built on meta, never with weights. A language model takes ``seq`` instead, a sequence
    length: real ``input_ids`` and an attention mask of ones (and in training the ids as
    ``labels``, for the model's own loss). For models that take several
    inputs, keyword inputs or nested structures, pass ``inputs`` instead: a tuple of positional
    arguments, or a dict of keyword arguments (``{"args": (...), "kwargs": {...}}`` for both), whose
    tensors are example tensors, ``torch.Size`` shapes or ``burden.TensorSpec``; their shapes include
    the batch. ``dtype`` sets the bytes per floating-point value (default: the model's own parameter
    dtype). ``convention`` names the FLOP rules (``burden.list_conventions()``) and ``memory`` the
    feature-memory rules (default: the convention's own); ``formulas`` adds formulas for this call
    only, ``{op or module type: formula}``, taking precedence over the convention's (as
    ``FlopCounterMode``'s ``custom_mapping``). Every estimate also gives the inference peak (buffers
    freed as eager PyTorch frees them, the parameters, buffers and input batch held); the model runs
    in eval mode under ``no_grad`` for it. ``mode="training"`` adds one whole training step in train
    mode, in the steady state: forward, backward from the model's loss (a ``ModelOutput``'s ``loss``,
    or a one-element output; else a gradient of ones on every output), ``optimizer.step()`` and
    ``zero_grad``: saved activations, gradients, the optimizer's state and its step's temporaries
    (from ``torch.optim``'s own code), the step's peak, the phase that holds it, and the backward
    FLOPs. ``optimizer`` is a ``torch.optim`` name ("momentum" is SGD with momentum 0.9), an
    ``Optimizer`` class or a function ``params -> Optimizer``; ``optimizer_impl`` ("single",
    "foreach", "fused") overrides the implementation PyTorch would pick on the target (single-tensor
    on the CPU, foreach on CUDA); ``grad_accum`` micro-batches are accumulated before each step.
    ``checkpoint`` (module paths) or ``checkpoint_depth`` (every module that many
    levels down) runs those modules under non-reentrant ``torch.utils.checkpoint`` in the step: the
    training figures then give the peak with and without it, the peak while backward recomputes,
    and the recomputation's FLOPs (inside the backward FLOPs). ``amp="bf16"`` or ``"fp16"`` runs the
    forward as ``torch.autocast`` does on the CPU: matrix products and convolutions in the low
    precision (with the low-precision copies of the weights autocast keeps), the rest as their
    inputs come, float32 weights, gradients and optimizer state; features count at their own sizes.
    ``target="cuda"`` counts the peaks as ``torch.cuda.max_memory_allocated`` does (every tensor an
    allocation rounded up to 512 bytes, the cuBLAS workspace), simulates the caching allocator's
    reserved memory (``reserved_bytes``), and runs the attention kernel and autocast policy CUDA
    picks for the GPU that ``device_profile`` names (an H100 by default); ``world_size`` and
    ``zero`` (1, 2, 3) give one device's share of a training step under ZeRO sharding
    (``burden.accounting`` says what is not counted; ``docs/memory.md`` has the rules).
    ``shard="fsdp"`` with ``world_size`` traces one rank of a training step under PyTorch's FSDP2
    (``fully_shard`` on each block: a Hugging Face model's own, the modules ``shard_modules`` names by
    path or class, else the items of its lists of like blocks; then on the root), and ``tensor_parallel``
    (2 or more) applies PyTorch's tensor parallelism within groups of that many ranks, by the model's
    own plan (a Hugging Face config's) or ``tp_plan`` (module pattern -> colwise, rowwise, ...; a
    mapping or a JSON file). The step runs with fake tensors in a fake process group, as that rank
    (``rank``, 0 by default) runs it: ``training.sharding`` gives the plan and each kind of
    collective's calls and bytes; with a ``device_profile`` that has an interconnect, their time.
    ``world_size`` with ``zero`` instead is the quick arithmetic for DeepSpeed (docs/parallel.md).
    ``device_profile`` (a built-in name such as ``"a100"``, ``"local"`` after ``burden calibrate``,
    or a profile's JSON path) adds ``Estimate.latency``: each op's roofline time on that device,
    max(real FLOPs / peak, bytes moved / bandwidth), per layer and in total, with the samples/s it
    allows. It is a lower bound on time, not a promise (``burden bench`` measures the real one).
    ``routing="balanced"`` (the default) assumes that the choices a model makes from its weights and
    then reads (a mixture of experts' top-k, ``generate()``'s greedy token) are spread evenly, and
    says so in the notes (``burden.routing``); ``"refuse"`` assumes nothing, and such a model stops
    with ``DataDependentError`` on meta.

    ``device`` is where the pass is traced: by default the meta device (nothing allocated, any size),
    except for a model whose forward needs real values (``.item()``, ``nonzero``, boolean masks),
    which is traced on the CPU when that fits in half of the free memory, as ``Estimate.notes`` says;
    ``device="meta"`` never falls back, ``device="cpu"`` always runs real tensors. A CPU run that
    would hold more than half of the free memory (by a meta trace first) is refused unless
    ``check_memory=False``; ``progress`` (a function taking a line) hears how a long one is going.
    The model comes back as it was: same device, dtype, mode, flags, hooks and tensors.
    """
    req = request(input_size, batch_size, dtype=dtype, convention=convention, device=device, memory=memory,
                  formulas=formulas, check_memory=check_memory, progress=progress, amp=amp, target=target,
                  world_size=world_size, zero=zero, device_profile=device_profile, mode=mode, optimizer=optimizer,
                  optimizer_impl=optimizer_impl, grad_accum=grad_accum, seq=seq, routing=routing, shard=shard,
                  tensor_parallel=tensor_parallel, shard_modules=shard_modules, tp_plan=tp_plan, rank=rank)
    return as_estimate(analysis.estimate_figures(model, req, inputs, checkpoint, checkpoint_depth))


@guarded
def compare(models: Iterable[nn.Module | str], input_size: int | str | Sequence[int] | None = None, *,
            batch_size: int = 1, dtype: str | torch.dtype | None = None, convention: str = DEFAULT_CONVENTION,
            memory: str | None = None, device: str | None = None, inputs: Any = None,
            formulas: Mapping[Any, Callable[..., int]] | None = None,
            fit_memory: str | int | None = None, device_profile: str | DeviceProfile | None = None,
            bench_device: str | None = None, seq: int | None = None) -> Comparison:
    """``estimate`` each model under the same settings, as one table (the reference table's shape);
    ``seq`` gives language models their token inputs, as in ``estimate``.

    With ``fit_memory`` (a budget such as ``"24GiB"``), each model also gets ``burden.fit`` at that budget
    (a training step with Adam, the same input and dtype), and the table ranks the models by the
    largest batch that fits. ``device_profile`` adds each model's predicted (roofline) time and
    samples/s; ``bench_device`` ("cpu" or "cuda") runs each model there (``burden.bench``) and adds
    the measured time, samples/s and efficiency."""
    models = list(models)
    if not models:
        raise InputSpecError("compare needs at least one model")
    # every argument checked before the first model is built
    request(input_size, batch_size, dtype=dtype, convention=convention, device=device, memory=memory,
            formulas=formulas, device_profile=device_profile)
    if fit_memory is not None:
        parse_memory(fit_memory)
    estimates = tuple(estimate(m, input_size, batch_size=batch_size, dtype=dtype, convention=convention,
                               memory=memory, device=device, inputs=inputs, formulas=formulas,
                               device_profile=device_profile, seq=seq) for m in models)
    fits = tuple(fit(m, fit_memory, input_size, inputs=inputs, dtype=dtype, seq=seq)
                 for m in models) if fit_memory else ()
    benches = tuple(bench(m, input_size, batch_size=batch_size, inputs=inputs, seq=seq, dtype=dtype,
                          device=bench_device, device_profile=device_profile, per_module=False)
                    for m in models) if bench_device else ()
    return Comparison(estimates, fits, benches)


@guarded
def bench(model: nn.Module | str, input_size: int | str | Sequence[int] | None = None, *, batch_size: int = 1,
          inputs: Any = None, dtype: str | torch.dtype | None = None, device: str = "cpu",
          device_profile: str | DeviceProfile | None = None, min_run_time: float = 1.0,
          per_module: bool = True, seq: int | None = None) -> Bench:
    """Run ``model`` for real, with random weights, and time its forward pass beside its roofline.

    ``model``, ``input_size``, ``batch_size``, ``inputs``, ``seq`` and ``dtype`` are as in ``estimate``;
    ``device`` is "cpu" or "cuda". After warm-up passes, ``torch.utils.benchmark`` times blocks of
    passes for at least ``min_run_time`` seconds (CUDA synchronised, the process's thread count
    kept): ``Bench`` has the median, the interquartile range, samples/s and, with a device profile
    (``device_profile``; by default ``local`` on a CPU once ``burden calibrate`` has run, the data
    sheet of the GPU at hand on CUDA), efficiency = predicted / measured, in total and, with
    ``per_module``, per top-level module (timed with forward hooks). The run is refused before
    anything is built when burden's peak says it would not fit in free memory. A module the user
    passes is left as it was (a copy runs where it must move or change dtype).
    """
    device = run_device(device, "bench")
    benchmark.check_run_time(min_run_time)
    req = request(input_size, batch_size, dtype=dtype, convention="torch", device="meta", seq=seq,
                  device_profile=device_profile or benchmark.default_profile(device),
                  target="cuda" if device == "cuda" else "cpu")
    return Bench(**vars(benchmark.bench_figures(model, req, inputs, device, min_run_time, per_module)))


@guarded
def calibrate(name: str = "local", *, device: str = "cpu", dtypes: Sequence[str] | None = None,
              threads: Sequence[int] | None = None, quick: bool = False,
              progress: Callable[[str], None] | None = None) -> DeviceProfile:
    """Measure this machine's roofs and store them as the device profile ``name`` (default
    ``local``), for ``device_profile=``. Peak FLOP/s per dtype from matrix products of growing size,
    bandwidth from a large copy and a cache roof from small ones; on a CPU per thread count
    (default 1 and all of this process's threads). Stored as JSON under ``$BURDEN_HOME/profiles``
    or ``~/.config/burden/profiles``; ``quick`` measures small problems only (a rough profile)."""
    profile = calibration.calibrate(name, device=device, dtypes=dtypes, threads=threads, quick=quick, say=progress)
    devices.save(profile)
    return profile


@guarded
def scale(model: nn.Module | str, scales: str | Sequence[float] = DEFAULT_SCALES, *,
          batch_size: int = DEFAULT_SCALE_BATCH, trunk: str | None = None, base: int = DEFAULT_SCALE_BASE,
          channels: int = 3, dtype: str | torch.dtype | None = None,
          convention: str = DEFAULT_CONVENTION) -> ScaleTable:
    """The feature-extraction table: for inputs of ``base x scale`` pixels, the shape of ``trunk``'s
    output and the feature memory and FLOPs of computing it for the whole batch.

    A size the network cannot take gives a row whose ``error`` says why, not an exception.
    """
    figures = analysis.scale_figures(model, scales, batch_size, trunk, base, channels, dtype, convention)
    return ScaleTable(**vars(figures))


@guarded
def fit(model: nn.Module | str, memory: int | str, input_size: int | str | Sequence[int] | None = None, *,
        inputs: Any = None, mode: str = "training", optimizer: str = DEFAULT_OPTIMIZER,
        dtype: str | torch.dtype | None = None, convention: str = DEFAULT_CONVENTION,
        checkpoint: Sequence[str] | str | None = None, checkpoint_depth: int | None = None,
        amp: str | torch.dtype | None = None, target: str = "cpu", world_size: int = 1, zero: int = 0,
        optimizer_impl: str | None = None, grad_accum: int = 1,
        device_profile: str | DeviceProfile | None = None, seq: int | None = None, routing: str = ROUTINGS[0],
        shard: str | None = None, tensor_parallel: int = 1, shard_modules: Sequence[str] | str | None = None,
        tp_plan: Mapping[str, str] | str | None = None) -> Fit:
    """The largest batch whose predicted peak fits in ``memory`` (``"24GiB"``, ``"24GB"``, bytes).

    ``model``, ``input_size``, ``inputs`` (their leading dimension is the batch, which the search
    sets), ``seq``, ``dtype``, ``mode`` (training by default), ``optimizer``, ``optimizer_impl`` and
    ``grad_accum`` are as in ``estimate``; under accumulation the answer is the micro-batch, and
    ``Fit.effective_batch`` the samples each optimizer step sees. The peak is the estimate's at that
    batch (the training step's in training), to the byte. The search
    traces batch 1 to predict the answer from each op's live bytes, which are affine in the batch
    for almost every model, and traces the answer and the answer + 1 to confirm it: three traces,
    more only where a prediction was off. ``Fit`` has the answer, its peak and the next batch's,
    what the peak holds, and the peaks around it. ``checkpoint``, ``checkpoint_depth``, ``amp``,
    ``target``, ``world_size``, ``zero``, ``device_profile``, ``routing``, ``shard``, ``tensor_parallel``,
    ``shard_modules`` and ``tp_plan`` are as in ``estimate``; with ZeRO or a sharded step the batch is per
    rank (rank 0 is traced). On the CUDA target the answer is the largest batch whose run never exhausts
    ``memory`` less the CUDA context (the profile's, or 512 MiB), the caching allocator simulated.
    """
    budget = parse_memory(memory)
    req = request(input_size, 1, dtype=dtype, convention=convention, device="meta", amp=amp, target=target,
                  world_size=world_size, zero=zero, mode=mode, optimizer=optimizer, optimizer_impl=optimizer_impl,
                  grad_accum=grad_accum, device_profile=device_profile, seq=seq, routing=routing, shard=shard,
                  tensor_parallel=tensor_parallel, shard_modules=shard_modules, tp_plan=tp_plan)
    return Fit(**vars(planner.fit_figures(model, budget, req, inputs, checkpoint, checkpoint_depth)))


@guarded
def generate(model: nn.Module | str, prompt: int, new_tokens: int, *, batch_size: int = 1,
             dtype: str | torch.dtype | None = None, convention: str = DEFAULT_CONVENTION, cache: str = "dynamic",
             target: str = "cpu", device_profile: str | DeviceProfile | None = None,
             routing: str = ROUTINGS[0]) -> Generate:
    """A causal language model's ``generate()``: ``batch_size`` prompts of ``prompt`` tokens, each
    given ``new_tokens`` more, greedy, with the model's own KV cache.

    ``model`` is a Hugging Face causal LM: an ``nn.Module``, or a config (a ``config.json`` path, a
    folder holding one, or ``hf:ORG/NAME``) built on meta. The model's own ``generate()`` runs on
    meta stand-ins of the weights, with real token ids and masks (``burden.tokens``): the prefill,
    and the last decode step, at the longest context (two traces, whatever ``new_tokens``). The
    cache is the class the model picks, or with ``cache="static"`` a static one. ``Generate`` has
    the weights, the KV cache at the end (``prompt + new_tokens - 1`` tokens: the last token is
    produced, not fed back) and per token, each phase's peak (weights, cache, activations, logits),
    FLOPs under ``convention`` and bytes moved, and the whole run's peak. ``dtype`` runs the model
    in that dtype (default: its own). ``target``, ``device_profile`` and ``routing`` (the greedy
    token, a mixture of experts' choices) are as in ``estimate``:
    with a profile, time to first token, time per output token and tokens/s are roofline lower
    bounds on that device, and each layer is compute- or memory-bound in each phase.
    """
    req = request((1,), batch_size, dtype=dtype, convention=convention, device="meta", target=target,
                  device_profile=device_profile, routing=routing)
    name, module = analysis.model_to_analyse(model)
    return Generate(**vars(generation.generate_figures(name, module, req, prompt, new_tokens, cache)))


@guarded
def fit_generate(model: nn.Module | str, memory: int | str, prompt: int | None, new_tokens: int, *,
                 batch_size: int | None = None, dtype: str | torch.dtype | None = None, cache: str = "dynamic",
                 target: str = "cpu", device_profile: str | DeviceProfile | None = None,
                 routing: str = ROUTINGS[0]) -> GenerateFit:
    """The largest batch whose ``generate()`` of ``prompt`` + ``new_tokens`` tokens fits in
    ``memory`` (``"80GiB"``, bytes); with ``batch_size``, the longest prompt that fits at that batch
    (up to the model's ``max_position_embeddings``; ``prompt`` is then not needed). ``model``,
    ``dtype``, ``cache``, ``target``, ``device_profile`` and ``routing`` are as in ``generate``. Each size is a
    traced generation; the answer and the
    next size are traced to confirm it, and ``GenerateFit.generation`` is the answer's figures.
    On the CUDA target a size fits where the simulated caching allocator, given ``memory`` less the
    CUDA context, never runs out."""
    budget = parse_memory(memory)
    if batch_size is None and prompt is None:
        raise InputSpecError("give the prompt's length to find the largest batch, or batch_size to find the longest "
                             "prompt")
    req = request((1,), batch_size or 1, dtype=dtype, device="meta", target=target, device_profile=device_profile,
                  routing=routing)
    name, module = analysis.model_to_analyse(model)
    return GenerateFit(**vars(serving.fit_generation(name, module, budget, req, prompt, new_tokens, cache,
                                                      search_prompt=batch_size is not None)))


@guarded
def bench_generate(model: nn.Module | str, prompt: int, new_tokens: int, *, batch_size: int = 1,
                   dtype: str | torch.dtype | None = None, device: str = "cpu",
                   device_profile: str | DeviceProfile | None = None, min_run_time: float = 1.0) -> GenerateBench:
    """Run ``model.generate()`` for real, with random weights, and time it beside ``generate``'s roofline.

    Time to first token is the median of one-token generations; the time per output token is the
    difference between ``new_tokens``-token and one-token generations over the steps between (the
    mean step). ``device`` is "cpu" or "cuda"; ``device_profile`` as in ``bench`` (default:
    ``local`` on a CPU once ``burden calibrate`` has run, the GPU's data sheet on CUDA). The run is
    refused when ``generate``'s peak says it would not fit in free memory."""
    device = run_device(device, "bench")
    req = request((1,), batch_size, dtype=dtype, device="meta",
                  device_profile=device_profile or benchmark.default_profile(device),
                  target="cuda" if device == "cuda" else "cpu")
    return GenerateBench(**vars(generation_bench.generate_bench_figures(model, req, prompt, new_tokens, device,
                                                                        min_run_time)))
