"""JSON view of an Estimate: exact integers, stable key order."""

from __future__ import annotations

from dataclasses import asdict
from typing import Any

from ..figures import BenchFigures, ComparisonFigures as Comparison, EstimateFigures as Estimate, FitFigures
from ..figures import GenerateBenchFigures, GenerateFigures, GenerateFitFigures
from ..figures import ScaleFigures as ScaleTable, ShardedFigures

LAYER_KEYS = ("name", "type", "details", "depth", "output_shape", "call_output_shapes", "calls", "params",
              "shared_params", "param_bytes", "feature_bytes", "flops", "self_params", "self_param_bytes",
              "self_feature_bytes", "self_flops", "bytes_moved", "self_bytes_moved")


def _layer(layer: Any, latency: Any) -> dict[str, Any]:
    fields = asdict(layer)
    fields["call_output_shapes"] = list(fields["call_output_shapes"])  # JSON has no tuples
    out = {k: fields[k] for k in LAYER_KEYS}
    time = latency.layer(layer.name) if latency is not None else None
    out.update(roofline_flops=time.flops if time else None, intensity=time.intensity if time else None,
               predicted_seconds=time.predicted_seconds if time else None, bound=(time.bound or None) if time else None)
    return out


def latency_to_dict(lat: Any) -> dict[str, Any] | None:
    """The roofline prediction's settings and totals (each layer's are in its own record)."""
    if lat is None:
        return None
    return {"profile": lat.profile, "device": lat.device, "dtype": lat.dtype, "threads": lat.threads,
            "peak_flops": lat.peak_flops, "bandwidth": lat.bandwidth, "cache_bytes": lat.cache_bytes,
            "cache_bandwidth": lat.cache_bandwidth, "flops": lat.flops, "bytes_moved": lat.bytes_moved,
            "predicted_seconds": lat.predicted_seconds, "samples_per_second": lat.samples_per_second,
            "compute_seconds": lat.compute_seconds, "memory_seconds": lat.memory_seconds, "bound": lat.bound,
            "uncounted_ops": _uncounted(lat.uncounted_ops),
            "what_it_is": "a roofline lower bound on time, not a promise"}


def estimate_to_dict(e: Estimate) -> dict[str, Any]:
    return {
        "model": e.model,
        "input": list(e.input),
        "batch": e.batch,
        "dtype": e.dtype,
        "convention": e.convention,
        "memory_convention": e.memory_convention,
        "params": e.params,
        "trainable_params": e.trainable_params,
        "param_bytes": e.param_bytes,
        "feature_bytes": e.feature_bytes,
        "flops": e.flops,
        "mode": e.mode,
        "amp": e.amp,
        "accounting": e.accounting,
        "device": e.device,
        "notes": list(e.notes),
        "peak_feature_bytes": e.peak_feature_bytes,
        "held_bytes": e.held_bytes,
        "input_bytes": e.input_bytes,
        "peak_bytes": e.peak_bytes,
        "reserved_bytes": e.reserved_bytes,
        "context_bytes": e.context_bytes,
        "peak_op": asdict(e.peak_op) if e.peak_op is not None else None,
        **_training_dict(e),
        "bytes_moved": e.bytes_moved,
        "predicted_seconds": e.latency.predicted_seconds if e.latency is not None else None,
        "samples_per_second": e.latency.samples_per_second if e.latency is not None else None,
        "latency": latency_to_dict(e.latency),
        "layers": [_layer(layer, e.latency) for layer in e.layers],
        "uncounted_ops": _uncounted(e.uncounted_ops),
    }


def _uncounted(ops: tuple) -> list[dict[str, Any]]:
    return [{"op": u.op, "calls": u.calls, "layers": list(u.layers)} for u in ops]


TRAINING_KEYS = ("optimizer", "optimizer_impl", "grad_accum", "loss", "saved_activation_bytes", "gradient_bytes",
                 "optimizer_bytes", "forward_peak_bytes", "backward_peak_bytes", "optimizer_step_peak_bytes",
                 "training_peak_bytes", "peak_phase", "backward_flops", "recompute_flops", "recompute_peak_bytes",
                 "unchecked_peak_bytes")
