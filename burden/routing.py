"""Balanced routing: the stated assumption that stands in for choices made from the weights on meta.

A mixture of experts sends each token to the experts that the top-k of its router's scores picks;
a sparse attention indexer keeps the keys that the top-k of its scores picks; ``generate()``'s
greedy step feeds back the argmax of the logits. The scores come from the weights, so on meta the
choices have no values, and a model that reads them (how many tokens each expert gets, with
``.tolist()``, ``bincount`` or ``nonzero``; whether a new token is padding) would stop the trace.
The memory and the FLOPs of a real run depend on those choices only through their spread, which
training keeps near even (load-balancing losses), so burden assumes it is even: the ``j``-th
choice of row ``r`` is candidate ``(r * k + j) mod n`` (an argmax is a top-1). Every candidate is
picked ``rows * k / n`` times (to within one), and no row picks the same one twice.

``routing="refuse"`` (``--routing refuse``; the choices are ``options.ROUTINGS``) assumes
nothing: a model that reads such a choice stops with ``DataDependentError``, as it would without
this module.

Only the indices are assumed; the scores stay unknown. A value computed from an assumed one
carries the assumption (``burden.values``), and a trace keeps the note of every assumption that
one of its reads rested on (``KnownValues.assumptions``), for the figures' notes.
"""

from __future__ import annotations

from typing import Any

import torch

aten = torch.ops.aten

# ops whose chosen indices are assumed where their input has no value
CHOICES = frozenset({aten.topk.default, aten.argmax.default})
NOTE = ("routing assumed balanced: the choices made from the weights that the model reads (a mixture of "
        "experts' top-k, a sparse attention indexer's, generate()'s greedy next token) are spread evenly "
        "over their candidates, as training keeps a router's; a real run's come from the weights")
ASSUMED = frozenset({NOTE})


def balanced_choices(shape: tuple[int, ...], dim: int, n: int) -> torch.Tensor:
    """Indices of ``shape`` whose row ``r`` (every position but ``dim``) holds ``(r * k + j) mod n``
    at position ``j`` along ``dim``, ``k = shape[dim]``: the choices spread evenly over ``n``."""
    dim = dim % len(shape)
    k = shape[dim]
    moved = (*shape[:dim], *shape[dim + 1:], k)
    rows = torch.arange(int(torch.Size(moved[:-1]).numel()), dtype=torch.long).reshape(*moved[:-1], 1)
    choices = (rows * k + torch.arange(k, dtype=torch.long)) % max(n, 1)
    return choices.movedim(-1, dim).contiguous()


def assumed(func: Any, args: tuple, kwargs: dict, out: Any) -> list[torch.Tensor | None] | None:
    """Assumed values for ``func``'s outputs (None for those left unknown), where its inputs have
    no values and the op makes choices that burden assumes balanced; else None."""
    scores = args[0]
    if func is aten.topk.default and scores.dim() > 0:
        dim = args[2] if len(args) > 2 else kwargs.get("dim", -1)
        return [None, balanced_choices(tuple(out[1].shape), dim, scores.shape[dim])]
    dim = args[1] if len(args) > 1 else kwargs.get("dim")
    if func is aten.argmax.default and dim is not None and scores.dim() > 0:
        keepdim = args[2] if len(args) > 2 else kwargs.get("keepdim", False)
        shape = tuple(out.shape) if keepdim else tuple(out.unsqueeze(dim).shape)
        picked = balanced_choices(shape, dim, scores.shape[dim])
        return [picked if keepdim else picked.squeeze(dim)]
    return None
