"""Give the user's model back as it came: the train/eval mode of every submodule."""

from __future__ import annotations

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
