"""A recipe: the compression steps that turn the input model into one candidate, as plain values.

The search stores a recipe per candidate, writes the pick's to ``recipe.json`` and rebuilds the
chosen model from it, so ``edgekit optimize --recipe recipe.json MODEL`` replays exactly what the
search measured (pruning and calibration are deterministic for the same data).
"""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Optional, Tuple

import numpy as np

from edgekit.errors import InputError
from edgekit.optimize.latency_table import greedy_counts
from edgekit.prune import prune
from edgekit.quantize.calibrate import CalibrationData
from edgekit.quantize.ptq import quantize

FORMAT = "edgekit-recipe"
VERSION = 1
PRECISIONS = ("fp32", "fp16", "int8")
PRUNE_CALIB_SAMPLES = 128


@dataclass(frozen=True)
class Recipe:
    """Prune (``flops_target`` < 1) then set the precision; ``int8`` quantizes for ``quant_target``.

    ``latency_aware``: ``flops_target`` is then the share of the *modelled latency* kept, and the
    channels each group keeps come from the latency table's greedy
    (:mod:`edgekit.optimize.latency_table`); ``keep_counts`` records them as ``((group, n), ...)``
    so that a replay needs no table."""

    flops_target: float = 1.0
    criterion: str = "l1"
    scope: str = "global"
    round_to: int = 8
    precision: str = "fp32"
    quant_target: str = "cpu"     # cpu: ORT CPU INT8 (QDQ); tensorrt: TensorRT QDQ placement
    quant_method: str = "minmax"
    calib_samples: int = 256
    latency_aware: bool = False
    keep_counts: Optional[Tuple[Tuple[int, int], ...]] = None

    def __post_init__(self) -> None:
        if self.keep_counts is not None:  # JSON gives lists
            object.__setattr__(self, "keep_counts", tuple((int(g), int(n)) for g, n in self.keep_counts))

    @property
    def prunes(self) -> bool:
        return self.flops_target < 0.999

    def key(self) -> str:
        """Equal for recipes that build the same model (pruning knobs do not matter without pruning)."""
        p = f"prune={self.flops_target:.3f}/{self.criterion}/{self.scope}/{self.round_to}" if self.prunes else "prune=none"
        if self.prunes and self.latency_aware:
            p = f"prune=latency/{self.flops_target:.3f}/{self.criterion}/{self.round_to}"
        q = f"{self.precision}/{self.quant_target}/{self.quant_method}" if self.precision == "int8" else self.precision
        return f"{p}|{q}"

    def label(self) -> str:
        """Short text for tables: ``obspa-seq global 0.45 r8 + int8``."""
        p = f"{self.criterion} {self.scope} {self.flops_target:.2f} r{self.round_to}" if self.prunes else "no pruning"
        if self.prunes and self.latency_aware:
            p = f"latency-aware {self.criterion} {self.flops_target:.2f} r{self.round_to}"
        return f"{p} + {self.precision}"

    def with_precision(self, precision: str) -> "Recipe":
        return replace(self, precision=precision)

    def steps(self) -> list:
        out = []
        if self.prunes and self.latency_aware:
            out.append({"step": "prune", "guide": "latency", "latency_target": self.flops_target,
                        "criterion": self.criterion, "round_to": self.round_to,
                        "keep_counts": None if self.keep_counts is None else dict(self.keep_counts)})
        elif self.prunes:
            out.append({"step": "prune", "flops_target": self.flops_target, "criterion": self.criterion,
                        "scope": self.scope, "round_to": self.round_to})
        if self.precision == "int8":
            out.append({"step": "quantize", "target": self.quant_target, "method": self.quant_method,
                        "calib_samples": self.calib_samples})
        elif self.precision == "fp16":
            out.append({"step": "build", "precision": "fp16"})
        return out

    def to_dict(self) -> dict:
        return dict(self.__dict__)


def _prune_calib(calib: Optional[CalibrationData]):
    if calib is not None and len(calib.arrays) == 1:
        return next(iter(calib.arrays.values()))[:PRUNE_CALIB_SAMPLES]
    return None


