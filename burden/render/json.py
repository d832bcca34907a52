"""JSON view of an Estimate: exact integers, stable key order."""

from __future__ import annotations

import json
from dataclasses import asdict
from typing import Any

from ..figures import ComparisonFigures as Comparison, EstimateFigures as Estimate, FitFigures
from ..figures import ScaleFigures as ScaleTable

LAYER_KEYS = ("name", "type", "details", "depth", "output_shape", "call_output_shapes", "calls", "params",
              "shared_params", "param_bytes", "feature_bytes", "flops", "self_params", "self_param_bytes",
              "self_feature_bytes", "self_flops")


def _layer(layer: Any) -> dict[str, Any]:
    fields = asdict(layer)
    fields["call_output_shapes"] = list(fields["call_output_shapes"])  # JSON has no tuples
    return {k: fields[k] for k in LAYER_KEYS}


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
        "peak_bytes": e.peak_bytes,
        "peak_op": asdict(e.peak_op) if e.peak_op is not None else None,
        **_training_dict(e),
        "layers": [_layer(layer) for layer in e.layers],
        "uncounted_ops": _uncounted(e.uncounted_ops),
    }


def _uncounted(ops: tuple) -> list[dict[str, Any]]:
    return [{"op": u.op, "calls": u.calls, "layers": list(u.layers)} for u in ops]


TRAINING_KEYS = ("optimizer", "saved_activation_bytes", "gradient_bytes", "optimizer_bytes", "training_peak_bytes",
                 "backward_peak_bytes", "backward_flops", "recompute_flops", "recompute_peak_bytes",
                 "unchecked_peak_bytes")


def _training_dict(e: Estimate) -> dict[str, Any]:
    """The training-step keys: null in inference mode, so every JSON output has the same keys."""
    t = e.training
    out: dict[str, Any] = {k: getattr(t, k) if t is not None else None for k in TRAINING_KEYS}
    out["training_forward_flops"] = t.forward_flops if t is not None else None
    out["checkpointed"] = list(t.checkpointed) if t is not None else None
    out["backward_uncounted_ops"] = _uncounted(t.backward_uncounted_ops) if t is not None else None
    return out


def estimate_to_json(e: Estimate, indent: int | None = 2) -> str:
    return json.dumps(estimate_to_dict(e), indent=indent)


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
    if c.fits:
        out["budget_bytes"] = c.fits[0].budget_bytes
        for row, f in zip(rows, c.fits):
            row.update(max_batch=f.max_batch, fit_peak_bytes=f.peak_bytes)
    return out


def fit_to_dict(f: FitFigures) -> dict[str, Any]:
    """Exact integers throughout: bytes, batch sizes, trace count."""
    return {
        "model": f.model, "input": list(f.input), "dtype": f.dtype, "mode": f.mode, "optimizer": f.optimizer,
        "budget_bytes": f.budget_bytes, "max_batch": f.max_batch, "peak_bytes": f.peak_bytes,
        "next_peak_bytes": f.next_peak_bytes, "breakdown": dict(f.breakdown),
        "around": [asdict(p) for p in f.around], "traces": f.traces, "notes": list(f.notes),
        "checkpointed": list(f.checkpointed), "amp": f.amp, "accounting": f.accounting,
    }
