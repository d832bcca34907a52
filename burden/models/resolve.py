"""Turn what the user names into a model: a registered name, ``package.module:factory``,
``torchvision:NAME`` or ``timm:NAME`` (those two only where the package is installed)."""

from __future__ import annotations

import functools
import importlib

import torch
from torch import nn

from ..errors import FactoryImportError
from .registry import model_entry


def _external(prefix: str, name: str) -> nn.Module:
    try:
        package = importlib.import_module(prefix)
    except Exception as exc:  # torchvision can fail to import beside a mismatched torch build
        raise FactoryImportError(f"{prefix}:{name} needs {prefix}, which does not import here: "
                                 f"{type(exc).__name__}: {exc}") from None
    try:
        if prefix == "timm":
            return package.create_model(name, pretrained=False)
        return package.models.get_model(name, weights=None)
    except Exception as exc:
        raise FactoryImportError(f"{prefix} has no model {name!r}: {exc}") from None


def _factory(path: str) -> nn.Module:
    module_name, _, attr = path.partition(":")
    try:
        module = importlib.import_module(module_name)
    except Exception as exc:
        raise FactoryImportError(f"cannot import {module_name!r} for {path!r}: {type(exc).__name__}: {exc}") from None
    factory = module
    for part in attr.split("."):
        if not hasattr(factory, part):
            raise FactoryImportError(f"{module_name!r} has no attribute {attr!r}")
        factory = getattr(factory, part)
    built = factory() if callable(factory) and not isinstance(factory, nn.Module) else factory
    if not isinstance(built, nn.Module):
        raise FactoryImportError(f"{path!r} did not give an nn.Module but {type(built).__name__}")
    return built


@functools.lru_cache(maxsize=8)
def _registered_on_meta(name: str) -> nn.Module:
    # An analysis leaves the model as it found it, so a registered model built once serves every
    # later analysis in the process (building SENet-154 costs about as much as tracing it).
    with torch.device("meta"):
        return model_entry(name).factory()


def resolve_model(spec: str, device: str = "meta") -> tuple[str, nn.Module]:
    """The model ``spec`` names: on the meta device by default, so that no weights are allocated;
    on a real device, built there and initialised by its own factory."""
    prefix, sep, rest = spec.partition(":")
    if not sep:
        entry = model_entry(spec)  # an unknown name raises here, outside the cache
        if torch.device(device).type == "meta":
            return spec, _registered_on_meta(spec)
        with torch.device(device):
            return spec, entry.factory()
    with torch.device(device):
        if prefix in ("torchvision", "timm"):
            return spec, _external(prefix, rest)
        return spec, _factory(spec)
