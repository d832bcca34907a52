"""Generation with a KV cache: the model's own ``generate()`` traced on the meta device.

A causal language model from Hugging Face generates with its own ``generate()``: a prefill over
the prompt, then one decode step per new token, each appending to the model's own cache (whatever
its class: dynamic, static, sliding-window, hybrid). burden runs that very ``generate()`` on
stand-ins of the weights, greedy, with no end-of-sequence token, so that every step runs:

- the prompt is real token ids and a real attention mask (``burden.tokens``), so that
  ``generate()``'s own checks of them have values; the positions and masks it computes from them
  are known too (``burden.values``); nothing that depends on a weight is ever read;
- **the prefill**: ``generate()`` over the prompt for one new token;
- **the last decode step**, at the longest context: ``generate()`` over a prompt of
  ``prompt + new_tokens - 2`` tokens for two new tokens. Its second forward finds in the cache
  exactly what the real run's last step finds (``prompt + new_tokens - 2`` tokens) and leaves
  ``prompt + new_tokens - 1``: the last token is produced, not fed back. The longer prompt it was
  given is held as the real prompt is: the figures count the real prompt's bytes instead.

Two traces, whatever the number of new tokens: the steps between them only grow the cache, so
the last one holds the most. The whole run's peak is the higher of the two phases'.
"""

from __future__ import annotations

from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any, Callable, Iterator

import torch
from torch import nn

from .counting import held_sizes
from .device_memory import DeviceRun, workspaces
from .errors import InputSpecError, UnsupportedModelError
from .figures import GenerateFigures, GenerationPhase
from .inputs import dtype_name
from .memory import Lifetimes, LiveTrace, replay
from .records import Trace
from .request import Request, input_sizes, model_dtype
from .roofline import latency_figures
from .tokens import ordinary_token, token_inputs
from .traffic import trace_bytes
from .stand_ins import meta_stand_in
from .state import preserved_modes
from .trace import Tracer

CACHES = ("dynamic", "static")


@dataclass(frozen=True)
class Phase:
    """One phase of a generation, as traced: its events (a trace of its own) and the most bytes
    held while it ran, everything included."""

    trace: Trace
    peak_bytes: int
    device_run: DeviceRun | None  # on the CUDA target, the phase as the caching allocator sees it

    def reserved_bytes(self, capacity: int | None = None) -> int | None:
        """The most the caching allocator reserves (0 off the CUDA target); None where it runs out
        of ``capacity``."""
        return 0 if self.device_run is None else self.device_run.reserved(capacity)


@dataclass(frozen=True)
class Generation:
    """The traced phases of one generation and the cache it leaves."""

    prefill: Phase
    decode: Phase | None  # None with one new token: the prefill makes it
    kv_cache_bytes: int  # the cache at the end, every tensor of it once
    held_bytes: int  # the weights and buffers as the device holds them
    input_bytes: int  # the prompt's ids and attention mask


def _cache_sizes(cache: Any, seen: dict[int, int] | None = None, depth: int = 0) -> dict[int, int]:
    """The bytes of every storage a cache object holds, whatever its class: storage -> bytes."""
    seen = {} if seen is None else seen
    if isinstance(cache, torch.Tensor):
        seen[cache.untyped_storage()._cdata] = cache.untyped_storage().nbytes()
    elif depth <= 4 and isinstance(cache, dict):
        for child in cache.values():
            _cache_sizes(child, seen, depth + 1)
    elif depth <= 4 and isinstance(cache, (list, tuple)):
        for child in cache:
            _cache_sizes(child, seen, depth + 1)
    elif depth <= 4 and hasattr(cache, "__dict__") and not isinstance(cache, (nn.Module, type)):
        for child in vars(cache).values():
            _cache_sizes(child, seen, depth + 1)
    return seen


def generate_options(model: nn.Module, new_tokens: int, cache: str, cache_tokens: int | None = None) -> dict[str, Any]:
    """``generate()``'s options: greedy, every step to the last (no end-of-sequence token). A static
    cache is made for ``cache_tokens`` (default: this call's longest context), as the real run's is
    from its first step."""
    if not hasattr(model, "generate") or not callable(model.generate):
        raise UnsupportedModelError(f"{type(model).__name__} has no generate(): burden generate takes a causal "
                                    f"language model from Hugging Face transformers")
    options = {"max_new_tokens": new_tokens, "min_new_tokens": new_tokens, "do_sample": False,
               "eos_token_id": None, "pad_token_id": ordinary_token(model.config), "return_dict_in_generate": True}
    if cache == "static":
        options["cache_implementation"] = "static"
        if cache_tokens is not None:
            options["max_cache_len"] = cache_tokens
    return options


