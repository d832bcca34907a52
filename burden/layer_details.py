"""What a layer is, in the few words people compare with Netscope and torchinfo: kernel, stride,
padding, dilation, groups, channels or features. Read from the module's own attributes."""

from __future__ import annotations

from typing import Any

from torch import nn


def _pair(value: Any) -> str:
    if isinstance(value, (tuple, list)):
        return "x".join(str(v) for v in value) if len(set(value)) > 1 else str(value[0])
    return str(value)


def describe(module: nn.Module) -> str:
    """``k3 s2 p1 g32 64->128`` for a convolution, ``2048->1000`` for a linear layer, ``k3 s2`` for
    a pooling window, ``C=64`` for a norm; "" for a module with none of these attributes."""
    parts: list[str] = []
    get = module.__dict__.get  # plain attributes only: never a submodule or a parameter
    if get("kernel_size") is not None:
        parts.append(f"k{_pair(get('kernel_size'))}")
        stride = get("stride")
        if stride is not None and stride not in (1, (1,), (1, 1), (1, 1, 1)):
            parts.append(f"s{_pair(stride)}")
        padding = get("padding")
        if padding not in (None, 0, (0,), (0, 0), (0, 0, 0), "valid"):
            parts.append(f"p{_pair(padding)}")
        dilation = get("dilation")
        if dilation not in (None, 1, (1,), (1, 1), (1, 1, 1)):
            parts.append(f"d{_pair(dilation)}")
    if get("groups", 1) not in (1, None):
        parts.append(f"g{get('groups')}")
    for into, out in (("in_channels", "out_channels"), ("in_features", "out_features"),
                      ("num_embeddings", "embedding_dim"), ("input_size", "hidden_size")):
        if get(into) is not None and get(out) is not None:
            parts.append(f"{get(into)}->{get(out)}")
    if get("output_size") is not None:
        parts.append(f"out {_pair(get('output_size'))}")
    if get("num_features") is not None:
        parts.append(f"C={get('num_features')}")
    if get("normalized_shape") is not None:
        parts.append(f"shape {_pair(get('normalized_shape'))}")
    if get("num_groups") is not None:
        parts.append(f"groups {get('num_groups')}")
    if get("num_heads") is not None and get("embed_dim") is not None:
        parts.append(f"{get('num_heads')} heads, width {get('embed_dim')}")
    return " ".join(parts)
