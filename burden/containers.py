"""The one container walker: tensors and other leaves inside tuples, lists and dicts.

Models return and take nested structures: tuples, lists, dicts, and their subclasses (named
tuples, ``OrderedDict``, Hugging Face's ``ModelOutput``). aten ops take and return only a few
plain containers, and the trace walks those on every op, so exact plain types are tried first.
"""

from __future__ import annotations

from typing import Any, Callable, Iterator

import torch

# leaves recognised by their exact type, without an isinstance call
_EMPTY = (tuple, list, dict)
_FAST_LEAVES = {int, float, bool, type(None), str, torch.dtype, torch.device, torch.memory_format, torch.layout}


def _rebuild(value: Any, items: list) -> Any:
    """A container of ``value``'s type holding ``items`` (its values, in order)."""
    kind = type(value)
    if kind is tuple or kind is list:
        return kind(items)
    if kind is dict:
        return dict(zip(value.keys(), items))
    if isinstance(value, dict):
        pairs = dict(zip(value.keys(), items))
        try:
            return kind(pairs)
        except Exception:  # a mapping type that cannot be built from its items
            return pairs
    if isinstance(value, tuple) and hasattr(value, "_fields"):  # a named tuple
        return kind(*items)
    try:
        return kind(items)
    except Exception:
        return type(value).__mro__[-2](items) if isinstance(value, (tuple, list)) else items


def _children(value: Any) -> list | None:
    """The values inside a container, or None for a leaf."""
    kind = type(value)
    if kind is tuple or kind is list:
        return value  # type: ignore[return-value]
    if kind is dict:
        return list(value.values())
    if kind in _FAST_LEAVES or isinstance(value, (torch.Tensor, torch.Size)):  # a Size is a shape, not a tuple
        return None
    if isinstance(value, (tuple, list)):
        return list(value)
    if isinstance(value, dict):
        return list(value.values())
    return None


def map_leaves(fn: Callable[[Any], Any], value: Any, *, rebuild: str = "same", tensors_only: bool = False) -> Any:
    """``value`` with every leaf replaced by ``fn(leaf)``.

    ``rebuild`` says what the containers become: ``"same"`` (their own types), ``"frozen"``
    (tuples, dicts as tuples of ``(key, value)`` pairs: a dictionary key) or ``"lists"`` (lists,
    dicts as dicts: JSON-like). With ``tensors_only``, ``fn`` sees only tensors. The trace calls
    this several times on every op's arguments, so the common cases (a tensor, a number, a list
    of numbers, a plain tuple, list or dict) are answered before anything general is tried.
    """
    if type(value) in _EMPTY and not value:  # an op's kwargs, most of the time
        if rebuild == "same":
            return type(value)()
        return () if rebuild == "frozen" else type(value)() if type(value) is dict else []
    if rebuild == "same":
        return _map_same(fn, value, tensors_only)
    return _map_reshaped(fn, value, rebuild == "frozen", tensors_only)


def _each(fn: Callable[[Any], Any], items: Any, tensors_only: bool, deeper: Callable[[Any], Any]) -> list:
    """A plain tuple's or list's elements mapped: tensors and plain leaves here, without a call
    each (the trace maps every op's arguments), anything else by ``deeper``."""
    out = []
    for v in items:  # _plain_leaf inlined: this loop runs for every argument of every op
        k = type(v)
        if k is torch.Tensor:
            out.append(fn(v))
        elif k in _FAST_LEAVES:
            out.append(v if tensors_only else fn(v))
        elif tensors_only and (k is list or k is tuple) and _all_plain(v):
            out.append(v)  # an op's sizes, strides, paddings
        else:
            out.append(deeper(v))
    return out


def _all_plain(items: Any) -> bool:
    for v in items:
        if type(v) not in _FAST_LEAVES:
            return False
    return True


_NOT_PLAIN = object()


def _plain_leaf(fn: Callable[[Any], Any], value: Any, tensors_only: bool) -> Any:
    """``value`` mapped if it is a tensor or a plain leaf, else ``_NOT_PLAIN``."""
    kind = type(value)
    if kind is torch.Tensor:
        return fn(value)
    if kind in _FAST_LEAVES:
        return value if tensors_only else fn(value)
    return _NOT_PLAIN


def _map_same(fn: Callable[[Any], Any], value: Any, tensors_only: bool) -> Any:
    leaf = _plain_leaf(fn, value, tensors_only)
    if leaf is not _NOT_PLAIN:
        return leaf
    kind = type(value)
    if kind is tuple or kind is list:
        if tensors_only and _all_plain(value):
            return value  # sizes, strides, paddings: nothing to map
        return kind(_each(fn, value, tensors_only, lambda v: _map_same(fn, v, tensors_only)))
    if kind is dict:
        return {k: _map_same(fn, v, tensors_only) for k, v in value.items()}
    children = _children(value)
    if children is None:
        return fn(value) if not tensors_only or isinstance(value, torch.Tensor) else value
    return _rebuild(value, [_map_same(fn, v, tensors_only) for v in children])


def _map_reshaped(fn: Callable[[Any], Any], value: Any, frozen: bool, tensors_only: bool) -> Any:
    leaf = _plain_leaf(fn, value, tensors_only)
    if leaf is not _NOT_PLAIN:
        return leaf
    kind = type(value)
    if kind is tuple or kind is list:
        items = _each(fn, value, tensors_only, lambda v: _map_reshaped(fn, v, frozen, tensors_only))
        return tuple(items) if frozen else items
    children = _children(value)
    if children is None:
        return fn(value) if not tensors_only or isinstance(value, torch.Tensor) else value
    items = [_map_reshaped(fn, v, frozen, tensors_only) for v in children]
    if isinstance(value, dict):
        return tuple(zip(value.keys(), items)) if frozen else dict(zip(value.keys(), items))
    return tuple(items) if frozen else items


def map_tensors(fn: Callable[[torch.Tensor], Any], value: Any) -> Any:
    """``value`` with every tensor replaced by ``fn(tensor)``."""
    return map_leaves(fn, value, tensors_only=True)


def leaves(value: Any) -> list[Any]:
    """The non-container values in ``value``, depth first."""
    found: list[Any] = []
    _collect(value, found)
    return found


def _collect(value: Any, found: list[Any]) -> None:
    kind = type(value)
    if kind is torch.Tensor or kind in _FAST_LEAVES:
        found.append(value)
        return
    if kind is tuple or kind is list:
        for v in value:
            if type(v) in _FAST_LEAVES or type(v) is torch.Tensor:
                found.append(v)
            else:
                _collect(v, found)
        return
    children = _children(value)
    if children is None:
        found.append(value)
        return
    for v in children:
        _collect(v, found)


def iter_tensors(value: Any) -> Iterator[torch.Tensor]:
    for leaf in leaves(value):
        if isinstance(leaf, torch.Tensor):
            yield leaf


def shape_tree(value: Any) -> Any:
    """Shapes of the tensors in ``value`` as nested lists of ints; None for anything else."""
    kind = type(value)
    if kind is torch.Tensor:  # a module's output, most of the time
        return list(value.shape)
    if kind is tuple and len(value) == 1 and type(value[0]) is torch.Tensor:  # its arguments
        return [list(value[0].shape)]
    return map_leaves(lambda leaf: list(leaf.shape) if isinstance(leaf, torch.Tensor) else None,
                      value, rebuild="lists")