# (the training step's reserved memory is "training_reserved_bytes", beside the inference pass's "reserved_bytes")


def _training_dict(e: Estimate) -> dict[str, Any]:
    """The training-step keys: null in inference mode, so every JSON output has the same keys."""
    t = e.training
    out: dict[str, Any] = {k: getattr(t, k) if t is not None else None for k in TRAINING_KEYS}
    out["training_peak_op"] = asdict(t.peak_op) if t is not None and t.peak_op is not None else None
    out["training_peak_parts"] = dict(t.peak_parts) if t is not None else None
    out["training_reserved_bytes"] = t.reserved_bytes if t is not None else None
    out["training_forward_flops"] = t.forward_flops if t is not None else None
    out["checkpointed"] = list(t.checkpointed) if t is not None else None
    out["backward_uncounted_ops"] = _uncounted(t.backward_uncounted_ops) if t is not None else None
    out["sharding"] = sharding_to_dict(t.sharding) if t is not None else None
    return out


def sharding_to_dict(s: ShardedFigures | None) -> dict[str, Any] | None:
    """The plan a rank was traced under, and its collectives by kind, in exact bytes."""
    if s is None:
        return None
    return {"plan": s.plan, "world_size": s.world_size, "rank": s.rank, "fsdp": s.fsdp,
            "tensor_parallel": s.tensor_parallel, "data_parallel": s.data_parallel, "units": list(s.units),
            "collectives": [asdict(c) for c in s.collectives], "sent_bytes": s.sent_bytes,
            "received_bytes": s.received_bytes, "wire_bytes": s.wire_bytes,
            "communication_seconds": s.communication_seconds}


def scale_to_dict(t: ScaleTable) -> dict[str, Any]:
    return {
        "model": t.model,
        "batch": t.batch,
        "trunk": t.trunk,
        "dtype": t.dtype,
        "convention": t.convention,
        "rows": [{"scale": r.scale, "input": list(r.input), "output_shape": r.output_shape,
                  "feature_bytes": r.feature_bytes, "flops": r.flops, "error": r.error} for r in t.rows],
    }


COMPARISON_KEYS = ("model", "input", "batch", "dtype", "params", "param_bytes", "feature_bytes", "flops")


def comparison_to_dict(c: Comparison) -> dict[str, Any]:
    first = c.estimates[0]
    rows = [{k: (list(v) if isinstance(v := getattr(e, k), tuple) else v) for k in COMPARISON_KEYS}
            for e in c.estimates]
    out: dict[str, Any] = {"convention": first.convention, "rows": rows}
    for row, e in zip(rows, c.estimates):
        if e.latency is not None:
            row.update(device_profile=e.latency.profile, predicted_seconds=e.latency.predicted_seconds,
                       predicted_samples_per_second=e.latency.samples_per_second)
    for row, b in zip(rows, c.benches):
        row.update(median_seconds=b.median_seconds, samples_per_second=b.samples_per_second,
                   efficiency=b.efficiency)
    if c.fits:
        out["budget_bytes"] = c.fits[0].budget_bytes
        for row, f in zip(rows, c.fits):
            row.update(max_batch=f.max_batch, fit_peak_bytes=f.peak_bytes)
    return out


def fit_to_dict(f: FitFigures) -> dict[str, Any]:
    """Exact integers throughout: bytes, batch sizes, trace count."""
    return {
        "model": f.model, "input": list(f.input), "dtype": f.dtype, "mode": f.mode, "optimizer": f.optimizer,
        "optimizer_impl": f.optimizer_impl, "grad_accum": f.grad_accum, "effective_batch": f.effective_batch,
        "peak_phase": f.peak_phase, "reserved_bytes": f.reserved_bytes, "context_bytes": f.context_bytes,
        "budget_bytes": f.budget_bytes, "max_batch": f.max_batch, "peak_bytes": f.peak_bytes,
        "next_peak_bytes": f.next_peak_bytes, "breakdown": dict(f.breakdown),
        "around": [asdict(p) for p in f.around], "traces": f.traces, "notes": list(f.notes),
        "checkpointed": list(f.checkpointed), "amp": f.amp, "accounting": f.accounting,
        "sharding": sharding_to_dict(f.sharding),
    }


