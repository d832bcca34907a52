"""burden: what will this network cost? Parameter memory, feature memory and FLOPs of PyTorch
models, in total and per layer, under named counting conventions.

The public names are loaded on first use, so that ``burden --help``, ``burden list`` and
``burden conventions`` answer without importing torch.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from .version import __version__

if TYPE_CHECKING:
    from .api import bench, bench_generate, calibrate, compare, estimate, fit, fit_generate, generate, scale
    from .conventions import get_convention, list_conventions, register_formula
    from .errors import BurdenError
    from .figures import LayerFigures, UncountedOp
    from .inputs import TensorSpec
    from .models import create_model, list_models, register_model
    from .results import Bench, Comparison, Estimate, Fit, Generate, GenerateBench, GenerateFit, ScaleTable

__all__ = [
    "Bench", "BurdenError", "Comparison", "Estimate", "Fit", "Generate", "GenerateBench", "GenerateFit", "LayerFigures",
    "ScaleTable", "TensorSpec", "UncountedOp", "bench", "bench_generate", "calibrate", "compare", "create_model",
    "estimate", "fit", "fit_generate", "generate", "get_convention",
    "list_conventions", "list_models", "register_formula", "register_model", "scale", "__version__",
]


def __getattr__(name: str) -> Any:
    if name in ("bench", "bench_generate", "calibrate", "compare", "estimate", "fit", "fit_generate", "generate",
                "scale"):
        from . import api as home
    elif name in ("get_convention", "list_conventions", "register_formula"):
        from . import conventions as home
    elif name == "BurdenError":
        from . import errors as home
    elif name in ("LayerFigures", "UncountedOp"):
        from . import figures as home
    elif name == "TensorSpec":
        from . import inputs as home
    elif name in ("create_model", "list_models", "register_model"):
        from . import models as home
    elif name in ("Bench", "Comparison", "Estimate", "Fit", "Generate", "GenerateBench", "GenerateFit", "ScaleTable"):
        from . import results as home
    else:
        raise AttributeError(f"module 'burden' has no attribute {name!r}")
    value = getattr(home, name)
    globals()[name] = value  # looked up once
    return value


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(__all__))