def _generate_kwargs(model: nn.Module, batch: int, prompt: int, new_tokens: int, cache: str,
                     cache_tokens: int | None = None) -> tuple[dict, dict]:
    """The prompt (real values) and ``generate()``'s options."""
    options = generate_options(model, new_tokens, cache, cache_tokens)
    return token_inputs(model.config, batch, prompt), options


def _stand_in_maker(dtype: torch.dtype | None) -> Callable[[torch.Tensor, bool], torch.Tensor]:
    """Meta stand-ins in the asked dtype: under ``--dtype`` the model runs in it, so that the upcasts
    its code makes (float32 softmax, logits) count at their own sizes."""
    if dtype is None:
        return meta_stand_in

    def make(t: torch.Tensor, parameter: bool) -> torch.Tensor:
        out = torch.empty_strided(t.shape, t.stride(), dtype=dtype if t.is_floating_point() else t.dtype,
                                  device="meta")
        return nn.Parameter(out, requires_grad=False) if parameter else out

    return make


@contextmanager
def _generating(model: nn.Module, device: str | None) -> Iterator[None]:
    """The block runs the model's own ``generate()``, which keeps state on the model (transformers
    remembers the longest static cache it made): every attribute of the model's comes back as it
    was. With ``device``, the model says it is there while the block runs, as a model of the
    target's would: ``generate()`` chooses by ``model.device`` (a mixture of experts keeps its
    grouped products for decoding on the CPU, and elsewhere copies the chosen experts' weights).
    The stand-ins are on meta, so the class is swapped for a subclass that answers, and given back."""
    cls, attributes = type(model), dict(vars(model))
    if device is not None and isinstance(getattr(cls, "device", None), property):
        model.__class__ = type(cls.__name__, (cls,), {"device": property(lambda self: torch.device(device)),
                                                      "__module__": cls.__module__})
    try:
        yield
    finally:
        model.__class__ = cls
        vars(model).clear()
        vars(model).update(attributes)


def _run(model: nn.Module, req: Request, prompt: int, new_tokens: int, cache: str,
         cache_tokens: int) -> tuple[LiveTrace, list[int], list[int]]:
    """One traced ``generate()`` at the request's batch: its trace with lifetimes, the first event of
    each forward, and the bytes of the cache it returns."""
    inputs, options = _generate_kwargs(model, req.batch, prompt, new_tokens, cache, cache_tokens)
    lifetimes = Lifetimes()
    tracer = Tracer(model, meta=True, make=_stand_in_maker(req.dtype), observers=(lifetimes,), kernels=req.kernels)
    try:
        # a CUDA target's model is on a device that is not the CPU, as meta is not
        with preserved_modes(model), torch.no_grad(), tracer.session(), \
                _generating(model, None if req.accounting.cuda else "cpu"):
            out = tracer.forward((), {**inputs, **options}, call=model.generate)
            trace = tracer.trace(out)
            # the cache's key is "cache" in transformers 5 ("past_key_values" before), whose old name warns
            kv = list(_cache_sizes(out.get("cache") if "cache" in out else out.get("past_key_values")).values())
            del out
    finally:
        tracer.stop()
    forwards = [start for start, *_ in trace.modules[""].spans]
    return LiveTrace(**vars(trace), allocations=dict(lifetimes.allocations),
                     released=dict(lifetimes.released)), forwards, kv


def _phase(req: Request, run: LiveTrace, start: int, end: int, held: list[int], batch: list[int]) -> Phase:
    """Events ``[start, end)`` of a run: their trace and the most bytes held while they ran, with
    ``held`` (the weights) and ``batch`` (the prompt's tensors as the real run holds them) held
    throughout."""
    accounts = req.accounting
    sizer = accounts.sizer(None)
    allocations = {**run.allocations, **workspaces(run.events, (0,), accounts)}
    live = replay(run.events, allocations, run.released, None, size=sizer)
    base = accounts.tensors(held) + accounts.tensors(batch)
    device_run = DeviceRun((*held, *batch), allocations, run.released, sizer, end, accounts) if accounts.cuda else None
    return Phase(run.part(start, end), base + max(live.curve[start:end], default=0), device_run)


