"""The CPU estimator: its properties (monotone, unmodelled ops costed, shape errors), its cache,
and one real calibration whose estimate of a small model lands near a measurement of it."""

from __future__ import annotations

import json

import numpy as np
import pytest
from onnx import TensorProto, helper, numpy_helper

from edgekit.errors import InputError
from edgekit.estimate import cpu_calib
from edgekit.estimate.cpu import estimate_cpu
from edgekit.estimate.cpu_fuse import featurize

_RNG = np.random.default_rng(0)


def _w(name, shape):
    return numpy_helper.from_array((_RNG.standard_normal(shape) * 0.1).astype(np.float32), name)


def conv_model(c=16, hw=32, batch="N", reps=3, dims=None):
    """Conv+BN+Relu blocks (and an Identity) on a (batch, c, hw, hw) input."""
    nodes, inits, cur = [], [], "x"
    for i in range(reps):
        inits += [_w(f"w{i}", (c, c, 3, 3)), _w(f"s{i}", (c,)), _w(f"b{i}", (c,)), _w(f"m{i}", (c,)),
                  numpy_helper.from_array(np.ones(c, np.float32), f"v{i}")]
        nodes += [helper.make_node("Conv", [cur, f"w{i}"], [f"c{i}"], pads=[1, 1, 1, 1]),
                  helper.make_node("BatchNormalization", [f"c{i}", f"s{i}", f"b{i}", f"m{i}", f"v{i}"], [f"n{i}"]),
                  helper.make_node("Relu", [f"n{i}"], [f"r{i}"])]
        cur = f"r{i}"
    nodes.append(helper.make_node("Identity", [cur], ["y"]))
    shape = dims or [batch, c, hw, hw]
    g = helper.make_graph(nodes, "g", [helper.make_tensor_value_info("x", TensorProto.FLOAT, shape)],
                          [helper.make_tensor_value_info("y", TensorProto.FLOAT, None)], inits)
    return helper.make_model(g, opset_imports=[helper.make_opsetid("", 17)], ir_version=8)


def cumsum_model(n):
    """An op the cost model has no class for (CumSum) on n elements."""
    axis = numpy_helper.from_array(np.array(1, np.int64), "axis")
    g = helper.make_graph([helper.make_node("CumSum", ["x", "axis"], ["y"])], "g",
                          [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, n])],
                          [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, n])], [axis])
    return helper.make_model(g, opset_imports=[helper.make_opsetid("", 17)], ir_version=8)


@pytest.fixture(scope="module")
def calibrated(tmp_path_factory):
    """A real (shortened) calibration of this host, cached in a fresh folder."""
    cache = tmp_path_factory.mktemp("cpu-cal")
    old = cpu_calib.BUDGET_S
    cpu_calib.BUDGET_S = 0.03
    try:
        cal = cpu_calib.calibration(cache_dir=cache)
    finally:
        cpu_calib.BUDGET_S = old
    return cache, cal


def test_fusion_folds_bn_relu_and_identity():
    ks = featurize(conv_model(reps=3))
    assert [k.op_type for k in ks] == ["Conv"] * 3
    assert all(len(k.nodes) == 3 for k in ks)  # Conv + BatchNormalization + Relu in one kernel


def test_monotone_in_batch_and_channels(calibrated):
    cache, _ = calibrated
    by_batch = [estimate_cpu(conv_model(), batch=b, cache_dir=cache).latency_ms for b in (1, 2, 4, 8)]
    assert all(a < b for a, b in zip(by_batch, by_batch[1:])), by_batch
    by_c = [estimate_cpu(conv_model(c=c, batch=1), cache_dir=cache).latency_ms for c in (8, 16, 32, 64)]
    assert all(a < b for a, b in zip(by_c, by_c[1:])), by_c


def test_unmodelled_op_is_listed_and_costed_by_bytes(calibrated):
    cache, cal = calibrated
    small = estimate_cpu(cumsum_model(1_000), cache_dir=cache)
    big = estimate_cpu(cumsum_model(1_000_000), cache_dir=cache)
    assert small.unmodelled == ["CumSum"] and big.unmodelled == ["CumSum"]
    layer = big.layers[0]
    assert layer.bound == "unmodelled" and 8_000_000 <= layer.bytes_moved < 8_000_100  # in + out (+ the axis)
    assert layer.us > cal.params["kernel"]  # more than the bare per-kernel overhead: bytes cost time
    assert big.layers[0].us > small.layers[0].us
    assert any("CumSum" in n for n in big.notes)


def test_symbolic_input_needs_shapes(calibrated):
    cache, _ = calibrated
    model = conv_model(dims=[1, 16, "H", "W"])
    with pytest.raises(InputError) as err:
        estimate_cpu(model, cache_dir=cache)
    assert "'x'" in str(err.value) and "H" in str(err.value) and "--shapes" in (err.value.hint or "")
    est = estimate_cpu(model, shapes={"x": [1, 16, 24, 24]}, cache_dir=cache)
    assert est.latency_ms > 0 and est.label == "estimate"
    with pytest.raises(InputError, match="not model inputs"):
        estimate_cpu(model, shapes={"nope": [1, 16, 24, 24]}, cache_dir=cache)