def resolve(model, recipe: Recipe, calib: Optional[CalibrationData], table) -> Tuple[Recipe, object]:
    """A latency-aware recipe without counts: prune by the greedy on ``table`` (a
    :class:`~edgekit.optimize.latency_table.LatencyTable`) and return ``(recipe with its counts,
    pruned float model)``; any other recipe: ``(recipe, build(...))`` at its float precision."""
    if not (recipe.prunes and recipe.latency_aware and recipe.keep_counts is None):
        return recipe, build(model, recipe, calib)

    def decide(groups, scores):
        return greedy_counts(groups, scores, table, recipe.flops_target, recipe.round_to)

    out, report = prune(model, keep_counts=decide, criterion=recipe.criterion, scope="global",
                        calib=_prune_calib(calib))
    counts = tuple((int(g), int(k.sum())) for g, k in sorted(report.keeps.items()) if not k.all())
    return replace(recipe, keep_counts=counts), out


def build(model, recipe: Recipe, calib: Optional[CalibrationData] = None,
          pruned=None):
    """The candidate model of ``recipe`` (ModelProto in, ModelProto out; ``model`` is not modified).

    ``pruned``: the already pruned float model of the same recipe (the search prunes once and
    quantizes that); ``calib``: calibration samples for data-aware criteria and INT8.
    """
    out = model
    if recipe.prunes:
        if pruned is not None:
            out = pruned
        elif recipe.latency_aware:
            if recipe.keep_counts is None:
                raise InputError("a latency-aware recipe without its channel counts cannot be replayed",
                                 hint="give the recipe.json that `edgekit optimize` wrote")
            out, _ = prune(model, keep_counts=dict(recipe.keep_counts), criterion=recipe.criterion, scope="global",
                           calib=_prune_calib(calib))
        else:
            arr = None
            if calib is not None and len(calib.arrays) == 1:
                arr = next(iter(calib.arrays.values()))[:PRUNE_CALIB_SAMPLES]
            out, _ = prune(model, flops_target=recipe.flops_target, criterion=recipe.criterion, scope=recipe.scope,
                           round_to=recipe.round_to, calib=arr)
    if recipe.precision == "int8":
        if calib is None:
            raise InputError("INT8 needs calibration data", hint="give --calib (or --data) with real samples")
        root = logging.getLogger()
        level = root.level
        root.setLevel(logging.ERROR)  # ORT's quantizer logs a warning per non-float tensor (ViT shapes)
        try:
            out, _ = quantize(out, calib, method=recipe.quant_method, target=recipe.quant_target,
                              samples=recipe.calib_samples, measure_fidelity=False, with_cache_scales=False)
        finally:
            root.setLevel(level)
    return out


def to_json(recipe: Recipe, extra: dict) -> dict:
    """The recipe.json document: format tag, the steps (for people), the recipe (for replay), ``extra``."""
    return {"format": FORMAT, "version": VERSION, "steps": recipe.steps(), "recipe": recipe.to_dict(), **extra}


def load(path) -> Recipe:
    """Read a recipe.json written by ``edgekit optimize``; a clear InputError for anything else."""
    p = Path(path)
    try:
        doc = json.loads(p.read_text())
    except (OSError, ValueError) as exc:
        raise InputError(f"cannot read recipe {p}: {exc}") from exc
    if not isinstance(doc, dict) or doc.get("format") != FORMAT or not isinstance(doc.get("recipe"), dict):
        raise InputError(f"{p} is not an edgekit recipe", hint="give the recipe.json that `edgekit optimize` wrote")
    fields = Recipe.__dataclass_fields__
    unknown = set(doc["recipe"]) - set(fields)
    if unknown:
        raise InputError(f"{p} has unknown recipe fields {sorted(unknown)}", hint="written by a newer edgekit?")
    try:
        r = Recipe(**doc["recipe"])
    except TypeError as exc:
        raise InputError(f"{p}: {exc}") from exc
    if r.precision not in PRECISIONS:
        raise InputError(f"{p}: unknown precision {r.precision!r}", hint="one of " + ", ".join(PRECISIONS))
    if not 0.0 < float(r.flops_target) <= 1.0:
        raise InputError(f"{p}: flops_target must be in (0, 1], got {r.flops_target}")
    return r


def feeds_for(data_arrays, batch: int) -> dict:
    """The timing input: the first ``batch`` samples of real data (repeated when there are fewer)."""
    out = {}
    for k, v in data_arrays.items():
        reps = -(-batch // v.shape[0])
        out[k] = np.ascontiguousarray(np.concatenate([v] * reps)[:batch]) if reps > 1 else np.ascontiguousarray(v[:batch])
    return out
