"""The choices and defaults burden offers, in one place: the library takes them from here, and so
does the command line, which can read them without importing torch."""

from __future__ import annotations

from .rulebook import FLOPS, MEMORY

CONVENTIONS = tuple(FLOPS)  # in the order they are listed
DEFAULT_CONVENTION = CONVENTIONS[0]
MEMORY_CONVENTIONS = tuple(MEMORY)
MODES = ("inference", "training")
# The optimizers the command line offers by name: torch.optim's own (any of them is accepted, and
# package.module:Class), and "momentum" for SGD with momentum 0.9. Listed here without torch.
OPTIMIZERS = ("sgd", "momentum", "adam", "adamw", "adagrad", "adadelta", "adamax", "asgd", "nadam", "radam",
              "rmsprop", "rprop", "adafactor", "muon")
DEFAULT_OPTIMIZER = "adam"
# single-tensor loop, foreach (multi-tensor) kernels, or fused kernels: as torch.optim's foreach=/fused=
OPTIMIZER_IMPLS = ("single", "foreach", "fused")
# choices a model makes from its weights: assumed balanced (burden.routing), or refused
ROUTINGS = ("balanced", "refuse")
DTYPE_NAMES = ("float32", "float16", "bfloat16", "int8", "float64")
DEFAULT_INPUT = "224"
DEFAULT_INPUT_SIZE = (3, 224, 224)  # where neither the caller nor the model says
DEFAULT_SCALES = "0.5:3:0.5"
DEFAULT_SCALE_BATCH = 128
DEFAULT_SCALE_BASE = 224

# sharded training, traced (burden.sharded): FSDP2 over the data-parallel ranks; tensor parallelism's
# styles by the names Hugging Face's plans and --tp-plan files use
SHARDS = ("fsdp",)
TP_STYLES = ("colwise", "rowwise", "colwise_rep", "rowwise_rep", "sequence_parallel")
