"""The model registry: one name per builder function, variants passed to shared builders as data."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

from torch import nn

from ..catalog import MODELS
from ..errors import UnknownModelError
from ..suggest import did_you_mean


@dataclass(frozen=True)
class ModelEntry:
    name: str
    factory: Callable[..., nn.Module]
    summary: str
    trunk: str  # the module whose output is the last feature map (see ``burden.catalog``)
    input_size: tuple[int, int, int] = (3, 224, 224)


_REGISTRY: dict[str, ModelEntry] = {}


def register_model(summary: str | None = None, trunk: str | None = None
                   ) -> Callable[[Callable[..., nn.Module]], Callable[..., nn.Module]]:
    """Register a builder under its own function name (timm's rule: the function name is the model name).

    burden's own builders take their summary, trunk and input size from ``burden.catalog``; a
    builder of yours gives its summary and trunk here.
    """

    def wrap(factory: Callable[..., nn.Module]) -> Callable[..., nn.Module]:
        name = factory.__name__
        if name in _REGISTRY:
            raise ValueError(f"model {name!r} is already registered")
        if summary is None or trunk is None:
            card = MODELS.get(name)
            if card is None:
                raise ValueError(f"model {name!r} is not in burden.catalog: give its summary and trunk")
            entry = ModelEntry(name, factory, summary or card.summary, trunk or card.trunk, card.input_size)
        else:
            entry = ModelEntry(name=name, factory=factory, summary=summary, trunk=trunk)
        _REGISTRY[name] = entry
        return factory

    return wrap


def list_models() -> list[str]:
    """Names of the registered models: burden's own in the catalog's order, then yours as registered."""
    return [n for n in MODELS if n in _REGISTRY] + [n for n in _REGISTRY if n not in MODELS]


def model_entry(name: str) -> ModelEntry:
    """The registry entry for ``name``; an unknown name raises with the closest names."""
    try:
        return _REGISTRY[name]
    except KeyError:
        raise UnknownModelError(f"unknown model {name!r}{did_you_mean(name, list_models())}") from None


def create_model(name: str, **kwargs: object) -> nn.Module:
    """Build a registered model. Pass ``device="meta"`` inside ``torch.device`` to skip weights."""
    return model_entry(name).factory(**kwargs)
