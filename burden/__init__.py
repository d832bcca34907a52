"""burden: what will this network cost? Parameter memory, feature memory and FLOPs of PyTorch
models, in total and per layer, under named counting conventions."""

from .api import compare, estimate, scale
from .comparison import Comparison
from .conventions import get_convention, list_conventions
from .errors import BurdenError
from .figures import Estimate, LayerFigures, UncountedOp
from .formulas import register_formula
from .inputs import TensorSpec
from .scaling import ScaleTable
from .models import create_model, list_models, register_model

__all__ = [
    "BurdenError", "Comparison", "Estimate", "LayerFigures", "ScaleTable", "TensorSpec", "UncountedOp",
    "compare", "create_model", "estimate", "get_convention", "list_conventions", "list_models",
    "register_formula", "register_model", "scale",
]
__version__ = "0.1.0"
