"""burden: what will this network cost? Parameter memory, feature memory and FLOPs of PyTorch
models, in total and per layer, under named counting conventions."""

from .api import estimate
from .conventions import get_convention, list_conventions
from .errors import BurdenError
from .figures import Estimate, LayerFigures, UncountedOp
from .formulas import register_formula
from .models import create_model, list_models, register_model

__all__ = [
    "BurdenError", "Estimate", "LayerFigures", "UncountedOp", "create_model", "estimate",
    "get_convention", "list_conventions", "list_models", "register_formula", "register_model",
]
__version__ = "0.1.0"
