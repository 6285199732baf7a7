"""Per-task overhead of the board farm: `profile_on_board` on a one-node local Ray cluster vs a
direct `profile_model` of the same ONNX with the same settings, interleaved rounds in one process.

Overhead = median(wall time through Ray) - median(wall time direct): object store transfer, task
dispatch, the node-side model store and the result's way back. Goal: <= 10 % of a 3 s profile. The
first (cold) task also starts a Ray worker process; it is reported apart. The ONNX Runtime stand-in
runs on both sides (no TensorRT here), so the profile itself costs the same.

    python bench/cluster_overhead.py [--duration-s 3] [--rounds 3]
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from foundation_profile_overhead import _small_model  # noqa: E402  (the same small conv stack)


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--duration-s", type=float, default=3.0)
    ap.add_argument("--rounds", type=int, default=3)
    args = ap.parse_args()
    os.environ.setdefault("OMP_NUM_THREADS", "1")
    from edgekit.bench.harness import HarnessSettings, profile_model
    from edgekit.cluster import connect, disconnect, profile_on_board

    settings = {"duration_s": args.duration_s, "warmup_ms": 200.0, "threads": 1}
    with tempfile.TemporaryDirectory() as tmp:
        model = Path(tmp) / "small.onnx"
        _small_model(model)
        t = time.perf_counter()
        connect("local", devices=["cpu"])
        start_s = time.perf_counter() - t
        t = time.perf_counter()
        profile_on_board(model, "cpu", settings=dict(settings, duration_s=0.1), backend="onnxruntime")
        cold_s = time.perf_counter() - t
        direct, remote = [], []
        for _ in range(args.rounds):
            t = time.perf_counter()
            profile_model(model, device="cpu", backend="onnxruntime", settings=HarnessSettings(**settings))
            direct.append(time.perf_counter() - t)
            t = time.perf_counter()
            profile_on_board(model, "cpu", settings=settings, backend="onnxruntime")
            remote.append(time.perf_counter() - t)
        disconnect()
    overhead = statistics.median(remote) - statistics.median(direct)
    out = {"duration_s": args.duration_s, "rounds": args.rounds, "ray_start_s": round(start_s, 2),
           "cold_first_task_s": round(cold_s, 2), "direct_s": [round(x, 3) for x in direct],
           "cluster_s": [round(x, 3) for x in remote], "overhead_s": round(overhead, 3),
           "overhead_pct_of_3s_profile": round(100 * overhead / 3.0, 2),
           "goal_pct": 10.0, "ok": overhead <= 0.3}
    print(json.dumps(out, indent=2))


if __name__ == "__main__":
    main()
