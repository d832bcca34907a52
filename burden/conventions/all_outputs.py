"""The all-outputs memory convention: feature memory exactly as PyTorch executes the code.

Every op output that allocates new storage counts, at its own size: batch-norm statistics,
pooling indices, dropout masks and in-place-free activations included. Views and in-place
results share storage and add nothing. The model inputs and parameters are never features.
"""

from __future__ import annotations

from .. import rulebook
from ..records import Trace
from .base import MemoryConvention


def new_storage_bytes(trace: Trace, elsize: int | None) -> list[int]:
    return [sum(t.nbytes(elsize)
                for t, fresh in zip(event.outputs, event.fresh) if fresh)
            for event in trace.events]


MEMORY = MemoryConvention(
    name="all-outputs",
    summary=rulebook.MEMORY["all-outputs"],
    rule=new_storage_bytes,
)
