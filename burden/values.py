"""Known values beside a meta trace: small tensors computed only from constants, for real.

A model's control flow sometimes reads values that depend on nothing but constants: positions
made by ``arange``, masks made from them, a check that every position follows the one before
(Hugging Face's packed-sequence test calls ``.all()`` on one). The meta device has no values, so
such a read stops the trace, although the memory and the FLOPs do not depend on the answer.

Here every tensor made by a deterministic factory (``arange``, ``zeros``, ``full``...), and
every tensor computed by an op whose inputs are all known, gets its value computed on the CPU
beside the meta op; a real tensor met in the trace is its own value. An op that reads values
(``.item()``, ``nonzero``...) then gets the real answer. Anything that depends on a weight, an
input without values or a random number stays unknown, and a read of it still stops the trace,
with one exception, stated in the notes: the choices a model makes from its weights (a router's
top-k) get the values ``burden.routing`` assumes, and a value computed from one carries the
assumption. Two reads happen outside any op (``tolist()``, indexing by a Python list) and are
answered from the known values while a trace records (``KnownValues.reading``).

Values are kept small (``limit`` elements an op, 8M: the ids, masks and positions of a batch of
long prompts, 32 x 8,192 and more, while a square mask over 8k positions is not): a larger one
is left unknown rather than computed, and so is any but a small one once the values held at once
pass a budget (1 GiB). A value lives on the meta tensor itself, tagged with the
trace it belongs to, so it dies with the tensor and no other trace or thread sees it. A write into
a tensor by an op whose inputs are not all known makes its storage unknown from then on, views
included, until the storage dies.
"""

from __future__ import annotations

import weakref
from contextlib import contextmanager
from typing import Any, Callable, Iterator

import torch
from torch.utils._python_dispatch import _disable_current_modes

from . import routing
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


_NO_ASSUMPTIONS: frozenset[str] = frozenset()


class _Value:
    """A meta tensor's value, the trace that knows it, and the assumptions it rests on (the notes
    of ``burden.routing``; none for a value computed from inputs and constants alone).
    ``copy.deepcopy`` of a tensor copies its attributes too (a model's cache layers are deep-copied
    in its forward): the copy gets a value of its own, copied outside the trace, in the same trace."""

    __slots__ = ("owner", "real", "assumed")

    def __init__(self, owner: "KnownValues", real: torch.Tensor, assumed: frozenset[str] = _NO_ASSUMPTIONS) -> None:
        self.owner = owner
        self.real = real
        self.assumed = assumed

    def __deepcopy__(self, memo: dict) -> "_Value":
        with _disable_current_modes():
            return _Value(self.owner, self.real.clone(), self.assumed)


def _on_cpu(value: Any) -> Any:
    """Arguments for the op's run on values: devices become the CPU."""
    if isinstance(value, torch.device):
        return torch.device("cpu")
    if isinstance(value, dict):
        return {k: _on_cpu(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)) and not isinstance(value, torch.Size):
        return type(value)(_on_cpu(v) for v in value)
    return value


