"""What runs on a board: a profile (or a build) of an ONNX that came through Ray's object store.

These are plain functions; :mod:`edgekit.cluster.farm` wraps them in ``ray.remote`` with the board's
device resource. On the node the ONNX is stored once under its SHA-256, and an engine is cached per
(model hash, device, precision, TensorRT major.minor), so a second profile of the same model on
the same board reuses the engine. A node with TensorRT (the Python module or ``trtexec``) builds
and profiles an engine; a node without it profiles the ONNX with ONNX Runtime on its CPU (the
stand-in that tests and ``--cluster local`` use; its numbers are labelled as such).
"""

from __future__ import annotations

import hashlib
import importlib.util
import platform
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Dict, List, Optional

from edgekit.bench.harness import HarnessSettings, profile_model
from edgekit.cluster.boards import LABEL_TRT, trt_label
from edgekit.engine import build_engine, plan_build
from edgekit.engine.plan import default_cache_root
from edgekit.errors import EngineMismatchError
from edgekit.graph.io import atomic_output
from edgekit.stats import LatencyReport
from edgekit.trt.manifest import manifest_path
from edgekit.trt.trtexec import find_trtexec


def model_hash(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


@dataclass
class BoardJob:
    """One unit of work for a board: which model (by hash), device, precision, TensorRT and settings."""

    key: str
    model_name: str
    model_sha: str
    device: str
    precision: str = "auto"
    trt_version: str = ""        # requested TensorRT ('' = the board's own)
    backend: str = "auto"        # auto: an engine where TensorRT is, else ONNX Runtime (stand-in)
    settings: Dict[str, object] = field(default_factory=dict)


@dataclass
class BoardResult:
    """What comes back to the desk: the latency report plus where and how it was measured."""

    key: str
    report: LatencyReport
    node: Dict[str, str]
    precision: str
    backend: str
    stand_in: bool               # ONNX Runtime on the node's CPU instead of the board's engine
    engine_cached: bool = False
    build_s: Optional[float] = None
    seconds: float = 0.0
    warnings: List[str] = field(default_factory=list)

    def to_dict(self) -> dict:
        rep = self.report.to_dict(include_times=False)
        return {"key": self.key, "node": self.node, "precision": self.precision, "backend": self.backend,
                "stand_in": self.stand_in, "engine_cached": self.engine_cached, "build_s": self.build_s,
                "seconds": self.seconds, "warnings": self.warnings, "report": rep}


def node_facts() -> Dict[str, str]:
    """This node's id, host and edgekit labels (read inside a Ray task)."""
    import ray  # lazy: only inside a Ray worker

    ctx = ray.get_runtime_context()
    labels = {k: v for k, v in ctx.get_node_labels().items() if not k.startswith("ray.io/")}
    return dict(labels, node_id=ctx.get_node_id(), host=platform.node())


def _check_trt(job: BoardJob, facts: Dict[str, str]) -> None:
    """Defence in depth behind the scheduler's label selector: never profile on another TensorRT."""
    want, have = trt_label(job.trt_version), facts.get(LABEL_TRT, "")
    if want and have != want:
        raise EngineMismatchError(f"board {facts.get('host')} (node {facts.get('node_id', '')[:8]}) has TensorRT "
                                  f"{have or 'unknown'}, the task asks for {want}",
                                  hint="the scheduler should not have placed it here; check the worker's labels")


def _stored_model(data: bytes, sha: str, cache: Path) -> Path:
    path = cache / "models" / f"{sha}.onnx"
    if not path.exists():
        path.parent.mkdir(parents=True, exist_ok=True)
        with atomic_output(path) as tmp:
            tmp.write_bytes(data)
    return path


def _has_tensorrt() -> bool:
    return importlib.util.find_spec("tensorrt") is not None or find_trtexec(required=False) is not None


def profile_job(onnx_bytes: bytes, job: BoardJob, facts: Optional[Dict[str, str]] = None) -> BoardResult:
    """Profile ``job`` on this node; ``facts`` defaults to the Ray node's (tests may pass their own)."""
    t0 = time.perf_counter()
    facts = facts if facts is not None else node_facts()
    _check_trt(job, facts)
    cache = default_cache_root() / "cluster"
    model = _stored_model(onnx_bytes, job.model_sha, cache)
    settings = HarnessSettings(**job.settings)
    use_engine = job.backend in ("tensorrt", "trtexec") or (job.backend == "auto" and _has_tensorrt())
    build_s, cached, warnings = None, False, []
    if use_engine:
        engine = (cache / "engines" /
                  f"{job.model_sha[:16]}-{job.device}-{job.precision}-trt{facts.get(LABEL_TRT, 'x')}.engine")
        cached = engine.exists() and manifest_path(engine).exists()
        run_backend = job.backend if job.backend != "auto" else (
            "tensorrt" if importlib.util.find_spec("tensorrt") is not None else "trtexec")
        if not cached:
            engine.parent.mkdir(parents=True, exist_ok=True)
            plan = plan_build(model, job.device, output=engine, precision=job.precision,
                              backend="trtexec" if run_backend == "trtexec" else "python",
                              trt_version=job.trt_version or None)
            tb = time.perf_counter()
            result = build_engine(plan)
            build_s = time.perf_counter() - tb
            warnings += result.warnings
        report = profile_model(engine, device=job.device, backend=run_backend, settings=settings)
    else:
        report = profile_model(model, device=job.device, backend="onnxruntime", settings=settings)
        if job.precision not in ("auto", "fp32"):
            warnings.append(f"no TensorRT on board {facts.get('host')}: ONNX Runtime ran the ONNX as it is, "
                            f"precision {job.precision} not applied")
    report.model = job.model_name
    return BoardResult(key=job.key, report=report, node=facts, precision=job.precision, backend=report.backend,
                       stand_in=not use_engine, engine_cached=cached, build_s=build_s,
                       seconds=time.perf_counter() - t0, warnings=warnings + list(report.warnings))


@dataclass
class BuiltEngine:
    """An engine built on a board, carried back to the desk with its manifest."""

    engine: bytes
    manifest: bytes
    result: Dict[str, object]
    node: Dict[str, str]


def build_job(onnx_bytes: bytes, job: BoardJob, plan_options: Dict[str, object],
              facts: Optional[Dict[str, str]] = None) -> BuiltEngine:
    """Build an engine for ``job`` on this node (``edgekit build --cluster``); needs TensorRT there."""
    facts = facts if facts is not None else node_facts()
    _check_trt(job, facts)
    cache = default_cache_root() / "cluster"
    model = _stored_model(onnx_bytes, job.model_sha, cache)
    out = cache / "builds" / f"{job.model_sha[:16]}-{job.device}-{time.time_ns()}.engine"
    out.parent.mkdir(parents=True, exist_ok=True)
    plan = plan_build(model, job.device, output=out, **plan_options)
    result = build_engine(plan)
    try:
        return BuiltEngine(engine=out.read_bytes(), manifest=manifest_path(out).read_bytes(),
                           result=result.to_dict(), node=facts)
    finally:
        out.unlink(missing_ok=True)
        manifest_path(out).unlink(missing_ok=True)
