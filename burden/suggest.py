"""The one "did you mean" hint for a name burden does not know (a model, a convention, a layer)."""

from __future__ import annotations

import difflib
from typing import Sequence


def did_you_mean(name: str, choices: Sequence[str], otherwise: str | None = None) -> str:
    """``"; did you mean a, b?"`` with up to three close names (by spelling, then by containing the
    name); failing that, ``otherwise``, or the list of choices when there are few enough to read."""
    choices = list(choices)
    key = str(name).lower()
    close = difflib.get_close_matches(key, choices, n=3, cutoff=0.5)
    if not close and key:
        close = [c for c in choices if key.replace("-", "_") in c.lower().replace("-", "_")][:3]
    if close:
        return f"; did you mean {', '.join(close)}?"
    if otherwise is not None:
        return f"; {otherwise}"
    return f"; known: {', '.join(choices)}" if len(choices) <= 12 else ""
