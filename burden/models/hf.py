"""Hugging Face models from their configs, never their weights.

``MODEL`` may be a ``config.json`` path, a folder that holds one, or ``hf:ORG/NAME`` (the config
read through the hub client, where the network allows). The model is built with ``AutoConfig``
and ``from_config`` under the meta device: nothing is allocated and no weight is ever read, so a
70-billion-parameter model builds in a blink. It is the causal language model where
``transformers`` has one for the config's type (what ``burden generate`` needs), else the bare
model. The weights come in the config's own dtype (``dtype`` or ``torch_dtype``), as the
published checkpoint holds them.
"""

from __future__ import annotations

import importlib
from pathlib import Path
from typing import Any

import torch
from torch import nn

from ..errors import FactoryImportError

PREFIX = "hf:"
MISSING = "models from configs need transformers: pip install 'burden[hf]'"


def is_config_spec(spec: str) -> bool:
    """Whether ``spec`` names a Hugging Face config: ``hf:ORG/NAME``, a ``.json`` file, or a folder
    with a ``config.json``."""
    if spec.startswith(PREFIX):
        return True
    path = Path(spec)
    return spec.endswith(".json") or (path.is_dir() and (path / "config.json").is_file())


def _transformers() -> Any:
    try:
        return importlib.import_module("transformers")
    except ImportError:
        raise FactoryImportError(MISSING) from None
    except Exception as exc:  # present but broken beside this torch
        raise FactoryImportError(f"transformers does not import here: {type(exc).__name__}: {exc}") from None


def load_config(spec: str) -> Any:
    """The ``PretrainedConfig`` that ``spec`` names (see the module's words)."""
    transformers = _transformers()
    if spec.startswith(PREFIX):
        source = spec[len(PREFIX):]
        if not source:
            raise FactoryImportError("name the model after hf:, as hf:ORG/NAME")
        where = f"{source} (only its config.json is read, never weights)"
    else:
        path = Path(spec)
        if not path.exists():
            raise FactoryImportError(f"no file or folder {spec}")
        source = str(path.parent if path.is_file() else path)
        if path.is_file() and path.name != "config.json":
            return _from_file(transformers, path)
        where = spec
    try:
        return transformers.AutoConfig.from_pretrained(source)
    except Exception as exc:
        raise FactoryImportError(f"cannot read the config of {where}: {_first_line(exc)}") from None


def _from_file(transformers: Any, path: Path) -> Any:
    """A config saved under another name than ``config.json``: its ``model_type`` picks the class."""
    try:
        data = transformers.PretrainedConfig.get_config_dict(str(path))[0]
        kind = data.pop("model_type")
        return transformers.AutoConfig.for_model(kind, **data)
    except Exception as exc:
        raise FactoryImportError(f"cannot read the config {path}: {_first_line(exc)}") from None


def _first_line(exc: Exception) -> str:
    text = str(exc).strip()
    return f"{type(exc).__name__}: {text.splitlines()[0] if text else ''}"


def config_model(spec: str, device: str = "meta") -> nn.Module:
    """The model of the config ``spec`` names, built on ``device`` (meta by default; elsewhere with
    the random initial weights of its own code), in eval mode."""
    transformers = _transformers()
    config = load_config(spec)
    auto = transformers.AutoModelForCausalLM
    if type(config) not in auto._model_mapping:
        auto = transformers.AutoModel
    try:
        with torch.device(device):
            return auto.from_config(config).eval()
    except Exception as exc:
        raise FactoryImportError(f"{getattr(config, 'model_type', spec)} does not build from {spec}: "
                                 f"{_first_line(exc)}") from None
