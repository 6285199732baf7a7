"""The budget search behind ``edgekit optimize``: the most accurate candidate whose latency on the
target meets the budget.

One Optuna trial is one pruning choice (FLOPs level x criterion x scope x channel rounding, or no
pruning); each trial builds the float candidate and, where the target has it, the INT8 one, times
both and scores both. **The gate**: an INT8 candidate is kept only when it is faster than the float
candidate of the same pruning on this target; otherwise it is recorded as ``gated`` and never
picked. Trials go to a journal in ``OUT/journal.log`` (Optuna's JournalStorage): a rerun of the same
command loads the finished trials and continues, so a crash or Ctrl-C loses at most the running
trial. TPE samples the space after the single-knob seeds (INT8 alone, FLOPs pruning alone); with
large evaluation sets a successive-halving pruner stops trials whose accuracy on a quarter of the
data is already poor.
"""

from __future__ import annotations

import hashlib
import time
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Dict, List, Optional, Sequence, Tuple

from edgekit.devices import get_profile
from edgekit.errors import DependencyMissingError, EdgekitError, InputError
from edgekit.graph.flops import count_flops
from edgekit.optimize.data import LabelledData
from edgekit.optimize.evaluate import evaluate
from edgekit.optimize.latency import ESTIMATED, MEASURED, Timing, estimate, measure_cpu
from edgekit.optimize.latency_table import LatencyTable, cached_table
from edgekit.optimize.recipe import Recipe, build, feeds_for, resolve
from edgekit.quantize.calibrate import CalibrationData

LEVELS = (0.85, 0.7, 0.55, 0.45, 0.35, 0.25, 0.18)   # fraction of FLOPs kept
CRITERIA = ("l1", "obspa", "obspa-seq")
SCOPES = ("global", "uniform")
ROUND_TO = (1, 8, 16)
HALVING_MIN_SAMPLES = 2000  # below this a full evaluation is cheap: no early stopping
JOURNAL = "journal.log"


@dataclass
class OptimizeSettings:
    """What to search for and how long; typed values (the CLI parses the flags)."""

    device: str = "cpu"
    latency_ms: Optional[float] = None
    speedup: Optional[float] = None
    max_drop: float = 1.0           # accuracy points (top-1, or agreement without labels)
    trials: int = 24
    budget_minutes: Optional[float] = None
    batch: int = 1
    threads: Optional[int] = 1
    duration_s: float = 0.5
    seed: int = 0
    levels: Sequence[float] = LEVELS
    criteria: Sequence[str] = CRITERIA
    scopes: Sequence[str] = SCOPES
    round_to: Sequence[int] = ROUND_TO
    calib_samples: int = 256
    latency_aware: bool = False     # also prune by the latency table (guide "latency" beside "flops")

    def validate(self) -> None:
        if (self.latency_ms is None) == (self.speedup is None):
            raise InputError("give exactly one of --latency-ms and --speedup")
        if self.latency_ms is not None and not self.latency_ms > 0:
            raise InputError(f"--latency-ms must be positive, got {self.latency_ms}")
        if self.speedup is not None and not self.speedup > 0:
            raise InputError(f"--speedup must be positive, got {self.speedup}")
        if self.trials < 1:
            raise InputError(f"--trials must be >= 1, got {self.trials}")
        if self.batch < 1:
            raise InputError(f"--batch must be >= 1, got {self.batch}")
        if self.max_drop < 0:
            raise InputError(f"--max-drop must be >= 0, got {self.max_drop}")
        if self.budget_minutes is not None and not self.budget_minutes > 0:
            raise InputError(f"--budget-minutes must be positive, got {self.budget_minutes}")
        if not self.levels or any(not 0.0 < lv < 1.0 for lv in self.levels):
            raise InputError("pruning levels must lie in (0, 1)")


