"""JSON view of an Estimate: exact integers, stable key order."""

from __future__ import annotations

import json
from dataclasses import asdict
from typing import Any

from ..figures import Estimate

LAYER_KEYS = ("name", "type", "depth", "output_shape", "calls", "params", "param_bytes", "feature_bytes",
              "flops", "self_params", "self_param_bytes", "self_feature_bytes", "self_flops")


def estimate_to_dict(e: Estimate) -> dict[str, Any]:
    return {
        "model": e.model,
        "input": list(e.input),
        "batch": e.batch,
        "dtype": e.dtype,
        "convention": e.convention,
        "params": e.params,
        "trainable_params": e.trainable_params,
        "param_bytes": e.param_bytes,
        "feature_bytes": e.feature_bytes,
        "flops": e.flops,
        "layers": [{k: asdict(layer)[k] for k in LAYER_KEYS} for layer in e.layers],
        "uncounted_ops": [{"op": u.op, "calls": u.calls, "layers": list(u.layers)} for u in e.uncounted_ops],
    }


def estimate_to_json(e: Estimate, indent: int | None = 2) -> str:
    return json.dumps(estimate_to_dict(e), indent=indent)
