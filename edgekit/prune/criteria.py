"""Importance criteria: a criterion is a callable ``(group, ctx) -> scores`` (higher = keep).

A criterion may also define ``update(group, keep, ctx)``, called before the channels are removed:
it may rewrite consumer weights / biases through ``ctx.set_tensor`` / ``ctx.add_bias`` (weight
compensation, e.g. OBSPA), and ``finish(dg, keeps, ctx)``, called once after every group's update
(a pass that needs all keep masks, e.g. obspa-seq). ``register(name, factory)`` adds one; the CLI lists :func:`names`.
"""

from __future__ import annotations

import importlib
from typing import Callable, Dict, List

import numpy as np

from edgekit.errors import InputError

_REGISTRY: Dict[str, Callable[..., object]] = {}
# modules that register criteria when imported (kept lazy: e.g. obspa pulls in extra maths)
_BUILTIN_MODULES: List[str] = ["edgekit.prune.obspa_criterion", "edgekit.prune.obspa_seq"]
_loaded = False


def register(name: str, factory: Callable[..., object]) -> None:
    _REGISTRY[name] = factory


def _load() -> None:
    global _loaded
    if _loaded:
        return
    _loaded = True
    for mod in _BUILTIN_MODULES:
        try:
            importlib.import_module(mod)
        except ImportError:
            pass


def names() -> List[str]:
    _load()
    return sorted(_REGISTRY)


def get(name_or_callable, **options):
    if callable(name_or_callable) and not isinstance(name_or_callable, str):
        return name_or_callable
    _load()
    if name_or_callable not in _REGISTRY:
        raise InputError(f"unknown criterion '{name_or_callable}'", hint="choose one of: " + ", ".join(names()))
    return _REGISTRY[name_or_callable](**options)


def _per_position(arr: np.ndarray, axis: int, p: int) -> np.ndarray:
    a = np.moveaxis(np.asarray(arr, dtype=np.float32), axis, 0).reshape(arr.shape[axis], -1)
    if p == 1:
        return np.abs(a).sum(axis=1)
    return np.sqrt(np.square(a).sum(axis=1))


class Magnitude:
    """L1 / L2 norm of every weight slice of the group (producer rows and consumer columns),
    normalised per member (divided by the member's mean) so wide and narrow layers compare, then
    aggregated over members with ``sum`` / ``mean`` / ``max``."""

    def __init__(self, p: int = 1, agg: str = "sum", normalize: bool = True, roles=("out", "in")):
        if agg not in ("sum", "mean", "max"):
            raise InputError(f"unknown aggregation {agg!r}", hint="sum, mean or max")
        self.p, self.agg, self.normalize, self.roles = p, agg, normalize, tuple(roles)

    def __call__(self, group, ctx) -> np.ndarray:
        per = []
        for m in group.members:
            if m.role not in self.roles or m.array.ndim == 0:
                continue
            arr = ctx.real_tensor(m.tensor)  # int8 weights of a QDQ graph: their dequantised values
            if not np.issubdtype(arr.dtype, np.floating):
                continue
            v = _per_position(arr, m.axis, self.p)
            ok = m.index >= 0
            ch = np.zeros(group.size, dtype=np.float64)
            np.add.at(ch, m.index[ok], v[ok].astype(np.float64) ** (self.p if self.p == 2 else 1))
            if self.p == 2:
                ch = np.sqrt(ch)
            if self.normalize:
                mean = ch.mean()
                if mean > 0:
                    ch = ch / mean
            per.append(ch)
        if not per:
            return np.zeros(group.size)
        stack = np.stack(per)
        return {"sum": stack.sum(0), "mean": stack.mean(0), "max": stack.max(0)}[self.agg]


class BNScale:
    """|gamma| of the BatchNormalization layers in the group (network-slimming); groups without BN
    fall back to L1 magnitude."""

    def __call__(self, group, ctx) -> np.ndarray:
        sc = np.zeros(group.size)
        found = False
        for m in group.members:
            if m.role == "bn" and m.node is not None and m.node.input[1] == m.tensor:
                v = np.abs(np.asarray(ctx.tensor(m.tensor), dtype=np.float64))
                ok = m.index >= 0
                np.add.at(sc, m.index[ok], v[ok])
                found = True
        return sc if found else Magnitude()(group, ctx)


class RandomScore:
    def __init__(self, seed: int = 0):
        self.rng = np.random.default_rng(seed)

    def __call__(self, group, ctx) -> np.ndarray:
        return self.rng.random(group.size)


register("l1", lambda **kw: Magnitude(p=1, **kw))
register("l2", lambda **kw: Magnitude(p=2, **kw))
register("bn-scale", lambda **kw: BNScale(**kw))
register("random", lambda **kw: RandomScore(**kw))
