"""Measures memory on a real device, independently of burden: the storages ops really allocate.

``AllocationTracker`` is a dispatch mode that sees every op's outputs. An output whose storage is
neither one of the op's inputs, nor already known, nor one of the tensors that existed before
(parameters, buffers, inputs, optimizer state) is a new allocation of ``storage.nbytes()``
bytes; a finalizer on the storage takes it off when its last reference dies. The peak is the
largest live total seen right after an op returned, while its inputs are still held.
"""

from __future__ import annotations

import weakref
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Iterable, Iterator

import torch
from torch.utils._python_dispatch import TorchDispatchMode
from torch.utils._pytree import tree_flatten


def _tensors(value) -> list[torch.Tensor]:
    return [x for x in tree_flatten(value)[0] if isinstance(x, torch.Tensor)]


def _key(t: torch.Tensor) -> int:
    return t.untyped_storage()._cdata


def storage_bytes(tensors: Iterable[torch.Tensor]) -> int:
    """Bytes of the distinct storages behind ``tensors``."""
    seen: dict[int, int] = {}
    for t in tensors:
        seen[_key(t)] = t.untyped_storage().nbytes()
    return sum(seen.values())


class AllocationTracker(TorchDispatchMode):
    def __init__(self, existing: Iterable[torch.Tensor] = ()) -> None:
        super().__init__()
        self.existing = {_key(t) for t in existing}
        self.alive: dict[int, int] = {}  # storage address -> bytes
        self.live = 0
        self.peak = 0
        self.packed: set[int] = set()
        self._finalizers: list[weakref.finalize] = []

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        kwargs = kwargs or {}
        out = func(*args, **kwargs)
        inputs = {_key(t) for t in _tensors((args, kwargs))}
        for t in _tensors(out):
            self._allocated(t, inputs)
        self.peak = max(self.peak, self.live)
        return out

    def _allocated(self, t: torch.Tensor, inputs: set[int]) -> None:
        key = _key(t)
        if key in inputs or key in self.alive or key in self.existing:
            return
        storage = t.untyped_storage()
        self.alive[key] = storage.nbytes()
        self.live += self.alive[key]
        self._finalizers.append(weakref.finalize(storage, self._freed, key))

    def _freed(self, key: int) -> None:
        self.live -= self.alive.pop(key)

    def stop(self) -> None:
        for f in self._finalizers:
            f.detach()

    @contextmanager
    def saving(self) -> Iterator[None]:
        """Record what autograd saves for backward while the block runs."""
        def pack(t: torch.Tensor) -> torch.Tensor:
            self.packed.add(_key(t))
            return t

        with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
            yield

    def saved_bytes(self) -> int:
        """Bytes of the saved storages that were allocated by the tracked ops and are alive now."""
        return sum(self.alive[k] for k in self.packed if k in self.alive)


@dataclass(frozen=True)
class Measured:
    peak_bytes: int  # most bytes the tracked ops held at once
    saved_bytes: int = 0  # what autograd held for backward when the forward ended
    existing_bytes: int = 0  # parameters, buffers and optimizer state, there before the step


def measure_inference(model: torch.nn.Module, x: torch.Tensor) -> Measured:
    """Live bytes of one eval-mode forward under ``no_grad``, the input and the weights left out."""
    tracker = AllocationTracker([x, *model.parameters(), *model.buffers()])
    try:
        with torch.no_grad(), tracker:
            model(x)
    finally:
        tracker.stop()
    return Measured(peak_bytes=tracker.peak)


def make_optimizer(name: str, params: list[torch.nn.Parameter]) -> torch.optim.Optimizer:
    if name == "sgd":
        return torch.optim.SGD(params, lr=0.1)
    if name == "momentum":
        return torch.optim.SGD(params, lr=0.1, momentum=0.9)
    if name == "adam":
        return torch.optim.Adam(params)
    return torch.optim.AdamW(params)


def prepare_training(model: torch.nn.Module, optimizer: str) -> list[torch.Tensor]:
    """Training mode and the optimizer's state made, as in every step after the first, with the
    gradients unallocated (``set_to_none``). Returns what exists before a step: parameters,
    buffers and optimizer state. The state is made by a step on zero gradients, in which the
    parameters may move (weight decay), so pass a model to throw away."""
    model.train()
    params = [p for p in model.parameters() if p.requires_grad]
    opt = make_optimizer(optimizer, params)
    for p in params:
        p.grad = torch.zeros_like(p)
    opt.step()
    opt.zero_grad(set_to_none=True)
    state = [t for s in opt.state.values() for t in s.values() if isinstance(t, torch.Tensor)]
    return [*model.parameters(), *model.buffers(), *state]


def measure_training(model: torch.nn.Module, x: torch.Tensor, optimizer: str) -> Measured:
    """One real training step (see ``prepare_training``): forward, then backward from a gradient
    of ones. Saved activations are taken when the forward ends."""
    existing = prepare_training(model, optimizer)
    tracker = AllocationTracker([x, *existing])
    try:
        with tracker, tracker.saving():
            out = model(x)
        saved = tracker.saved_bytes()
        with tracker:
            out.backward(torch.ones_like(out))
    finally:
        tracker.stop()
        for p in model.parameters():
            p.grad = None
    return Measured(peak_bytes=tracker.peak, saved_bytes=saved, existing_bytes=storage_bytes(existing))
