"""Built-in model zoo. Importing this package registers every model."""

from . import inception, senet  # noqa: F401  (registration side effects)
from .registry import ModelEntry, create_model, list_models, model_entry, register_model

__all__ = ["ModelEntry", "create_model", "list_models", "model_entry", "register_model"]