def generation(model: nn.Module, req: Request, prompt: int, new_tokens: int, cache: str = "dynamic") -> Generation:
    """Trace the prefill and the last decode step of ``model.generate()`` (see the module's words)."""
    if cache not in CACHES:
        raise InputSpecError(f"unknown cache {cache!r}; use {' or '.join(CACHES)}")
    for what, value in (("prompt", prompt), ("new tokens", new_tokens)):
        if isinstance(value, bool) or not isinstance(value, int) or value < 1:
            raise InputSpecError(f"{what} must be a whole number from 1, got {value!r}")
    held = held_sizes(model, req.elsize(model) if req.dtype is not None else None, req.accounting)
    real_prompt = input_sizes((), _generate_kwargs(model, req.batch, prompt, 1, cache)[0], None)
    longest = prompt + new_tokens - 1
    first, forwards, kv = _run(model, req, prompt, min(new_tokens, 2) if new_tokens <= 2 else 1, cache, longest)
    end = forwards[1] if len(forwards) > 1 else len(first.events)
    prefill = _phase(req, first, 0, end, held, real_prompt)
    decode = None
    if new_tokens >= 2:
        last, last_forwards = first, forwards
        if new_tokens > 2:
            last, last_forwards, kv = _run(model, req, prompt + new_tokens - 2, 2, cache, longest)
        decode = _phase(req, last, last_forwards[1], len(last.events), held, real_prompt)
    return Generation(prefill=prefill, decode=decode, kv_cache_bytes=req.accounting.tensors(kv),
                      held_bytes=req.accounting.tensors(held), input_bytes=req.accounting.tensors(real_prompt))


def _counted(module: nn.Module, req: Request, phase: Phase, batch: int) -> GenerationPhase:
    """A phase's FLOPs (the request's convention), bytes moved and, with a profile, roofline time."""
    flops = req.convention.attribute(module, phase.trace, (), {})
    moved = trace_bytes(phase.trace, None)
    latency = None
    if req.profile is not None:
        threads = torch.get_num_threads() if req.profile.kind == "cpu" else None
        latency = latency_figures(phase.trace, moved, req.profile, dtype=None, batch=batch, threads=threads,
                                  order=list(phase.trace.modules))
    return GenerationPhase(peak_bytes=phase.peak_bytes, flops=sum(flops.self_flops.values()), bytes_moved=sum(moved),
                           reserved_bytes=phase.reserved_bytes() or 0, latency=latency)


def generate_figures(name: str, module: nn.Module, req: Request, prompt: int, new_tokens: int,
                     cache: str = "dynamic") -> GenerateFigures:
    """The figures of ``burden.generate`` (which documents the options) for a checked request."""
    if req.convention.flops is None:
        raise InputSpecError(f"the {req.convention.name} convention counts by running the model for real; count a "
                             f"generation under convnet-burden, macs, torch or roofline")
    g = generation(module, req, prompt, new_tokens, cache)
    prefill = _counted(module, req, g.prefill, req.batch)
    decode = _counted(module, req, g.decode, req.batch) if g.decode is not None else None
    tokens = req.batch * (prompt + new_tokens - 1)
    dtype = req.dtype or model_dtype(module)
    return GenerateFigures(
        model=name, batch=req.batch, prompt=prompt, new_tokens=new_tokens, dtype=dtype_name(dtype), cache=cache,
        convention=req.convention.name, params=sum(p.numel() for p in module.parameters()),
        param_bytes=g.held_bytes, input_bytes=g.input_bytes, kv_cache_bytes=g.kv_cache_bytes,
        kv_cache_bytes_per_token=g.kv_cache_bytes // tokens, prefill=prefill, decode=decode,
        peak_bytes=max(prefill.peak_bytes, decode.peak_bytes if decode is not None else 0),
        context_bytes=req.accounting.context_bytes, accounting=req.accounting.describe(),
        notes=tuple(dict.fromkeys(g.prefill.trace.assumptions + (g.decode.trace.assumptions if g.decode else ())))
        + ("generate() traced greedy, with no end-of-sequence token: every step runs, the last at the longest "
           "context; the model ran in eval mode under no_grad",))
