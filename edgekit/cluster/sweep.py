"""``edgekit sweep``: every (model, device, precision) on the boards of a cluster, in parallel.

Results are journaled (one JSON line each, flushed) the moment they arrive, so an interrupted sweep
loses nothing and ``resume=True`` runs only what is not done yet. Each device gets as many tasks in
flight as it has live boards, so a task starts when it is submitted and its timeout measures the
task, not the queue. A board lost mid-task costs a retry on another board of the same kind (Ray's
``max_retries``); the boards lost during the sweep are named in the result.
"""

from __future__ import annotations

import json
import os
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Dict, List, Optional, Sequence

from edgekit.cluster.boards import BoardStatus
from edgekit.cluster.farm import ClusterError, boards, require_boards, submit, unwrap, _ray
from edgekit.cluster.tasks import BoardJob, model_hash, profile_job
from edgekit.devices import get_profile
from edgekit.errors import EdgekitError, InputError
from edgekit.graph.io import atomic_output

JOURNAL = "journal.jsonl"


@dataclass
class SweepResult:
    """All rows of a sweep (done now or earlier, from the journal), the failures, the lost boards."""

    rows: List[dict]
    failed: List[dict]
    lost_boards: List[dict]
    journal: Path
    resumed: int = 0
    seconds: float = 0.0
    warnings: List[str] = field(default_factory=list)

    def to_dict(self) -> dict:
        return {"results": self.rows, "failed": self.failed, "lost_boards": self.lost_boards,
                "journal": str(self.journal), "resumed": self.resumed, "seconds": self.seconds,
                "complete": not self.failed, "warnings": self.warnings}


def row(result: dict, job: BoardJob) -> dict:
    """One table row from a task's result: latency, throughput, power, energy when the board has them."""
    rep = result["report"]
    return {"key": job.key, "status": "ok", "model": job.model_name, "device": job.device,
            "precision": job.precision, "board": f"{result['node'].get('host', '?')} "
                                                 f"(node {result['node'].get('node_id', '')[:8]})",
            "node_id": result["node"].get("node_id", ""), "backend": result["backend"],
            "stand_in": result["stand_in"], "engine_cached": result["engine_cached"],
            "latency_ms": rep["latency_ms"], "throughput_qps": rep["throughput_qps"],
            "power_mw": (rep.get("power_mw") or {}).get("mean"),
            "energy_mj_per_inference": rep.get("energy_mj_per_inference"),
            "seconds": result["seconds"], "warnings": result["warnings"]}


def read_journal(path: Path) -> Dict[str, dict]:
    """Finished rows by key (the last line of a key wins); a torn last line is ignored."""
    done: Dict[str, dict] = {}
    if not path.exists():
        return done
    for line in path.read_text().splitlines():
        try:
            entry = json.loads(line)
        except ValueError:
            continue
        if isinstance(entry, dict) and "key" in entry:
            done[entry["key"]] = entry
    return done


class _Journal:
    def __init__(self, path: Path):
        path.parent.mkdir(parents=True, exist_ok=True)
        torn = path.exists() and path.stat().st_size > 0 and not path.read_bytes().endswith(b"\n")
        self.fh = open(path, "a")
        if torn:  # an interrupted write: end that line, or the next entry would be glued to it
            self.fh.write("\n")

    def write(self, entry: dict) -> None:
        self.fh.write(json.dumps(entry) + "\n")
        self.fh.flush()
        os.fsync(self.fh.fileno())

    def close(self) -> None:
        self.fh.close()


def plan_jobs(models: Sequence[Path], devices: Sequence[str], precisions: Sequence[str], trt_version: str,
              settings: dict) -> List[tuple]:
    """(job, model bytes) for every combination, in model-major order."""
    jobs = []
    for m in models:
        data = Path(m).read_bytes()
        sha = model_hash(data)
        for d in devices:
            name = get_profile(d).name
            for p in precisions:
                key = f"{Path(m).name}|{sha[:12]}|{name}|{p}"
                jobs.append((BoardJob(key=key, model_name=Path(m).name, model_sha=sha, device=name, precision=p,
                                      trt_version=trt_version, settings=dict(settings)), data))
    return jobs


