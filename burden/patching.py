"""The one way burden swaps a name for the length of a trace and gives it back exactly.

A trace points a few names at burden's own versions: ``F.scaled_dot_product_attention`` at the
CPU's kernel choice, the autocast entry points at their casting wrappers, a checkpointed
module's ``forward`` at its checkpointed run. Afterwards each name is what it was: the same
object, or absent again where the owner had none of its own (a method ``torch.Tensor`` inherits,
an instance's ``forward`` that comes from its class).
"""

from __future__ import annotations

from contextlib import contextmanager
from typing import Any, Iterator

_ABSENT = object()


@contextmanager
def replaced(owner: Any, name: str, replacement: Any) -> Iterator[None]:
    own = vars(owner).get(name, _ABSENT)
    setattr(owner, name, replacement)
    try:
        yield
    finally:
        if own is _ABSENT:
            delattr(owner, name)
        else:
            setattr(owner, name, own)