@dataclass
class Candidate:
    """One model the search built and timed; ``status``: ok | gated | stopped | failed."""

    trial: int
    recipe: Recipe
    latency: Optional[Timing]
    accuracy: Optional[float]
    flops_ratio: float = 1.0
    status: str = "ok"
    note: str = ""
    seconds: float = 0.0

    def meets(self, budget_ms: float) -> bool:
        return self.status == "ok" and self.latency is not None and self.latency.median_ms <= budget_ms

    def to_dict(self) -> dict:
        return {"trial": self.trial, "label": self.recipe.label(), "recipe": self.recipe.to_dict(),
                "latency": None if self.latency is None else self.latency.to_dict(), "accuracy": self.accuracy,
                "flops_ratio": self.flops_ratio, "status": self.status, "note": self.note, "seconds": self.seconds}

    @classmethod
    def from_dict(cls, d: dict) -> "Candidate":
        lat = d.get("latency")
        return cls(trial=d["trial"], recipe=Recipe(**d["recipe"]), latency=None if lat is None else Timing(**lat),
                   accuracy=d.get("accuracy"), flops_ratio=d.get("flops_ratio", 1.0), status=d.get("status", "ok"),
                   note=d.get("note", ""), seconds=d.get("seconds", 0.0))


@dataclass
class OptimizeResult:
    """The search's outcome. ``status``: met | over-budget | over-drop; ``model`` is the pick."""

    device: str
    latency_kind: str
    metric: str                      # "top1" or "agreement"
    budget_ms: float
    baseline: Candidate
    candidates: List[Candidate]
    pick: Optional[Candidate]
    status: str
    advice: str = ""
    resumed_trials: int = 0
    study: str = ""
    final: Dict[str, object] = field(default_factory=dict)   # pick and original re-timed side by side
    warnings: List[str] = field(default_factory=list)
    seconds: float = 0.0
    model: object = None

    def to_dict(self) -> dict:
        return {"device": self.device, "latency_kind": self.latency_kind, "metric": self.metric,
                "budget_ms": self.budget_ms, "status": self.status, "advice": self.advice,
                "baseline": self.baseline.to_dict(), "pick": None if self.pick is None else self.pick.to_dict(),
                "final": dict(self.final), "candidates": [c.to_dict() for c in self.candidates],
                "resumed_trials": self.resumed_trials, "study": self.study, "warnings": list(self.warnings),
                "seconds": self.seconds}


class _Target:
    """Times and scores models for one device: the timing input, the data, the reference outputs."""

    def __init__(self, model, settings: OptimizeSettings, data: LabelledData, calib: CalibrationData):
        prof = get_profile(settings.device)
        self.kind = MEASURED if prof.kind == "cpu" else ESTIMATED
        self.device = prof.name
        self.settings = settings
        self.model = model
        self.data = data
        self.calib = calib
        self.feeds = feeds_for(data.arrays, settings.batch)
        self.base_flops = max(1, count_flops(model))
        # the float precision and the faster ones the gate may admit, per target
        self.float_precision = "fp32" if self.kind == MEASURED else "fp16"
        self.precisions = ("int8",)
        self.quant_target = "cpu" if self.kind == MEASURED else "tensorrt"
        self.table_dir: Optional[Path] = None
        self._table: Optional[LatencyTable] = None

    def table(self) -> LatencyTable:
        """The model's latency table on this target, built once (cached in ``table_dir``)."""
        if self._table is None:
            self._table = cached_table(self.model, self.table_dir or Path("."), self.device, self.kind,
                                       self.settings.batch, self.settings.threads)
        return self._table

    def time(self, model, precision: str) -> Timing:
        if self.kind == MEASURED:
            return measure_cpu(model, self.feeds, self.settings.duration_s, self.settings.threads)
        return estimate(model, self.device, precision, self.settings.batch)

    def score(self, model, data: Optional[LabelledData] = None) -> float:
        """Top-1 with labels, else top-1 agreement with the input model."""
        data = data or self.data
        if data.labels is not None:
            return float(evaluate(model, data, threads=self.settings.threads).top1 or 0.0)
        return float(evaluate(model, data, reference=self.model, threads=self.settings.threads).agreement or 0.0)


def _optuna():
    try:
        import optuna  # lazy: the optimize extra
    except ImportError:
        raise DependencyMissingError("optimize", "search the compression space (Optuna)") from None

    optuna.logging.set_verbosity(optuna.logging.ERROR)  # the library never prints; the CLI reports trials
    return optuna


def _storage(optuna, out_dir: Path):
    from optuna.storages.journal import JournalFileBackend  # lazy: the optimize extra

    with warnings.catch_warnings():
        warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
        return optuna.storages.JournalStorage(JournalFileBackend(str(out_dir / JOURNAL)))


