"""Turn what the user names into a model: a registered name, ``package.module:factory``,
``torchvision:NAME`` or ``timm:NAME`` (those two only where the package is installed), or a
Hugging Face config (``burden.models.hf``)."""

from __future__ import annotations

import importlib
import importlib.util
import os
import sys
import threading
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Iterator

import torch
from torch import nn

from ..errors import FactoryImportError
from .hf import config_model, is_config_spec
from .registry import model_entry


def _external(prefix: str, name: str) -> nn.Module:
    try:
        package = importlib.import_module(prefix)
    except Exception as exc:  # torchvision can fail to import beside a mismatched torch build
        raise FactoryImportError(f"{prefix}:{name} needs {prefix}, which does not import here: "
                                 f"{type(exc).__name__}: {exc}") from None
    known = package.list_models() if prefix == "timm" else package.models.list_models()
    if name not in known:
        from ..suggest import did_you_mean

        raise FactoryImportError(f"{prefix} has no model {name!r}{did_you_mean(name, known)}")
    try:
        if prefix == "timm":
            return package.create_model(name, pretrained=False)
        return package.models.get_model(name, weights=None)
    except Exception as exc:
        raise FactoryImportError(f"{prefix}'s {name} failed to build: {type(exc).__name__}: {exc}") from None


@contextmanager
def _on_path(folder: str) -> Iterator[None]:
    """``folder`` first on the import path while the block runs, as ``python -m`` puts the current
    directory; the path is given back as it was."""
    before = list(sys.path)
    sys.path.insert(0, folder)
    try:
        yield
    finally:
        sys.path[:] = before


def _import(module_name: str) -> Any:
    """A module by dotted name, from the current directory too; or a Python file by its path."""
    if module_name.endswith(".py") or os.sep in module_name or "/" in module_name:
        path = Path(module_name).resolve()
        if not path.is_file():
            raise FileNotFoundError(f"no file {module_name}")
        name = f"burden_model_{path.stem}_{abs(hash(str(path))):x}"
        spec = importlib.util.spec_from_file_location(name, path)
        module = importlib.util.module_from_spec(spec)
        sys.modules[name] = module  # dataclasses and pickling look a module up by name
        with _on_path(str(path.parent)):  # the file's own imports of its neighbours
            spec.loader.exec_module(module)
        return module
    with _on_path(os.getcwd()):
        return importlib.import_module(module_name)


def _factory(path: str) -> nn.Module:
    module_name, _, attr = path.partition(":")
    try:
        module = _import(module_name)
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


_BUILT = threading.local()  # per thread: an analysis changes its model while it runs (hooks, stand-ins, mode)
_KEEP = 8


def _registered_on_meta(name: str) -> nn.Module:
    # An analysis leaves the model as it found it, so a registered model built once serves every
    # later analysis in the thread (building SENet-154 costs about as much as tracing it); each
    # thread has its own, as an analysis running in another thread changes its model while it runs.
    # It is kept in eval mode, the mode most analyses ask for, so that they need not switch it.
    built: dict[str, nn.Module] = _BUILT.__dict__.setdefault("models", {})
    if name not in built:
        with torch.device("meta"):
            model = model_entry(name).factory().eval()
        if len(built) >= _KEEP:
            built.pop(next(iter(built)))
        built[name] = model
    return built[name]


def resolve_model(spec: str, device: str = "meta") -> tuple[str, nn.Module]:
    """The model ``spec`` names: on the meta device by default, so that no weights are allocated;
    on a real device, built there and initialised by its own factory."""
    if is_config_spec(spec):
        return spec, config_model(spec, device)
    prefix, sep, rest = spec.partition(":")
    if not sep and spec.endswith(".py"):
        raise FactoryImportError(f"name the function in {spec} that builds the model: {spec}:FUNCTION")
    if not sep:
        entry = model_entry(spec)  # an unknown name raises here, outside the cache
        if torch.device(device).type == "meta":
            return spec, _registered_on_meta(spec)
        with torch.device(device):
            return spec, entry.factory()
    def build() -> nn.Module:
        return _external(prefix, rest) if prefix in ("torchvision", "timm") else _factory(spec)

    with torch.device(device):
        try:
            return spec, build()
        except FactoryImportError as exc:
            if torch.device(device).type != "meta" or "meta" not in str(exc):
                raise
    # a constructor that reads its own weights' values (torchvision's RegNets) cannot run on meta:
    # build it on the CPU and move it there, which frees the weights
    return spec, build().to("meta")


def own_input_size(model: nn.Module | str, module: nn.Module) -> tuple[int, ...] | None:
    """The per-sample input a model is made for, where it says: timm's ``pretrained_cfg``
    ``input_size`` (a timm model's own, by name or given), a torchvision ViT's fixed
    ``image_size``, torchvision's default weights' eval transforms (their crop), or a registered
    model's entry. None where nothing says."""
    cfg = getattr(module, "pretrained_cfg", None)
    if isinstance(cfg, dict) and cfg.get("input_size"):
        return tuple(int(d) for d in cfg["input_size"])
    if not isinstance(model, str) or is_config_spec(model):
        return None
    prefix, sep, rest = model.partition(":")
    if not sep:
        return model_entry(model).input_size
    if prefix == "torchvision":
        fixed = getattr(module, "image_size", None)  # a ViT built without weights is fixed at its own size
        if isinstance(fixed, int):
            return (3, fixed, fixed)
        from torchvision.models import get_model_weights  # installed: the model was built from it

        try:
            weights = get_model_weights(rest).DEFAULT
        except (ValueError, KeyError, AttributeError):  # a model with no weights: nothing says
            return None
        crop = getattr(weights.transforms(), "crop_size", None)
        if crop:
            return (3, int(crop[0]), int(crop[-1]))
    return None
