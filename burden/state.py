"""Model state around an analysis: modes given back as they were, real copies of meta models."""

from __future__ import annotations

import copy
from contextlib import contextmanager
from typing import Iterator

from torch import nn


@contextmanager
def preserved_modes(model: nn.Module, train: bool = False) -> Iterator[None]:
    """Run in train or eval mode, then give every submodule back the mode it had, even after an
    error (mixed modes included: a frozen batch norm inside a training model stays frozen)."""
    modes = [(m, m.training) for m in model.modules()]
    try:
        model.train(train)
        yield
    finally:
        for module, training in modes:
            module.training = training


def on_meta(model: nn.Module) -> bool:
    return any(t.device.type == "meta" for t in list(model.parameters()) + list(model.buffers()))


def with_real_weights(model: nn.Module, device: str = "cpu") -> nn.Module:
    """``model`` itself if its weights are real; a copy with uninitialised weights on ``device``
    if they are on meta (tools that run real kernels need storage, not values)."""
    return copy.deepcopy(model).to_empty(device=device) if on_meta(model) else model