def optimize(model, settings: OptimizeSettings, data: LabelledData, calib: CalibrationData, out_dir,
             progress: Optional[Callable[..., None]] = None) -> OptimizeResult:
    """Search the compression space of ``model`` (ModelProto) for ``settings`` on checked ``data``;
    trials go to ``out_dir/journal.log`` (a rerun resumes). Returns the result with the pick rebuilt
    in ``result.model``; writes nothing but the journal (see :func:`edgekit.optimize.output.write`)."""
    settings.validate()
    t0 = time.perf_counter()
    optuna = _optuna()
    target = _Target(model, settings, data, calib)
    out_dir = Path(out_dir)
    target.table_dir = out_dir
    out_dir.mkdir(parents=True, exist_ok=True)
    halving = data.num_samples >= HALVING_MIN_SAMPLES
    pruner = optuna.pruners.SuccessiveHalvingPruner() if halving else optuna.pruners.NopPruner()
    name = study_name(model.SerializeToString(), settings, data)
    study = optuna.create_study(study_name=name, storage=_storage(optuna, out_dir), direction="maximize",
                                load_if_exists=True, pruner=pruner,
                                sampler=optuna.samplers.TPESampler(seed=settings.seed, n_startup_trials=6))
    baseline = _baseline(study, target)
    budget_ms = settings.latency_ms if settings.latency_ms is not None else baseline.latency.median_ms / settings.speedup
    finished = (optuna.trial.TrialState.COMPLETE, optuna.trial.TrialState.PRUNED)
    resumed = sum(t.state in finished for t in study.trials)
    if not study.trials:
        _seed(study, settings, baseline.latency.median_ms, budget_ms)
    objective = _Objective(target, settings, budget_ms, halving, _known(study))
    remaining = settings.trials - resumed
    if progress is not None:
        progress(total=settings.trials, completed=resumed, description="searching")
    if remaining > 0:
        def report(_study, trial) -> None:
            if progress is not None:
                progress(advance=1, description=f"trial {trial.number}: {trial.user_attrs.get('label', '')}")

        timeout = None if settings.budget_minutes is None else max(1.0, settings.budget_minutes * 60 - (time.perf_counter() - t0))
        study.optimize(objective, n_trials=remaining, timeout=timeout, callbacks=[report], gc_after_trial=False)
    cands = [Candidate.from_dict(d) for t in study.trials if t.state in finished for d in t.user_attrs.get("candidates", [])]
    res = _choose(target, settings, baseline, cands, budget_ms)
    res.resumed_trials, res.study = resumed, name
    _final(res, target)
    res.seconds = round(time.perf_counter() - t0, 2)
    return res


def study_name(model_bytes: bytes, settings: OptimizeSettings, data: LabelledData) -> str:
    """Names the study by everything that changes its trials' values: the same command resumes it,
    a different one starts a new study in the same journal."""
    h = hashlib.sha1(model_bytes)
    h.update(repr((settings.device, settings.latency_ms, settings.speedup, settings.batch, settings.threads,
                   data.source, data.num_samples, tuple(settings.levels), tuple(settings.criteria),
                   tuple(settings.scopes), tuple(settings.round_to), settings.calib_samples)
                  + (("latency-aware",) if settings.latency_aware else ())).encode())
    return "edgekit-optimize-" + h.hexdigest()[:12]


def _baseline(study, target: _Target) -> Candidate:
    """The input model at the float precision: timed and scored once per study (kept in the journal,
    so a resumed search compares against the same figure)."""
    have = study.user_attrs.get("baseline")
    if have:
        return Candidate.from_dict(have)
    t0 = time.perf_counter()
    r = Recipe(precision=target.float_precision, quant_target=target.quant_target)
    # the budget hangs on this figure (--speedup): the median of three timings, not one cold one
    timings = sorted((target.time(target.model, r.precision) for _ in range(3)), key=lambda tm: tm.median_ms)
    base = Candidate(-1, r, timings[1], target.score(target.model))
    base.seconds = round(time.perf_counter() - t0, 3)
    study.set_user_attr("baseline", base.to_dict())
    return base


def _seed(study, settings: OptimizeSettings, base_ms: float, budget_ms: float) -> None:
    """The single-knob answers first: INT8 alone, then FLOPs-target pruning alone at the level
    nearest the budget (L1, global, no rounding) -- the search must beat or equal both."""
    study.enqueue_trial({"flops": 1.0})
    level = min(settings.levels, key=lambda lv: abs(lv - budget_ms / base_ms))
    knob = {"flops": level, "criterion": settings.criteria[0], "scope": settings.scopes[0],
            "round_to": min(settings.round_to)}
    if settings.latency_aware:  # the same level guided by the latency table, side by side
        knob["guide"] = "flops"
        study.enqueue_trial(knob)
        knob = {"flops": level, "guide": "latency", "criterion": settings.criteria[0],
                "round_to": min(settings.round_to)}
    study.enqueue_trial(knob)