def run_sweep(models: Sequence[Path], devices: Sequence[str], precisions: Sequence[str], out_dir: Path,
              resume: bool = False, settings: Optional[dict] = None, trt_version: str = "",
              timeout_s: float = 600.0, max_retries: int = 2,
              on_result: Optional[Callable[[dict, int, int], None]] = None) -> SweepResult:
    """Run the sweep on the connected cluster; ``on_result(entry, done, total)`` after each one."""
    ray = _ray()
    started = time.perf_counter()
    journal_path = Path(out_dir) / JOURNAL
    jobs = plan_jobs(models, devices, precisions, trt_version, settings or {})
    keys = [j.key for j, _ in jobs]
    if len(set(keys)) != len(keys):
        raise InputError("the same model, device and precision appear twice", hint="list each model once")
    previous = read_journal(journal_path) if resume else {}
    done_before = {k: e for k, e in previous.items() if e.get("status") == "ok" and k in keys}
    todo = [(j, d) for j, d in jobs if j.key not in done_before]
    for dev in sorted({j.device for j, _ in todo}):
        require_boards(dev, trt_version)
    at_start = {b.node_id: b for b in boards()}
    refs_by_model: Dict[str, object] = {}
    pending: Dict[str, List[BoardJob]] = {}
    for j, data in todo:
        if j.model_sha not in refs_by_model:
            refs_by_model[j.model_sha] = ray.put(data)  # one copy per model in the object store
        pending.setdefault(j.device, []).append(j)
    inflight: Dict[object, tuple] = {}
    gone: set = set()  # boards seen dead while the sweep ran
    entries: Dict[str, dict] = dict(done_before)
    failed: List[dict] = []
    journal = _Journal(journal_path)
    total, finished = len(jobs), len(done_before)

    def record(entry: dict) -> None:
        nonlocal finished
        journal.write(entry)
        finished += 1
        if entry["status"] == "ok":
            entries[entry["key"]] = entry
        else:
            failed.append(entry)
        if on_result is not None:
            on_result(entry, finished, total)

    try:
        while pending or inflight:
            live = boards()
            gone.update(nid for nid in at_start if nid not in {b.node_id for b in live})
            for dev in list(pending):
                cap = sum(1 for b in live if dev in b.devices)
                busy = sum(1 for _, (j, _t) in inflight.items() if j.device == dev)
                if cap == 0 and busy == 0:
                    lost = [b.name for b in at_start.values() if dev in b.devices]
                    for j in pending.pop(dev):
                        record(_failure(j, f"no live {dev} board left (lost: {', '.join(lost) or 'none'})"))
                    continue
                while pending.get(dev) and busy < max(cap, 1):
                    j = pending[dev].pop(0)
                    ref = submit(profile_job, dev, refs_by_model[j.model_sha], j, trt_version=trt_version or None,
                                 max_retries=max_retries)
                    inflight[ref] = (j, time.monotonic())
                    busy += 1
                if not pending.get(dev):
                    pending.pop(dev, None)
            ready, _ = ray.wait(list(inflight), num_returns=1, timeout=0.5) if inflight else ([], [])
            for ref in ready:
                j, _t = inflight.pop(ref)
                try:
                    record(row(ray.get(ref).to_dict(), j))
                except Exception as exc:  # noqa: BLE001 - one failed task never ends the sweep
                    err = unwrap(exc)
                    record(_failure(j, err.message if isinstance(err, EdgekitError) else str(err)))
            now = time.monotonic()
            for ref, (j, t) in list(inflight.items()):
                if now - t > timeout_s:
                    ray.cancel(ref, force=True)
                    inflight.pop(ref)
                    record(_failure(j, f"timed out after {timeout_s:g} s and was cancelled"))
    finally:
        journal.close()
    lost = _lost_boards(at_start, gone, wait_s=2.0 if failed else 0.0)
    for f in failed:
        f["lost_boards"] = [b["name"] for b in lost if f["device"] in b["devices"]]
    rows = [entries[k] for k in keys if k in entries]
    return SweepResult(rows=rows, failed=failed, lost_boards=lost, journal=journal_path,
                       resumed=len(done_before), seconds=time.perf_counter() - started)


def _failure(job: BoardJob, message: str) -> dict:
    return {"key": job.key, "status": "failed", "model": job.model_name, "device": job.device,
            "precision": job.precision, "error": message}


def _lost_boards(at_start: Dict[str, BoardStatus], gone: set, wait_s: float) -> List[dict]:
    """Boards alive when the sweep started and seen dead (or gone) since."""
    deadline = time.monotonic() + wait_s
    while True:
        now = {b.node_id: b for b in boards(alive_only=False)}
        lost = [dict(now.get(nid, b).to_dict(), alive=False) for nid, b in at_start.items()
                if nid in gone or nid not in now or not now[nid].alive]
        if lost or time.monotonic() >= deadline:
            return lost
        time.sleep(0.25)


def plot_sweep(rows: List[dict], path: Path) -> Path:
    """Median latency per (model, precision), one bar per device, to ``path`` (png/svg/pdf)."""
    import matplotlib  # lazy: the `plot` extra

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt  # lazy: the `plot` extra

    groups = sorted({(r["model"], r["precision"]) for r in rows})
    devices = sorted({r["device"] for r in rows})
    by = {(r["model"], r["precision"], r["device"]): r["latency_ms"]["median"] for r in rows}
    fig, ax = plt.subplots(figsize=(max(6.0, 1.2 * len(groups) * max(1, len(devices))), 4.0))
    width = 0.8 / max(1, len(devices))
    for i, dev in enumerate(devices):
        xs = [g + i * width for g in range(len(groups))]
        ax.bar(xs, [by.get((m, p, dev), 0.0) for m, p in groups], width, label=dev)
    ax.set_xticks([g + 0.4 - width / 2 for g in range(len(groups))])
    ax.set_xticklabels([f"{m}\n{p}" for m, p in groups], fontsize=8)
    ax.set_ylabel("median latency (ms)")
    ax.set_title("edgekit sweep")
    ax.legend()
    fig.tight_layout()
    with atomic_output(path, suffix=Path(path).suffix) as tmp:
        fig.savefig(tmp, format=Path(path).suffix.lstrip(".") or "png")
    plt.close(fig)
    return Path(path)


__all__ = ["ClusterError", "SweepResult", "plan_jobs", "plot_sweep", "read_journal", "run_sweep"]
