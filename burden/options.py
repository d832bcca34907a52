"""The choices and defaults burden offers, in one place: the library takes them from here, and so
does the command line, which can read them without importing torch."""

from __future__ import annotations

from .rulebook import FLOPS, MEMORY

CONVENTIONS = tuple(FLOPS)  # in the order they are listed
DEFAULT_CONVENTION = CONVENTIONS[0]
MEMORY_CONVENTIONS = tuple(MEMORY)
MODES = ("inference", "training")
# Tensors each optimizer keeps per trainable parameter, each the parameter's size.
OPTIMIZER_STATES = {"sgd": 0, "momentum": 1, "adam": 2, "adamw": 2}
DEFAULT_OPTIMIZER = "adam"
DTYPE_NAMES = ("float32", "float16", "bfloat16", "int8", "float64")
DEFAULT_INPUT = "224"
DEFAULT_SCALES = "0.5:3:0.5"
DEFAULT_SCALE_BATCH = 128
DEFAULT_SCALE_BASE = 224
