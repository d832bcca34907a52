"""Errors burden raises on bad input.

Every error is a ``BurdenError``: the CLI prints its message on one line and exits with
status 2, and notebook users can catch one base class.
"""

from __future__ import annotations


class BurdenError(Exception):
    """Base class of every error burden raises on purpose."""


class UnknownModelError(BurdenError, KeyError):
    """A model name that no registry knows."""

    def __str__(self) -> str:  # KeyError would wrap the message in quotes
        return str(self.args[0]) if self.args else ""


class InputSpecError(BurdenError, ValueError):
    """A malformed, zero or negative input size, batch size or dtype."""


class ShapeError(BurdenError):
    """The network cannot take the input: too small, or its branches no longer line up."""


class ForwardError(BurdenError):
    """The model's forward raised for another reason."""


class FactoryImportError(BurdenError, ImportError):
    """A ``package.module:factory`` path that does not import or call."""
