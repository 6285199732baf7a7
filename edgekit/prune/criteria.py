"""Importance criteria: the :class:`Criterion` protocol, the registry, and the magnitude family.

A criterion is a :class:`Criterion` subclass. The pruner calls its hooks in this order, once per
prune: ``start(dg, ctx)``; ``score(group, ctx)`` for every group (higher = keep), returning an
array or :class:`Scores`; then, only when the criterion overrides it, ``update(group, keep, ctx)``
for every group that loses channels, before they are removed (weight compensation through
``ctx.set_tensor`` / ``ctx.add_bias``, e.g. obspa); and ``finish(dg, keeps, ctx)`` once with every
keep mask (obspa-seq). Class attributes declare what the pruner may rely on: ``scores_comparable``
(scores compare across groups as they are, no per-group normalisation), ``takes_remove_hint``
(score with ``ctx.remove_hint``: how many channels each group will lose), ``needs_model`` (runs
the model, so every weight must be loaded). A plain callable ``(group, ctx) -> scores`` is wrapped
as a criterion. ``register(name, factory)`` adds one; the CLI lists :func:`names`.
"""

from __future__ import annotations

import importlib
import math
from abc import ABC, abstractmethod
from dataclasses import dataclass
from typing import Callable, Dict, List, Tuple, Union

import numpy as np

from edgekit.errors import InputError


@dataclass
class Scores:
    """What :meth:`Criterion.score` may return instead of a bare array: the scores and how far they
    are exact. A criterion that orders channels greedily only up to ``ctx.remove_hint`` gives
    ``exact_upto``: removing a channel scored above it makes the pruner score the group again with
    no hint."""

    values: np.ndarray
    exact_upto: float = math.inf


class Criterion(ABC):
    """Base of every importance criterion (see the module docstring for the hook order)."""

    scores_comparable: bool = False
    takes_remove_hint: bool = False
    needs_model: bool = False

    def start(self, dg, ctx) -> None:
        """Called once before any group is scored: reset per-prune state here."""

    @abstractmethod
    def score(self, group, ctx) -> Union[np.ndarray, Scores]:
        """One score per channel of ``group`` (higher = keep)."""

    def update(self, group, keep: np.ndarray, ctx) -> None:
        """Rewrite weights for ``group`` keeping channels ``keep``, before they are removed."""

    def finish(self, dg, keeps: Dict[int, np.ndarray], ctx) -> None:
        """Called once with every group's keep mask, after every :meth:`update`."""

    def report_lines(self) -> Tuple[List[str], List[str]]:
        """``(notes, warnings)`` for the prune report, asked once after the prune."""
        return [], []

    @property
    def updates_weights(self) -> bool:
        """True when this criterion rewrites weights (it overrides update or finish)."""
        cls = type(self)
        return cls.update is not Criterion.update or cls.finish is not Criterion.finish

    def __call__(self, group, ctx) -> np.ndarray:
        """The scores as an array (a criterion is also usable as a plain scoring function)."""
        s = self.score(group, ctx)
        return s.values if isinstance(s, Scores) else s


class FunctionCriterion(Criterion):
    """A plain ``(group, ctx) -> scores`` callable used as a criterion."""

    def __init__(self, fn: Callable[..., object]):
        self.fn = fn
        self.__name__ = getattr(fn, "__name__", type(fn).__name__)

    def score(self, group, ctx):
        return self.fn(group, ctx)


_REGISTRY: Dict[str, Callable[..., Criterion]] = {}
# modules that register criteria when imported (kept lazy: e.g. obspa pulls in extra maths)
_BUILTIN_MODULES: List[str] = ["edgekit.prune.obspa.criterion"]
_loaded = False


def register(name: str, factory: Callable[..., Criterion]) -> None:
    """Make ``factory(**options)`` available as criterion ``name``."""
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


def get(name_or_callable, **options) -> Criterion:
    """The criterion registered as ``name_or_callable`` (built with ``options``), a Criterion
    instance as given, or a plain callable wrapped in :class:`FunctionCriterion`."""
    if isinstance(name_or_callable, Criterion):
        return name_or_callable
    if callable(name_or_callable) and not isinstance(name_or_callable, str):
        return FunctionCriterion(name_or_callable)
    _load()
    if name_or_callable not in _REGISTRY:
        raise InputError(f"unknown criterion '{name_or_callable}'", hint="choose one of: " + ", ".join(names()))
    return _REGISTRY[name_or_callable](**options)


def _per_position(arr: np.ndarray, axis: int, p: int) -> np.ndarray:
    a = np.moveaxis(np.asarray(arr, dtype=np.float32), axis, 0).reshape(arr.shape[axis], -1)
    if p == 1:
        return np.abs(a).sum(axis=1)
    return np.sqrt(np.square(a).sum(axis=1))


class Magnitude(Criterion):
    """L1 / L2 norm of every weight slice of the group (producer rows and consumer columns),
    normalised per member (divided by the member's mean) so wide and narrow layers compare, then
    aggregated over members with ``sum`` / ``mean`` / ``max``."""

    def __init__(self, p: int = 1, agg: str = "sum", normalize: bool = True, roles=("out", "in")):
        if agg not in ("sum", "mean", "max"):
            raise InputError(f"unknown aggregation {agg!r}", hint="sum, mean or max")
        self.p, self.agg, self.normalize, self.roles = p, agg, normalize, tuple(roles)

    def score(self, group, ctx) -> np.ndarray:
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


class BNScale(Criterion):
    """|gamma| of the BatchNormalization layers in the group (network-slimming); groups without BN
    fall back to L1 magnitude."""

    def score(self, group, ctx) -> np.ndarray:
        sc = np.zeros(group.size)
        found = False
        for m in group.members:
            if m.role == "bn" and m.node is not None and m.node.input[1] == m.tensor:
                v = np.abs(np.asarray(ctx.tensor(m.tensor), dtype=np.float64))
                ok = m.index >= 0
                np.add.at(sc, m.index[ok], v[ok])
                found = True
        return sc if found else Magnitude()(group, ctx)


class RandomScore(Criterion):
    """Uniform random scores (a baseline for the other criteria)."""

    def __init__(self, seed: int = 0):
        self.rng = np.random.default_rng(seed)

    def score(self, group, ctx) -> np.ndarray:
        return self.rng.random(group.size)


register("l1", lambda **kw: Magnitude(p=1, **kw))
register("l2", lambda **kw: Magnitude(p=2, **kw))
register("bn-scale", lambda **kw: BNScale(**kw))
register("random", lambda **kw: RandomScore(**kw))
