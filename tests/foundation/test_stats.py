import math

import numpy as np
import pytest

from edgekit.stats import LatencyReport, Summary, median, percentile


def test_percentile_matches_trtexec_rule():
    # trtexec: sorted[max(n - 1 - int((1 - p/100) * n), 0)], computed in float32:
    # for p=99, n=100: (1 - 0.99f) * 100 = 0.99999 -> 0 excluded -> the maximum; for p=90: 10 excluded
    vals = list(range(1, 101))  # 1..100
    assert percentile(vals, 99) == 100
    assert percentile(vals, 90) == 90
    assert percentile(vals, 95) == 95
    assert percentile(list(range(1, 1001)), 99) == 991  # 9.99999 -> 9 excluded
    assert percentile(vals, 100) == 100
    assert percentile(vals, 0) == 1
    assert percentile([5.0], 99) == 5.0
    ten = [float(v) for v in range(10)]
    assert percentile(ten, 95) == 9.0  # exclude = int(0.5) = 0 -> last


def test_percentile_rejects_out_of_range():
    with pytest.raises(ValueError):
        percentile([1.0, 2.0], 101)


def test_median_even_and_odd():
    assert median([1.0, 2.0, 3.0]) == 2.0
    assert median([1.0, 2.0, 3.0, 10.0]) == 2.5
    assert math.isinf(median([]))


def test_summary_properties_random():
    rng = np.random.default_rng(1)
    vals = rng.gamma(4.0, 1.0, size=997)
    s = Summary.of(vals)
    assert s.min == pytest.approx(vals.min())
    assert s.max == pytest.approx(vals.max())
    assert s.mean == pytest.approx(vals.mean())
    assert s.median == pytest.approx(np.median(vals))
    assert s.min <= s.median <= s.p90 <= s.p95 <= s.p99 <= s.max
    assert s.cv_percent == pytest.approx(vals.std() / vals.mean() * 100)
    assert s.count == 997


def test_report_json_contract_and_cv_warning():
    times = [1.0, 1.0, 1.0, 2.0]
    rep = LatencyReport.from_times("m.onnx", "onnxruntime", "cpu", times, walltime_s=0.01, batch=2)
    d = rep.to_dict()
    assert set(d["latency_ms"]) == {"min", "max", "mean", "median", "p90", "p95", "p99"}
    assert d["throughput_qps"] == pytest.approx(2 * 4 / 0.01)
    assert d["backend"] == "onnxruntime" and d["device"] == "cpu" and d["model"] == "m.onnx"
    assert d["times_ms"] == times
    assert any("unstable" in w for w in d["warnings"])
    steady = LatencyReport.from_times("m", "onnxruntime", "cpu", [1.0] * 10, walltime_s=0.01)
    assert steady.warnings == []
