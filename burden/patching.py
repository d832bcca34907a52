"""The two ways burden swaps something in for the length of a trace, and gives it back exactly.

- **Torch's own functions** (``F.scaled_dot_product_attention`` at the target's kernel choice, the
  autocast entry points at their casting wrappers, ``Tensor.tolist`` at the known values) are
  answered by a torch *function mode* (``swapped``), which torch keeps per thread: another thread
  that calls ``F.linear`` while a trace runs gets torch's own ``F.linear``, and no name on
  ``torch``, ``torch.nn.functional`` or ``torch.Tensor`` is ever rebound.
- **Attributes of the model being traced** (a checkpointed module's ``forward``, a cache
  attribute) are set on that object and put back on the way out (``replaced``): the same object
  again, or absent again where the owner had none of its own.

A function mode is off while it handles a call, so the functions that ``torch.nn.functional``
writes in Python (``multi_head_attention_forward`` calls ``linear`` and
``scaled_dot_product_attention``) would hide their inner calls from it. Those run here as a copy
of their body, with the mode on and their own torch-function check answered "no" (it already was
handled): the inner calls are seen, as a name rebound for the whole process would have seen them.
Nothing in torch's modules changes.
"""

from __future__ import annotations

import types
from contextlib import contextmanager
from typing import Any, Callable, Iterator, Mapping

import torch
from torch.overrides import TorchFunctionMode, _get_current_function_mode_stack, _pop_mode, _push_mode

_ABSENT = object()
# the guards with which torch's Python functions hand themselves to the function modes
_GUARDS = ("has_torch_function", "has_torch_function_unary", "has_torch_function_variadic")
_HANDLED = {name: (lambda *args, **kwargs: False) for name in _GUARDS}
# whose Python functions run with the mode on. Not ``torch.Tensor``'s: its Python methods call their
# C base (``super().unflatten``), which would hand the call to the mode again, without end.
_BODIES_OF = frozenset({"torch.nn.functional"})


@contextmanager
def replaced(owner: Any, name: str, replacement: Any) -> Iterator[None]:
    """``owner.name`` is ``replacement`` inside the block (for the model's own objects, never torch's)."""
    own = vars(owner).get(name, _ABSENT)
    setattr(owner, name, replacement)
    try:
        yield
    finally:
        if own is _ABSENT:
            delattr(owner, name)
        else:
            setattr(owner, name, own)


def keys_of(function: Any) -> tuple[Any, ...]:
    """The objects a function mode is handed for ``function``: itself, and what a decorator wraps
    (torch hands over the inner function of its ``Tensor`` operator wrappers)."""
    inner = getattr(function, "__wrapped__", None)
    return (function,) if inner is None else (function, inner)


class _Swaps(TorchFunctionMode):
    """Each function in ``table`` answered by its replacement, in the thread that entered the mode."""

    def __init__(self, table: Mapping[Any, Callable[..., Any]]) -> None:
        super().__init__()
        self.table = dict(table)
        # per function the mode has met: None (run it as it is), its replacement, or the copy of
        # its body to run with the mode on (``_body``); decided once, as every torch call meets it
        self.routes: dict[Any, tuple[bool, Callable[..., Any]] | None] = {}

    def __torch_function__(self, func: Any, types_: Any, args: tuple = (), kwargs: dict | None = None) -> Any:
        try:
            route = self.routes[func]
        except KeyError:
            route = self.routes[func] = self._route(func)
        except TypeError:  # an unhashable callable: never one of ours
            route = None
        if route is None:
            return func(*args, **kwargs) if kwargs else func(*args)
        inside, run = route
        if not inside:
            return run(*args, **(kwargs or {}))
        with self:
            return run(*args, **(kwargs or {}))

    def _route(self, func: Any) -> tuple[bool, Callable[..., Any]] | None:
        replacement = self.table.get(func)
        if replacement is not None:
            return False, replacement
        body = self._body(func)
        return None if body is None else (True, body)

    @staticmethod
    def _body(func: Any) -> Callable[..., Any] | None:
        """A copy of one of torch's Python functions whose torch-function check says "handled"."""
        if (not isinstance(func, types.FunctionType) or func.__module__ not in _BODIES_OF
                or not set(_GUARDS) & set(func.__code__.co_names)):
            return None
        body = types.FunctionType(func.__code__, {**func.__globals__, **_HANDLED}, func.__name__,
                                  func.__defaults__, func.__closure__)
        body.__kwdefaults__ = func.__kwdefaults__
        return body


@contextmanager
def swapped(table: Mapping[Any, Callable[..., Any]]) -> Iterator[TorchFunctionMode | None]:
    """Inside the block, and in this thread only, a call of a function in ``table`` (keyed by the
    function objects, see ``keys_of``) runs its replacement, which may call the original: the mode
    is off while a replacement runs. Yields the mode (None for an empty table), which
    ``backward_with`` turns on again inside autograd's nodes."""
    if not table:
        yield None
        return
    with _Swaps(table) as mode:
        yield mode


def backward_with(mode: TorchFunctionMode | None, roots: list[torch.Tensor], seeds: list[torch.Tensor]) -> None:
    """``torch.autograd.backward(roots, seeds)`` with ``mode`` on inside every node of the graph.
    Autograd runs its nodes without the caller's function modes, and a node that recomputes a
    checkpointed forward (``torch.utils.checkpoint``) calls the model's code again: it must meet the
    same swaps as the forward did, or it takes another path (the meta device's attention)."""
    if mode is None:
        torch.autograd.backward(roots, seeds)
        return

    def on(*_: Any) -> None:
        _push_mode(mode)

    def off(*_: Any) -> None:
        _pop_mode()

    handles, seen = [], set()
    todo = [t.grad_fn for t in roots]
    while todo:
        node = todo.pop()
        if node is None or node in seen:
            continue
        seen.add(node)
        handles += [node.register_prehook(on), node.register_hook(off)]
        todo.extend(next_node for next_node, _ in node.next_functions)
    depth = len(_get_current_function_mode_stack())
    try:
        torch.autograd.backward(roots, seeds)
    finally:
        for handle in handles:
            handle.remove()
        while len(_get_current_function_mode_stack()) > depth:  # a node that raised left its mode on
            _pop_mode()
