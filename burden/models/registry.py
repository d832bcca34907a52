"""The model registry: one name per builder function, variants passed to shared builders as data."""

from __future__ import annotations

import difflib
from dataclasses import dataclass
from typing import Callable

from torch import nn

from ..errors import UnknownModelError


@dataclass(frozen=True)
class ModelEntry:
    name: str
    factory: Callable[..., nn.Module]
    summary: str
    # Module path whose output is the network's last convolutional feature map (before global
    # pooling): the default "trunk" of the feature-extraction scale table.
    trunk: str
    input_size: tuple[int, int, int] = (3, 224, 224)


_REGISTRY: dict[str, ModelEntry] = {}


def register_model(summary: str, trunk: str) -> Callable[[Callable[..., nn.Module]], Callable[..., nn.Module]]:
    """Register a builder under its own function name (timm's rule: the function name is the model name)."""

    def wrap(factory: Callable[..., nn.Module]) -> Callable[..., nn.Module]:
        name = factory.__name__
        if name in _REGISTRY:
            raise ValueError(f"model {name!r} is already registered")
        _REGISTRY[name] = ModelEntry(name=name, factory=factory, summary=summary, trunk=trunk)
        return factory

    return wrap


def list_models() -> list[str]:
    """Names of the registered models, in registration order."""
    return list(_REGISTRY)


def suggest(name: str, choices: list[str]) -> str:
    close = difflib.get_close_matches(name.lower(), choices, n=3, cutoff=0.5)
    if not close:
        close = [c for c in choices if name.lower().replace("-", "_") in c][:3]
    return f"; did you mean {', '.join(close)}?" if close else f"; known models: {', '.join(choices)}"


def model_entry(name: str) -> ModelEntry:
    """The registry entry for ``name``; an unknown name raises with the closest names."""
    try:
        return _REGISTRY[name]
    except KeyError:
        raise UnknownModelError(f"unknown model {name!r}{suggest(name, list_models())}") from None


def create_model(name: str, **kwargs: object) -> nn.Module:
    """Build a registered model. Pass ``device="meta"`` inside ``torch.device`` to skip weights."""
    return model_entry(name).factory(**kwargs)
