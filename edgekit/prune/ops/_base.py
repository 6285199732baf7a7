"""What every op handler shares: the annotation type, the input-0 guard and small shape readers.

An annotation ``(axis, atoms)`` says which axis of a tensor carries tracked channels and which
atom each position holds. :func:`tracked_input` is the guard of the handlers that only act when
channels reach their first input; the rest are readers of ranks, axes, constants and reshapes.
"""

from __future__ import annotations

import functools
from typing import Optional, Tuple

import numpy as np

from edgekit.graph.view import attr

Ann = Tuple[int, np.ndarray]


def tracked_input(handler):
    """Run ``handler(dg, node, anns, x)`` only when channels reach input 0 (``x = anns[0]``); an op
    whose first input carries none has nothing to mark."""
    @functools.wraps(handler)
    def run(dg, node, anns):
        x = anns[0]
        if x is None:
            return
        handler(dg, node, anns, x)
    return run


def numel(xs) -> int:
    """The product of the sizes ``xs`` (1 for none)."""
    p = 1
    for x in xs:
        p *= int(x)
    return p


def const_value(dg, name: str) -> Optional[np.ndarray]:
    """Value of a constant or of folded shape arithmetic (see ``fold.py``)."""
    if not name:
        return None
    v = dg.consts.get(name)
    return v if v is not None else dg.known.get(name)


def annotate(dg, name: str, axis: int, atoms: np.ndarray) -> None:
    """Tensor ``name`` carries ``atoms`` on ``axis``."""
    dg.ann[name] = (int(axis), np.asarray(atoms, dtype=np.int64))


def rank_of(dg, name: str) -> Optional[int]:
    s = dg.shapes.get(name)
    return None if s is None else len(s)


def pin_all(dg, anns, reason: str) -> None:
    """Pin the channels of every tracked input (the op cannot carry them)."""
    for a in anns:
        if a is not None:
            dg.pin(a[1], reason)


def node_axes(dg, p, r):
    """The ``axes`` of node ``p`` (attribute or constant input 1), non-negative for rank ``r``; []
    when it has none, None when they are computed."""
    ax = attr(p, "axes")
    if ax is None and len(p.input) > 1 and p.input[1]:
        v = const_value(dg, p.input[1])
        if v is None:
            return None
        ax = v.tolist()
    if ax is None:
        return []
    return [int(a) + (r if a < 0 else 0) for a in ax]


def merge_map(ishape, oshape, a):
    """For a reshape, find the output axis holding input axis ``a``; return (b, outer, inner) such
    that output positions on ``b`` are ``tile(repeat(atoms, inner), outer)``; None if ``a`` is split."""
    if any(d is None for d in ishape) or any(d is None for d in oshape):
        return None
    pre_o = 1
    for b, ob in enumerate(oshape):
        # find the contiguous input range [j0, j1) that forms output axis b
        pre_i = 1
        for j0 in range(len(ishape) + 1):
            if pre_i == pre_o:
                prod, j1 = 1, j0
                while j1 < len(ishape) and prod < ob:
                    prod *= ishape[j1]
                    j1 += 1
                if prod == ob and j0 <= a < j1:
                    # skip trailing/leading 1s ambiguity: require a's own dim inside the range
                    return b, numel(ishape[j0:a]), numel(ishape[a + 1:j1])
                break
            if j0 < len(ishape):
                pre_i *= ishape[j0]
        pre_o *= ob
    return None