def bench_to_dict(b: BenchFigures) -> dict[str, Any]:
    """Seconds per forward pass (median and spread), throughput, and the roofline beside them."""
    return {
        "model": b.model, "input": list(b.input), "batch": b.batch, "dtype": b.dtype, "device": b.device,
        "device_name": b.device_name, "threads": b.threads, "median_seconds": b.median_seconds,
        "iqr_seconds": b.iqr_seconds, "min_seconds": b.min_seconds, "max_seconds": b.max_seconds, "runs": b.runs,
        "calls_per_run": b.calls_per_run, "samples_per_second": b.samples_per_second,
        "predicted_seconds": b.predicted_seconds, "efficiency": b.efficiency, "profile": b.profile,
        "peak_bytes": b.peak_bytes,
        "modules": [asdict(m) for m in b.modules], "notes": list(b.notes),
    }


def generate_to_dict(g: GenerateFigures) -> dict[str, Any]:
    """Exact integers; the times only with a device profile (null without one)."""
    decode = g.decode
    return {
        "model": g.model, "batch": g.batch, "prompt": g.prompt, "new_tokens": g.new_tokens, "dtype": g.dtype,
        "cache": g.cache, "convention": g.convention, "params": g.params, "param_bytes": g.param_bytes,
        "input_bytes": g.input_bytes, "kv_cache_bytes": g.kv_cache_bytes,
        "kv_cache_bytes_per_token": g.kv_cache_bytes_per_token, "prefill_peak_bytes": g.prefill.peak_bytes,
        "decode_peak_bytes": decode.peak_bytes if decode is not None else None, "peak_bytes": g.peak_bytes,
        "prefill_flops": g.prefill.flops, "decode_flops": decode.flops if decode is not None else None,
        "prefill_bytes_moved": g.prefill.bytes_moved,
        "decode_bytes_moved": decode.bytes_moved if decode is not None else None,
        "prefill_reserved_bytes": g.prefill.reserved_bytes,
        "decode_reserved_bytes": decode.reserved_bytes if decode is not None else None,
        "context_bytes": g.context_bytes, "accounting": g.accounting,
        "time_to_first_token_seconds": g.time_to_first_token_seconds,
        "seconds_per_output_token": g.seconds_per_output_token, "tokens_per_second": g.tokens_per_second,
        "prefill_latency": latency_to_dict(g.prefill.latency),
        "decode_latency": latency_to_dict(decode.latency) if decode is not None else None,
        "notes": list(g.notes),
    }


def generate_fit_to_dict(f: GenerateFitFigures) -> dict[str, Any]:
    """The answer (``max_batch`` or ``max_prompt``), its peak and the next size's, exact integers."""
    return {
        "model": f.model, "budget_bytes": f.budget_bytes, "search": f.search, "new_tokens": f.new_tokens,
        "max_batch" if f.search == "batch" else "batch": f.batch,
        "max_prompt" if f.search == "prompt" else "prompt": f.prompt,
        "peak_bytes": f.peak_bytes, "next_peak_bytes": f.next_peak_bytes, "traces": f.traces,
        "reserved_bytes": f.reserved_bytes,
        "context_bytes": f.context_bytes, "accounting": f.accounting, "notes": list(f.notes),
        "generation": generate_to_dict(f.generation) if f.generation is not None else None,
    }


def generate_bench_to_dict(b: GenerateBenchFigures) -> dict[str, Any]:
    """The measured times, and the prediction's beside them (null without a profile)."""
    p = b.predicted
    return {
        "model": b.model, "batch": b.batch, "prompt": b.prompt, "new_tokens": b.new_tokens, "dtype": b.dtype,
        "device": b.device, "device_name": b.device_name, "threads": b.threads,
        "time_to_first_token_seconds": b.time_to_first_token_seconds,
        "seconds_per_output_token": b.seconds_per_output_token, "tokens_per_second": b.tokens_per_second,
        "predicted_time_to_first_token_seconds": p.time_to_first_token_seconds if p else None,
        "predicted_seconds_per_output_token": p.seconds_per_output_token if p else None,
        "prefill_efficiency": b.prefill_efficiency, "decode_efficiency": b.decode_efficiency,
        "profile": b.profile, "notes": list(b.notes),
    }