def _known(study) -> Dict[str, float]:
    """Recipe keys of finished trials -> their objective values (a repeat is not rebuilt)."""
    out: Dict[str, float] = {}
    for t in study.trials:
        if t.value is not None and "key" in t.user_attrs:
            out[t.user_attrs["key"]] = t.value
    return out


def _score(cands: List[Candidate], budget_ms: float) -> float:
    """The trial's objective: the best accuracy among its candidates within budget (0..1); without
    one, minus how many budgets the fastest takes (always below any candidate within budget)."""
    ok = [c for c in cands if c.status == "ok" and c.latency is not None and c.accuracy is not None]
    meet = [c.accuracy for c in ok if c.latency.median_ms <= budget_ms]
    if meet:
        return max(meet)
    if not ok:
        return -1e3
    fastest = min(ok, key=lambda c: c.latency.median_ms)
    return -fastest.latency.median_ms / budget_ms + 0.01 * fastest.accuracy


class _Objective:
    """One trial: sample a pruning choice, build the float and INT8 candidates, time, gate, score."""

    def __init__(self, target: _Target, settings: OptimizeSettings, budget_ms: float, halving: bool,
                 known: Dict[str, float]):
        self.target = target
        self.settings = settings
        self.budget_ms = budget_ms
        self.halving = halving
        self.known = known

    def sample(self, trial) -> Recipe:
        s, t = self.settings, self.target
        flops = trial.suggest_categorical("flops", [1.0, *s.levels])
        if flops >= 1.0:
            return Recipe(precision=t.float_precision, quant_target=t.quant_target, calib_samples=s.calib_samples)
        if s.latency_aware and trial.suggest_categorical("guide", ["flops", "latency"]) == "latency":
            return Recipe(flops_target=flops, criterion=trial.suggest_categorical("criterion", list(s.criteria)),
                          round_to=trial.suggest_categorical("round_to", list(s.round_to)), latency_aware=True,
                          precision=t.float_precision, quant_target=t.quant_target, calib_samples=s.calib_samples)
        return Recipe(flops_target=flops, criterion=trial.suggest_categorical("criterion", list(s.criteria)),
                      scope=trial.suggest_categorical("scope", list(s.scopes)),
                      round_to=trial.suggest_categorical("round_to", list(s.round_to)),
                      precision=t.float_precision, quant_target=t.quant_target, calib_samples=s.calib_samples)

    def __call__(self, trial) -> float:
        import optuna  # lazy: the optimize extra

        r = self.sample(trial)
        key = r.key()
        trial.set_user_attr("key", key)
        trial.set_user_attr("label", r.label())
        if key in self.known:  # TPE proposed a choice already built: its value, no second copy
            trial.set_user_attr("duplicate", True)
            return self.known[key]
        cands, stopped = self.run(trial, r)
        trial.set_user_attr("candidates", [c.to_dict() for c in cands])
        if stopped:
            raise optuna.TrialPruned()
        value = _score(cands, self.budget_ms)
        self.known[key] = value
        return value

    def run(self, trial, r: Recipe) -> Tuple[List[Candidate], bool]:
        """The trial's candidates and whether the halving pruner stopped it before the full evaluation."""
        t, n = self.target, trial.number
        t0 = time.perf_counter()
        try:
            r, fp = resolve(t.model, r, t.calib, t.table() if r.latency_aware and r.prunes else None)
        except EdgekitError as exc:
            return [Candidate(n, r, None, None, status="failed", note=exc.message)], False
        flops = count_flops(fp) / t.base_flops
        built = [(r, fp, t.time(fp, r.precision))]
        q_recipe = r.with_precision("int8")
        try:
            q = build(t.model, q_recipe, t.calib, pruned=fp)
            built.append((q_recipe, q, t.time(q, "int8")))
        except EdgekitError as exc:
            failed = Candidate(n, q_recipe, None, None, flops, status="failed", note=exc.message)
        else:
            failed = None
        if self.halving:
            part = t.data.head(max(1, t.data.num_samples // 4))
            quick = [Candidate(n, rr, lat, t.score(m, part), flops) for rr, m, lat in built]
            trial.report(_score(quick, self.budget_ms), 0)
            if trial.should_prune():
                for c in quick:
                    c.status, c.note = "stopped", "stopped after a quarter of the data (successive halving)"
                return quick, True
        cands = [Candidate(n, rr, lat, t.score(m), flops) for rr, m, lat in built]
        if len(cands) == 2 and cands[1].latency.median_ms >= cands[0].latency.median_ms:
            cands[1].status = "gated"
            cands[1].note = (f"INT8 {cands[1].latency.median_ms:.3f} ms is not faster than {r.precision} "
                             f"{cands[0].latency.median_ms:.3f} ms on {t.device}")
        cands += [failed] if failed is not None else []
        for c in cands:
            c.seconds = round(time.perf_counter() - t0, 3)
        return cands, False


def _choose(target: _Target, settings: OptimizeSettings, baseline: Candidate, cands: List[Candidate],
            budget_ms: float) -> OptimizeResult:
    """The pick: the most accurate candidate within budget (ties: the faster); if none is within
    budget, the fastest one, with what is missing."""
    metric = "top1" if target.data.labels is not None else "agreement"
    res = OptimizeResult(device=target.device, latency_kind=target.kind, metric=metric, budget_ms=budget_ms,
                         baseline=baseline, candidates=cands, pick=None, status="over-budget")
    pool = [c for c in [baseline, *cands] if c.status == "ok" and c.latency is not None and c.accuracy is not None]
    meet = [c for c in pool if c.latency.median_ms <= budget_ms]
    base_acc = baseline.accuracy or 0.0
    if meet:
        res.pick = max(meet, key=lambda c: (c.accuracy, -c.latency.median_ms))
        drop = 100.0 * (base_acc - res.pick.accuracy)
        res.status = "met" if drop <= settings.max_drop + 1e-9 else "over-drop"
        if res.status == "over-drop":
            close = [c for c in pool if 100.0 * (base_acc - c.accuracy) <= settings.max_drop]
            fastest = min(close, key=lambda c: c.latency.median_ms) if close else None
            res.advice = (f"the most accurate candidate within {budget_ms:.3f} ms loses {drop:.2f} points "
                          f"(--max-drop {settings.max_drop:g})"
                          + (f"; the fastest within {settings.max_drop:g} points takes "
                             f"{fastest.latency.median_ms:.3f} ms" if fastest else ""))
        return res
    if pool:
        res.pick = min(pool, key=lambda c: (c.latency.median_ms, -(c.accuracy or 0.0)))
        need = res.pick.latency.median_ms / budget_ms
        res.advice = (f"no candidate meets {budget_ms:.3f} ms; the fastest ({res.pick.recipe.label()}) takes "
                      f"{res.pick.latency.median_ms:.3f} ms, {need:.2f}x the budget: a further {need:.2f}x speed-up "
                      "is needed (more --trials, lower pruning levels, more threads, or a faster device)")
    else:
        res.advice = "no candidate could be built and timed; see the candidates' notes"
    return res


def _final(res: OptimizeResult, target: _Target, rounds: int = 3) -> None:
    """Rebuild the pick from its recipe and, where latency is measured, time it and the input model
    side by side (alternating, ``rounds`` each) so the speed-up is one run's ratio."""
    if res.pick is None:
        return
    res.model = target.model if res.pick.trial < 0 else build(target.model, res.pick.recipe, target.calib)
    if target.kind != MEASURED:
        res.warnings.append(f"latencies are ESTIMATED for {target.device} by edgekit's cost model, not measured; "
                            "re-measure the pick on the board")
        return
    orig, pick = [], []
    for _ in range(rounds):
        orig.append(target.time(target.model, "fp32").median_ms)
        pick.append(target.time(res.model, res.pick.recipe.precision).median_ms)
    o, p = sorted(orig)[rounds // 2], sorted(pick)[rounds // 2]
    res.final = {"original_ms": o, "pick_ms": p, "speedup": o / p if p > 0 else None, "rounds": rounds,
                 "accuracy": target.score(res.model), "within_budget": p <= res.budget_ms}
    if res.status == "met" and p > res.budget_ms:
        res.warnings.append(f"re-measured side by side the pick takes {p:.3f} ms, over the {res.budget_ms:.3f} ms "
                            "budget it met during the search (timing noise; the machine may be loaded)")
