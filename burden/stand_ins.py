"""The one way burden swaps in stand-ins for a model's tensors, and puts the originals back.

A trace must never write to the user's tensors, nor leave anything of its own behind. Every
parameter and buffer of every module is replaced in its module's own ``_parameters`` or
``_buffers`` entry for the duration of a call, and put back in ``finally``. Modules are visited
once each, however many names they are registered under (a module reachable as ``proj`` and as
``block.0`` is one module with one set of entries), and a tensor shared by several modules gets
one stand-in, so tied weights stay tied. Tensors a module keeps as plain attributes are put
back too, and plain tensor attributes the forward adds (caches) are removed again, or given
back the value they had before the forward made them tensors (a cache slot that was ``None``).

``StandIns.of`` gives the stand-in of any other tensor met during a trace (a tensor captured in
a closure, an input on the wrong device): the same tensor always gets the same stand-in.
"""

from __future__ import annotations

from contextlib import contextmanager
from typing import Callable, Iterator

import torch
from torch import nn

# (original) -> its stand-in; ``parameter`` says whether it is a parameter of a module
Make = Callable[[torch.Tensor, bool], torch.Tensor]
# the attributes every nn.Module has (hooks, tables, mode): never tensors, never looked at
_MODULE_KEYS = frozenset(vars(nn.Module()))


def meta_stand_in(t: torch.Tensor, parameter: bool) -> torch.Tensor:
    """For a pass without gradients: an uninitialised tensor of the same shape, strides and dtype
    on the meta device; a tensor already on meta is its own stand-in (nothing is written to it)."""
    if t.is_meta:
        return t
    return fresh_meta_stand_in(t, parameter)


def fresh_meta_stand_in(t: torch.Tensor, parameter: bool) -> torch.Tensor:
    """For a training step: always a new meta tensor, so that gradients land on the stand-in and
    never on the model's own parameters, meta ones included."""
    out = torch.empty_strided(t.shape, t.stride(), dtype=t.dtype, device="meta")
    if parameter:
        return nn.Parameter(out, requires_grad=t.requires_grad)
    return out


def training_stand_in(t: torch.Tensor, parameter: bool) -> torch.Tensor:
    """For a real training step: a copy, for the step writes to it (the optimizer to parameters,
    batch norm to its statistics), and a parameter's gradient must land on burden's copy."""
    if parameter:
        return nn.Parameter(t.detach().clone(), requires_grad=t.requires_grad)
    return t.detach().clone()


class StandIns:
    """Stand-ins made by ``make``, one per original tensor, remembered for the whole analysis."""

    def __init__(self, make: Make, on_new: Callable[[torch.Tensor, torch.Tensor], None] | None = None) -> None:
        self.make = make
        self.on_new = on_new  # told of every (original, stand-in) pair, to keep storage identity
        self._made: dict[int, tuple[torch.Tensor, torch.Tensor]] = {}  # id -> (original kept alive, stand-in)

    def of(self, t: torch.Tensor, parameter: bool = False) -> torch.Tensor:
        known = self._made.get(id(t))
        if known is not None:
            return known[1]
        stand_in = self.make(t, parameter)
        self._made[id(t)] = (t, stand_in)
        if self.on_new is not None:
            self.on_new(t, stand_in)
        return stand_in

    @contextmanager
    def swapped(self, model: nn.Module) -> Iterator[None]:
        """Every parameter and buffer of ``model`` replaced by its stand-in while the block runs;
        afterwards every module's parameters and buffers are exactly what they were, also where the
        forward assigned or registered new ones (timm's ConViT reassigns a buffer in forward)."""
        tables: list[tuple[dict, dict]] = []
        empty: list[dict] = []  # tables with nothing to swap: only what a forward adds is taken out
        attributes: list[tuple[nn.Module, dict]] = []
        try:
            for module in model.modules():  # each module once, whatever its names
                state = vars(module)
                attributes.append((module, {k: state[k] for k in state.keys() - _MODULE_KEYS}))
                for table, parameter in ((module._parameters, True), (module._buffers, False)):
                    if not table:
                        empty.append(table)
                        continue
                    tables.append((table, dict(table)))
                    for name, t in list(table.items()):
                        stand_in = self.of(t, parameter) if t is not None else None
                        if stand_in is not t:
                            table[name] = stand_in
            yield
        finally:
            for table in empty:
                if table:
                    table.clear()
            for table, original in tables:
                table.clear()
                table.update(original)
            for module, before in attributes:
                state = vars(module)
                for key in [k for k in state.keys() - _MODULE_KEYS if isinstance(state[k], torch.Tensor)]:
                    if key in before:
                        state[key] = before[key]
                    else:
                        del state[key]
                state.update((k, v) for k, v in before.items() if isinstance(v, torch.Tensor))
