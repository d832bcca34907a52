"""burden: what will this network cost? Parameter memory, feature memory and FLOPs of PyTorch
models, in total and per layer, under named counting conventions."""

from .api import compare, estimate, scale
from .conventions import get_convention, list_conventions, register_formula
from .errors import BurdenError
from .figures import LayerFigures, UncountedOp
from .inputs import TensorSpec
from .models import create_model, list_models, register_model
from .results import Comparison, Estimate, ScaleTable
from .version import __version__

__all__ = [
    "BurdenError", "Comparison", "Estimate", "LayerFigures", "ScaleTable", "TensorSpec", "UncountedOp",
    "compare", "create_model", "estimate", "get_convention", "list_conventions", "list_models",
    "register_formula", "register_model", "scale", "__version__",
]
