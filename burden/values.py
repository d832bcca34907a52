"""Known values beside a meta trace: small tensors computed only from constants, for real.

A model's control flow sometimes reads values that depend on nothing but constants: positions
made by ``arange``, masks made from them, a check that every position follows the one before
(Hugging Face's packed-sequence test calls ``.all()`` on one). The meta device has no values, so
such a read stops the trace, although the memory and the FLOPs do not depend on the answer.

Here every tensor made by a deterministic factory (``arange``, ``zeros``, ``full``...), and
every tensor computed by an op whose inputs are all known, gets its value computed on the CPU
beside the meta op; a real tensor met in the trace is its own value. An op that reads values
(``.item()``, ``nonzero``...) then gets the real answer. Anything that depends on a weight, an
input without values or a random number stays unknown, and a read of it still stops the trace.

Values are kept small (``limit`` elements a tensor, enough for the positions and lengths that
control flow reads): a larger one is left unknown rather than computed. A value lives on the meta tensor itself, tagged with the trace it belongs to, so it
dies with the tensor and no other trace or thread sees it. A write into a tensor by an op whose
inputs are not all known makes its storage unknown from then on, views included.
"""

from __future__ import annotations

from typing import Any

import torch

from .containers import iter_tensors, map_tensors

aten = torch.ops.aten

_NOTHING = object()
_TAG = "_burden_value"


def _ops(*names: str) -> frozenset:
    found = set()
    for name in names:
        packet = getattr(aten, name, None)
        if packet is not None:
            found.update(getattr(packet, overload) for overload in packet.overloads())
    return frozenset(found)


# Factories whose result is defined by their arguments alone (not empty, not random).
_DEFINED_FACTORIES = _ops("arange", "zeros", "ones", "full", "scalar_tensor", "linspace", "logspace", "eye")
# Results defined by their input's metadata, whatever its values.
_METADATA_ONLY = _ops("zeros_like", "ones_like", "full_like", "new_zeros", "new_ones", "new_full")
# Ops that draw random numbers: their values are not those of any real run.
_RANDOM = _ops("rand", "randn", "randint", "rand_like", "randn_like", "randint_like", "randperm", "normal",
               "normal_", "uniform_", "bernoulli", "bernoulli_", "exponential_", "geometric_", "cauchy_",
               "log_normal_", "random_", "multinomial", "native_dropout", "empty", "empty_like", "empty_strided",
               "new_empty", "new_empty_strided")


def _on_cpu(value: Any) -> Any:
    """Arguments for the op's run on values: devices become the CPU."""
    if isinstance(value, torch.device):
        return torch.device("cpu")
    if isinstance(value, dict):
        return {k: _on_cpu(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)) and not isinstance(value, torch.Size):
        return type(value)(_on_cpu(v) for v in value)
    return value


def _written(func: torch._ops.OpOverload, args: tuple, kwargs: dict) -> list[torch.Tensor]:
    """The tensor arguments ``func`` writes to, by its schema."""
    found = []
    for position, argument in enumerate(func._schema.arguments):
        info = argument.alias_info
        if info is None or not info.is_write:
            continue
        value = args[position] if position < len(args) else kwargs.get(argument.name)
        found.extend(iter_tensors(value))
    return found


class KnownValues:
    """The values known in one trace."""

    def __init__(self, limit: int = 1 << 16) -> None:
        self.limit = limit
        self._unknown: set[int] = set()  # storages written with values nobody knows

    def carries(self, t: torch.Tensor) -> bool:
        """Whether a meta tensor carries a value of this trace's (cheap: asked of every input)."""
        tagged = getattr(t, _TAG, None)
        return tagged is not None and tagged[0] is self

    @staticmethod
    def makes_values(func: Any) -> bool:
        """Whether ``func`` makes a known value out of no input value (a factory, a ``*_like``)."""
        return func in _DEFINED_FACTORIES or func in _METADATA_ONLY

    def value(self, t: torch.Tensor) -> torch.Tensor | None:
        if t.untyped_storage()._cdata in self._unknown:
            return None
        if not t.is_meta:
            return t
        tagged = getattr(t, _TAG, None)
        return tagged[1] if tagged is not None and tagged[0] is self else None

    def _values_of(self, func: Any, args: tuple, kwargs: dict) -> tuple[tuple, dict] | None:
        """The arguments with every tensor replaced by its value, or None where one is unknown
        (tensors whose metadata alone decides the result stand in as uninitialised CPU tensors)."""
        unknown = False
        metadata_only = func in _METADATA_ONLY

        def swap(t: torch.Tensor) -> Any:
            nonlocal unknown
            known = self.value(t)
            if known is None:
                if not metadata_only:
                    unknown = True
                    return t
                return torch.empty_strided(t.shape, t.stride(), dtype=t.dtype, device="cpu")
            return known

        values = map_tensors(swap, (args, kwargs))
        return None if unknown else values

    def _eligible(self, func: Any, args: tuple, kwargs: dict) -> bool:
        if func in _RANDOM:
            return False
        tensors = list(iter_tensors((args, kwargs)))
        if not tensors:
            return func in _DEFINED_FACTORIES
        return sum(t.numel() for t in tensors) <= self.limit

    def read(self, func: Any, args: tuple, kwargs: dict) -> Any:
        """The result of an op that needs values (``.item()``, ``nonzero``), computed from the known
        values; a tensor result comes back as a meta tensor of its shape, carrying its value.
        ``_NOTHING`` where a value is unknown."""
        if not self._eligible(func, args, kwargs):
            return _NOTHING
        values = self._values_of(func, args, kwargs)
        if values is None:
            return _NOTHING
        result = func(*values[0], **_on_cpu(values[1]))

        def as_meta(real: torch.Tensor) -> torch.Tensor:
            out = torch.empty_strided(real.shape, real.stride(), dtype=real.dtype, device="meta")
            self._tag(out, real)
            return out

        return map_tensors(as_meta, result)

    def after(self, func: Any, args: tuple, kwargs: dict, out: Any) -> None:
        """``func`` ran on meta with ``args`` and returned ``out``: compute it on the values where
        they are known, and give ``out`` its values; else forget what it wrote to."""
        mutable = func._schema.is_mutable
        known = self._eligible(func, args, kwargs) and all(t.numel() <= self.limit for t in iter_tensors(out))
        values = self._values_of(func, args, kwargs) if known else None
        if mutable:
            written = _written(func, args, kwargs)
            if values is None or any(not t.is_meta for t in written):
                self._unknown.update(t.untyped_storage()._cdata for t in written)
                return
        if values is None:
            return
        try:
            result = func(*values[0], **_on_cpu(values[1]))
        except Exception:  # a kernel the CPU lacks or refuses: the values stay unknown
            return
        if mutable:
            return  # the written values were updated in place; an in-place op returns its input
        outs = [t for t in iter_tensors(out)]
        reals = [t for t in iter_tensors(result)]
        # a view of a real tensor met in the trace (a constant of the model's) gets a copy: values
        # are written in place later, and the model's own tensors must never be
        borrowed = {t.untyped_storage()._cdata for t in iter_tensors((args, kwargs)) if not t.is_meta}
        if len(outs) == len(reals):
            for meta, real in zip(outs, reals):
                if meta.is_meta and tuple(meta.shape) == tuple(real.shape):
                    self._tag(meta, real.clone() if real.untyped_storage()._cdata in borrowed else real)

    def _tag(self, meta: torch.Tensor, real: torch.Tensor) -> None:
        setattr(meta, _TAG, (self, real))


NOTHING = _NOTHING
