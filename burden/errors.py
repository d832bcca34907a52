"""Errors burden raises: on bad input, on models it cannot analyse, and on its own bugs.

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


class DataDependentError(ForwardError):
    """The forward needs real tensor values (``.item()``, ``nonzero``, boolean masks), which the
    meta device does not have."""

    feature_bytes_so_far: int = 0  # what the pass had allocated before it stopped, to size a CPU run


class UnsupportedModelError(BurdenError):
    """A model burden cannot analyse, for a reason it names (a TorchScript module, for example)."""


class InternalError(BurdenError):
    """A bug in burden itself: the message names the op, the module and the shapes to report."""


class UnknownLayerError(BurdenError, KeyError):
    """A layer name that the model does not have."""

    def __str__(self) -> str:  # KeyError would wrap the message in quotes
        return str(self.args[0]) if self.args else ""