def _lists_on_cpu(index: Any) -> Any:
    """An index with its Python lists of numbers as CPU tensors (made outside the trace)."""
    if isinstance(index, list) and all(isinstance(i, (int, bool)) for i in index):
        with _disable_current_modes():
            return torch.tensor(index)
    if isinstance(index, tuple):
        return tuple(_lists_on_cpu(i) for i in index)
    return index


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

    def __init__(self, limit: int = 1 << 23, budget: int = 1 << 30, small: int = 1 << 19,
                 assume: bool = True) -> None:
        self.limit = limit
        self.assume = assume  # choices made from the weights assumed balanced (burden.routing), or left unknown
        # Bytes of values held at once: a training step's optimizer state is zeros as large as the
        # weights, known but never read; past ``budget``, only values of up to ``small`` bytes (the
        # scalars, positions and masks that control flow reads) are still computed.
        self.budget, self.small = budget, small
        self.only_small = False  # ``small_values``
        self.held_bytes = 0
        self._held: dict[int, weakref.ref] = {}  # storages of the values held -> a reference that says it died
        self._unknown: set[int] = set()  # storages written with values nobody knows
        self.assumptions: set[str] = set()  # the notes of the assumed values (burden.routing) read so far

    def forget(self, storage: int) -> None:
        """A storage died: its address (``_cdata``) may be handed to a new one, whose values are its own."""
        self._unknown.discard(storage)

    def carries(self, t: torch.Tensor) -> bool:
        """Whether a meta tensor carries a value of this trace's (cheap: asked of every input)."""
        tagged = getattr(t, _TAG, None)
        return tagged is not None and tagged.owner is self

    @staticmethod
    def makes_values(func: Any) -> bool:
        """Whether ``func`` makes a known value out of no input value (a factory, a ``*_like``, or a
        choice whose value burden assumes: ``burden.routing``)."""
        return func in _DEFINED_FACTORIES or func in _METADATA_ONLY or func in routing.CHOICES

    def _lookup(self, t: torch.Tensor) -> _Value | None:
        if t.untyped_storage()._cdata in self._unknown:
            return None
        if not t.is_meta:
            return _Value(self, t)
        tagged = getattr(t, _TAG, None)
        return tagged if tagged is not None and tagged.owner is self else None

    def value(self, t: torch.Tensor) -> torch.Tensor | None:
        found = self._lookup(t)
        return None if found is None else found.real

    def reads(self, refuse: Callable[[str], Exception]) -> dict[Any, Callable[..., Any]]:
        """The swaps (for ``burden.patching.swapped``) that answer two reads of values that no op the
        trace sees makes from the known values: ``tolist()`` (which reads memory directly, and
        refuses a meta tensor whatever is known; ``refuse`` makes the error where the value is
        unknown), and indexing by a Python list (``ids[:, [-1, 0]]``), whose index tensor torch
        makes on the indexed tensor's device, meta, without its values: here it is made on the CPU,
        where its values are its own."""
        tolist, getitem = torch.Tensor.tolist, torch.Tensor.__getitem__

        def listed(t: torch.Tensor) -> Any:
            if not t.is_meta:
                return tolist(t)
            found = self._lookup(t)
            if found is None:
                raise refuse("tolist() reads the values")
            self.assumptions.update(found.assumed)
            return found.real.tolist()

        def indexed(t: torch.Tensor, index: Any) -> Any:
            if t.is_meta and self.carries(t):
                index = _lists_on_cpu(index)
            return getitem(t, index)

        return {tolist: listed, getitem: indexed}

    def _values_of(self, func: Any, args: tuple, kwargs: dict) -> tuple[tuple, dict, frozenset[str]] | None:
        """The arguments with every tensor replaced by its value, and the assumptions those rest on;
        None where one is unknown (tensors whose metadata alone decides the result stand in as
        uninitialised CPU tensors)."""
        unknown = False
        metadata_only = func in _METADATA_ONLY
        assumed = _NO_ASSUMPTIONS

        def swap(t: torch.Tensor) -> Any:
            nonlocal unknown, assumed
            known = self._lookup(t)
            if known is None:
                if not metadata_only:
                    unknown = True
                    return t
                return torch.empty_strided(t.shape, t.stride(), dtype=t.dtype, device="cpu")
            assumed = assumed | known.assumed if known.assumed else assumed
            return known.real

        args, kwargs = map_tensors(swap, (args, kwargs))
        return None if unknown else (args, kwargs, assumed)

    def _eligible(self, func: Any, args: tuple, kwargs: dict) -> bool:
        if func in _RANDOM:
            return False
        tensors = list(iter_tensors((args, kwargs)))
        if not tensors:
            return func in _DEFINED_FACTORIES
        return sum(t.numel() for t in tensors) <= self.limit

    def _affordable(self, out: Any) -> bool:
        size = sum(t.numel() * t.element_size() for t in iter_tensors(out))
        return size <= self.small or (not self.only_small and self.held_bytes + size <= self.budget)

    @contextmanager
    def small_values(self) -> Iterator[None]:
        """Inside the block only values of up to ``small`` bytes are computed: an optimizer's state
        and its updates are as large as the weights, known (zeros) but never read, and computing
        them for real would cost more than the trace; its scalars (a step count, ASGD's) stay known."""
        self.only_small = True
        try:
            yield
        finally:
            self.only_small = False

    def read(self, func: Any, args: tuple, kwargs: dict) -> Any:
        """The result of an op that needs values (``.item()``, ``nonzero``), computed from the known
        values; a tensor result comes back as a meta tensor of its shape, carrying its value.
        ``_NOTHING`` where a value is unknown."""
        if not self._eligible(func, args, kwargs):
            return _NOTHING
        found = self._values_of(func, args, kwargs)
        if found is None:
            return _NOTHING
        args, kwargs, assumed = found
        try:
            result = func(*args, **_on_cpu(kwargs))
        except Exception:  # a kernel the CPU lacks for this dtype (histc of integers): as if unknown
            return _NOTHING
        self.assumptions.update(assumed)

        def as_meta(real: torch.Tensor) -> torch.Tensor:
            out = torch.empty_strided(real.shape, real.stride(), dtype=real.dtype, device="meta")
            self._tag(out, real, assumed)
            return out

        return map_tensors(as_meta, result)

    def after(self, func: Any, args: tuple, kwargs: dict, out: Any) -> None:
        """``func`` ran on meta with ``args`` and returned ``out``: compute it on the values where
        they are known, and give ``out`` its values; else forget what it wrote to."""
        mutable = func._schema.is_mutable
        known = self._eligible(func, args, kwargs) and all(t.numel() <= self.limit for t in iter_tensors(out))
        found = self._values_of(func, args, kwargs) if known else None
        written = _written(func, args, kwargs) if mutable else []
        if found is None or any(not t.is_meta for t in written):
            self._unknown.update(t.untyped_storage()._cdata for t in written)
            if found is None and known and not mutable:  # an input without a value: a choice burden assumes?
                self._assume(func, args, kwargs, out)
            return
        if not mutable and not self._affordable(out):
            return  # past the budget: left unknown
        values, kwvalues, assumed = found
        try:
            result = func(*values, **_on_cpu(kwvalues))
        except Exception:  # a kernel the CPU lacks or refuses: the values stay unknown
            self._unknown.update(t.untyped_storage()._cdata for t in written)
            return
        if mutable:  # the written values were updated in place; an in-place op returns its input
            for t in written:
                tagged = getattr(t, _TAG, None)
                if assumed and tagged is not None:
                    tagged.assumed = tagged.assumed | assumed
            return
        outs = [t for t in iter_tensors(out)]
        reals = [t for t in iter_tensors(result)]
        # a view of a real tensor met in the trace (a constant of the model's) gets a copy: values
        # are written in place later, and the model's own tensors must never be
        borrowed = {t.untyped_storage()._cdata for t in iter_tensors((args, kwargs)) if not t.is_meta}
        if len(outs) == len(reals):
            for meta, real in zip(outs, reals):
                if meta.is_meta and tuple(meta.shape) == tuple(real.shape):
                    self._tag(meta, real.clone() if real.untyped_storage()._cdata in borrowed else real, assumed)

    def _assume(self, func: Any, args: tuple, kwargs: dict, out: Any) -> None:
        """Outputs without values that ``burden.routing`` assumes: given those, marked as assumed."""
        if not self.assume or func not in routing.CHOICES:
            return
        outs = out if isinstance(out, tuple) else (out,)
        for meta, real in zip(outs, routing.assumed(func, args, kwargs, out) or ()):
            if real is not None and isinstance(meta, torch.Tensor) and tuple(meta.shape) == tuple(real.shape):
                self._tag(meta, real, routing.ASSUMED)

    def _tag(self, meta: torch.Tensor, real: torch.Tensor, assumed: frozenset[str] = _NO_ASSUMPTIONS) -> None:
        setattr(meta, _TAG, _Value(self, real, assumed))
        storage = real.untyped_storage()
        key = storage._cdata
        if key not in self._held:
            size = storage.nbytes()
            self.held_bytes += size
            self._held[key] = weakref.ref(storage, lambda _, key=key, size=size: self._release(key, size))

    def _release(self, key: int, size: int) -> None:
        self.held_bytes -= size
        self._held.pop(key, None)


NOTHING = _NOTHING
