"""Harness overhead: the median `edgekit profile` reports vs a bare `session.run` loop, same process,
same session options, interleaved rounds (goal: within 2 %)."""

from __future__ import annotations

import json
import statistics
import tempfile
import time
from pathlib import Path

import numpy as np


def _small_model(path: Path) -> None:
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    rng = np.random.default_rng(0)
    inits, nodes, cur = [], [], "x"
    for i in range(6):  # a small conv stack: ~0.5-1 ms on one core
        w = numpy_helper.from_array((rng.standard_normal((16, 16 if i else 3, 3, 3)) * 0.1).astype(np.float32), f"w{i}")
        inits.append(w)
        nodes += [helper.make_node("Conv", [cur, f"w{i}"], [f"c{i}"], pads=[1, 1, 1, 1]),
                  helper.make_node("Relu", [f"c{i}"], [f"r{i}"])]
        cur = f"r{i}"
    graph = helper.make_graph(nodes, "small", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 3, 32, 32])],
                              [helper.make_tensor_value_info(cur, TensorProto.FLOAT, [1, 16, 32, 32])], inits)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8  # what ONNX Runtime 1.16+ reads
    onnx.save(model, str(path))


def main(rounds: int = 5, duration_s: float = 1.0) -> dict:
    from edgekit.bench.harness import HarnessSettings, profile_model
    from edgekit.runtime.onnxruntime import OnnxRuntimeRunner

    tmp = Path(tempfile.mkdtemp())
    model = tmp / "small.onnx"
    _small_model(model)
    feeds = {"x": np.random.default_rng(0).standard_normal((1, 3, 32, 32)).astype(np.float32)}
    harness_medians, bare_medians = [], []
    with OnnxRuntimeRunner(str(model), threads=1) as runner:
        sess = runner.session
        names = [o.name for o in sess.get_outputs()]
        for _ in range(rounds):
            rep = profile_model(model, "cpu", "onnxruntime",
                                HarnessSettings(warmup_ms=200, duration_s=duration_s, iterations=10, threads=1))
            harness_medians.append(rep.latency.median)
            for _ in range(50):
                sess.run(names, feeds)
            times = []
            end = time.perf_counter() + duration_s
            while time.perf_counter() < end:
                t0 = time.perf_counter()
                sess.run(names, feeds)
                times.append((time.perf_counter() - t0) * 1000)
            bare_medians.append(statistics.median(times))
    h, b = statistics.median(harness_medians), statistics.median(bare_medians)
    res = {"harness_median_ms": round(h, 4), "bare_loop_median_ms": round(b, 4),
           "ratio_harness_to_bare": round(h / b, 4), "goal": "within 2% (0.98-1.02)",
           "meets_goal": abs(h / b - 1) <= 0.02, "rounds": rounds, "per_round_harness": harness_medians,
           "per_round_bare": bare_medians}
    print(json.dumps(res, indent=2))
    return res


if __name__ == "__main__":
    main()
