"""Which kernels a traced pass runs: the target device's, not the meta device's.

The meta device has no kernel choice of its own: a pass on it takes the math path of attention
and no autocast. ``Kernels`` says which device the pass stands for (its attention chooser and
its autocast policy), mixed precision's low dtype, and whether choices made from the weights are
assumed balanced (``burden.routing``).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch


@dataclass(frozen=True)
class Kernels:
    device: str = "cpu"  # "cpu" or "cuda": whose attention chooser and autocast policy apply
    capability: tuple[int, int] | None = None  # a GPU's compute capability (CUDA's chooser reads it)
    amp: torch.dtype | None = None  # mixed precision's low precision, or None
    routing: str = "balanced"  # burden.routing.ROUTINGS: assume the weights' choices balanced, or refuse
