"""Model state around an analysis: modes given back as they were, real copies of meta models."""

from __future__ import annotations

import copy
from contextlib import contextmanager
from typing import Iterator

import torch
from torch import nn


@contextmanager
def preserved_modes(model: nn.Module, train: bool = False) -> Iterator[None]:
    """Run in train or eval mode, then give every submodule back the mode it had, even after an
    error (mixed modes included: a frozen batch norm inside a training model stays frozen)."""
    modes = [(m, m.training) for m in model.modules()]
    try:
        if any(training != train for _, training in modes):  # nn.Module.__setattr__ is slow: skip a no-op
            model.train(train)
        yield
    finally:
        for module, training in modes:
            if module.training != training:
                module.training = training


def on_meta(model: nn.Module) -> bool:
    return any(t.device.type == "meta" for t in list(model.parameters()) + list(model.buffers()))


def with_real_weights(model: nn.Module, device: str = "cpu") -> nn.Module:
    """``model`` itself if its weights are real; a copy on ``device`` if they are on meta, with its
    modules' own ``reset_parameters`` run (tools that run real kernels need storage; models whose
    control flow reads values need sane values)."""
    if not on_meta(model):
        return model
    real = copy.deepcopy(model).to_empty(device=device)
    # uninitialised memory can hold NaNs, and a model whose control flow reads values would follow them
    with torch.no_grad():
        for module in real.modules():
            if hasattr(module, "reset_parameters"):
                try:
                    module.reset_parameters()
                except Exception:  # a reset that needs more than the module has: keep the raw values
                    pass
    return real