def test_cache_reused_then_invalidated_by_key(tmp_path, monkeypatch):
    runs = []

    def fake_calibrate(threads=None, progress=None, budget_s=None):
        runs.append(threads)
        params = {f: 1.0 for f in cpu_calib.FEATURES}
        return cpu_calib.Calibration(key=cpu_calib.host_key(threads), params=params, fit_median_abs_pct=0.0,
                                     seconds=0.0), [{"label": "fake", "features": {"run": 1.0}, "us": 1.0}]

    monkeypatch.setattr(cpu_calib, "calibrate", fake_calibrate)
    first = cpu_calib.calibration(cache_dir=tmp_path)
    assert not first.from_cache and len(runs) == 1
    path = cpu_calib.cache_path(first.key, tmp_path)
    assert json.loads(path.read_text())["key"] == first.key
    second = cpu_calib.calibration(cache_dir=tmp_path)
    assert second.from_cache and second.params == first.params and len(runs) == 1
    cpu_calib.calibration(cache_dir=tmp_path, threads=1)  # another thread count: another key
    assert len(runs) == 2
    monkeypatch.setattr(cpu_calib, "cpu_model", lambda: "another CPU")
    moved = cpu_calib.calibration(cache_dir=tmp_path)
    assert not moved.from_cache and len(runs) == 3
    monkeypatch.setenv("EDGEKIT_CACHE_DIR", str(tmp_path / "env"))
    cpu_calib.calibration()
    assert len(runs) == 4 and any((tmp_path / "env" / "estimate").iterdir())
    cpu_calib.calibration(cache_dir=tmp_path, recalibrate=True)
    assert len(runs) == 5


def test_estimate_near_a_measurement(calibrated):
    """The plumbing is real: the estimate of a small CNN is within 2x of ORT's fastest run of it
    (the estimator predicts a quiet machine; the minimum is the least load-sensitive measurement)."""
    cache, _ = calibrated
    model = conv_model(c=32, hw=32, batch=1, reps=4)
    est = estimate_cpu(model, cache_dir=cache)
    measured_ms = cpu_calib.time_graph(model, None, budget_s=0.3) / 1000.0
    assert measured_ms / 2 < est.latency_ms < measured_ms * 2, (est.latency_ms, measured_ms)
    assert sum(layer.macs for layer in est.layers) == 4 * 32 * 32 * 32 * 32 * 9


def test_cache_size_parsing_and_host_value():
    from edgekit.estimate import cpu_fuse

    assert cpu_fuse._size("2048K") == 2 * 1024 * 1024 and cpu_fuse._size("1M\n") == 1024 * 1024
    assert cpu_fuse._size("512") == 512
    total = cpu_fuse.cache_bytes()
    assert cpu_fuse.cache_bytes(1) >= 64 * 1024  # sysfs, else the 2 MiB fallback: never zero
    assert cpu_fuse.cache_bytes(1) <= total == cpu_fuse.cache_bytes(10_000)  # more threads, more L2


def test_spill_only_beyond_l2(monkeypatch):
    """The L2-spill term appears exactly for kernels whose bytes exceed the cache, and grows with
    the share that spills; the calibration suite holds full-size layers that exercise it."""
    from edgekit.estimate import cpu_fuse

    monkeypatch.setattr(cpu_fuse, "cache_bytes", lambda threads=None: 4 * 1024 * 1024)
    small = featurize(cpu_calib.conv_chain(64, 28, 3, reps=1))
    assert not any("spill.gmac" in k.features for k in small)
    shares = []
    for hw in (112, 160):
        conv = [k for k in featurize(cpu_calib.conv_chain(64, hw, 3, reps=1)) if k.op_type == "Conv"][0]
        assert conv.bytes_moved > 4 * 1024 * 1024
        shares.append(conv.features["spill.gmac"] / conv.features["conv3.gmac"])
        assert 0 < shares[-1] < 1
    assert shares[0] < shares[1]
    full = [(label, build) for label, build in cpu_calib.suite() if "224px" in label]
    assert len(full) >= 8
    monkeypatch.setattr(cpu_fuse, "cache_bytes", lambda threads=None: 2 * 1024 * 1024)  # one core's L2 here
    for label, build in full:
        row = cpu_fuse.feature_row(featurize(build()))
        assert row.get("dram.mb", 0) > 0, label


def test_suite_version_is_part_of_the_key(monkeypatch):
    key = cpu_calib.host_key(None)
    monkeypatch.setattr(cpu_calib, "SUITE_VERSION", "another-suite")
    assert cpu_calib.key_hash(cpu_calib.host_key(None)) != cpu_calib.key_hash(key)
