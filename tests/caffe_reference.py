"""An independent reading of the SE authors' Caffe definitions, for cross-checking burden.

It parses a .prototxt with a few lines of tokenizing, walks its layers and applies the rules of
shared/design/conventions.md directly to Caffe's layer list. It shares no code with burden, so
agreement between the two is evidence, not a tautology. The final Softmax ("prob") is skipped:
burden's PyTorch models return logits, as PyTorch classifiers do.
"""

from __future__ import annotations

import math
import re
from pathlib import Path

PROTOTXT = {
    "se_resnet50": "SE-ResNet-50", "se_resnet101": "SE-ResNet-101", "se_resnet152": "SE-ResNet-152",
    "se_resnext50_32x4d": "SE-ResNeXt-50", "se_resnext101_32x4d": "SE-ResNeXt-101",
    "senet154": "SENet-154", "se_bn_inception": "SE-BN-Inception",
}


# The SE authors' own definitions, shipped unmodified with the tests (see data/prototxt/NOTICE).
PROTOTXT_DIR = Path(__file__).resolve().parent / "data" / "prototxt"


def prototxt_path(model: str) -> Path:
    return PROTOTXT_DIR / f"{PROTOTXT[model]}.prototxt"


def _parse(text: str) -> list:
    tokens = re.findall(r'"[^"]*"|[{}:]|[^\s{}:"]+', re.sub(r"#.*", "", text))
    pos = 0

    def block() -> list:
        nonlocal pos
        items = []
        while pos < len(tokens) and tokens[pos] != "}":
            key = tokens[pos]
            pos += 1
            if tokens[pos] == ":":
                pos += 1
            if tokens[pos] == "{":
                pos += 1
                value = block()
                pos += 1
            else:
                value = tokens[pos].strip('"')
                pos += 1
            items.append((key, value))
        return items

    return block()


def _get(items: list, key: str, default=None):
    for k, v in items:
        if k == key:
            return v
    return default


def _all(items: list, key: str) -> list:
    return [v for k, v in items if k == key]


def burden_of(model: str, size: int = 224, batch: int = 1, elsize: int = 4) -> dict[str, int]:
    """params, feature_bytes and flops of a Caffe definition at size x size."""
    net = _parse(prototxt_path(model).read_text(encoding="utf-8"))
    shapes: dict[str, tuple[int, int, int]] = {}
    params = feature = flops = 0
    for layer in _all(net, "layer"):
        kind, bottoms, top = _get(layer, "type"), _all(layer, "bottom"), _all(layer, "top")[0]
        if kind == "Input":
            shapes[top] = (3, size, size)
            continue
        if kind == "Softmax":
            continue
        ins = [shapes[b] for b in bottoms]
        new_buffer, ops, values = True, 0, 0
        if kind == "Convolution":
            p = _get(layer, "convolution_param")
            cout, groups = int(_get(p, "num_output")), int(_get(p, "group", 1))
            k, s, pad = int(_get(p, "kernel_size")), int(_get(p, "stride", 1)), int(_get(p, "pad", 0))
            bias = _get(p, "bias_term", "true") == "true"
            c, h, w = ins[0]
            out = (cout, (h + 2 * pad - k) // s + 1, (w + 2 * pad - k) // s + 1)
            values = cout * c // groups * k * k + (cout if bias else 0)
            ops = math.prod(out) * (c // groups * k * k) + (math.prod(out) if bias else 0)
        elif kind == "BatchNorm":
            out, values = ins[0], 2 * ins[0][0]
        elif kind == "Scale" and len(bottoms) == 1:  # the second half of a batch norm
            out, values, new_buffer = ins[0], 2 * ins[0][0], False
        elif kind == "Scale":  # SE-BN-Inception's channel-wise rescale
            out = ins[0]
            ops = math.prod(out)
        elif kind == "ReLU":
            out, new_buffer, ops = ins[0], False, 2 * math.prod(ins[0])
        elif kind in ("Sigmoid",):
            out = ins[0]
        elif kind in ("Reshape", "Dropout"):
            out, new_buffer = ins[0], False
        elif kind == "Pooling":
            p = _get(layer, "pooling_param")
            c, h, w = ins[0]
            if _get(p, "global_pooling") == "true" or (int(_get(p, "kernel_size")) == h == w and h == 7):
                out, ops = (c, 1, 1), c * h * w
            else:
                k, s, pad = int(_get(p, "kernel_size")), int(_get(p, "stride", 1)), int(_get(p, "pad", 0))
                oh, ow = (math.ceil((d + 2 * pad - k) / s) + 1 for d in (h, w))
                out = (c, oh, ow)
                ops = 2 * math.prod(out) * s * s
        elif kind == "Axpy":
            out, ops = ins[1], 2 * math.prod(ins[1])
        elif kind == "Concat":
            out = (sum(i[0] for i in ins), *ins[0][1:])
        elif kind == "InnerProduct":
            cout = int(_get(_get(layer, "inner_product_param"), "num_output"))
            out = (cout, 1, 1)
            values = cout * math.prod(ins[0]) + cout
            ops = cout * math.prod(ins[0]) + cout
        else:
            raise ValueError(f"no rule for Caffe layer type {kind}")
        shapes[top] = out
        params += values
        flops += ops * batch
        feature += math.prod(out) * elsize * batch if new_buffer else 0
    return {"params": params, "feature_bytes": feature, "flops": flops}
