"""Post-training quantization: placement obeys the rules, scales follow each method, accuracy holds."""

from __future__ import annotations

import numpy as np
import onnx
import pytest
from onnx import numpy_helper

from conftest import onnx_accuracy
from edgekit.quantize import calibrate as cal
from edgekit.quantize.fidelity import sqnr_db
from edgekit.quantize.graphutil import GraphView
from edgekit.quantize.ptq import plan_tensorrt, quantize, weight_scales
from edgekit.quantize.rules import check_qdq
from qdq_graphs import make_float_model

# ---------------------------------------------------------------- scales per method


def _stats(x, histogram=True, chunks=4):
    st = cal.TensorStats()
    for part in np.array_split(x, chunks):
        st.update(part, histogram)
    return st


def test_minmax_scale_is_max_abs_over_127():
    rng = np.random.default_rng(0)
    x = rng.uniform(-3.0, 2.0, size=100_000).astype(np.float32)
    x[123] = -7.5  # the known extreme, in a later chunk than the first
    st = _stats(x)
    assert cal.compute_amax(st, "minmax") == pytest.approx(7.5)
    assert cal.scale_from_amax(cal.compute_amax(st, "minmax")) == pytest.approx(7.5 / 127)


def test_percentile_scale_matches_numpy_percentile():
    rng = np.random.default_rng(1)
    x = rng.standard_normal(400_000).astype(np.float32)
    st = _stats(x)
    for p in (99.0, 99.9):
        want = np.percentile(np.abs(x), p)
        width = st.hist_range / cal.NUM_BINS
        assert abs(cal.compute_amax(st, "percentile", p) - want) <= 2 * width


def test_histogram_range_growth_is_exact_for_counts():
    st = cal.TensorStats()
    st.update(np.array([0.7] * 10 + [1.0], np.float32))  # range starts at 1.0
    st.update(np.full(10, 100.0, np.float32))  # range doubles several times
    assert st.hist.sum() == 21 and st.hist_range >= 100.0
    width = st.hist_range / cal.NUM_BINS
    assert st.hist[int(0.7 / width)] == 10  # the merged bins still hold 0.7 where it belongs


def test_entropy_keeps_uniform_range_and_clips_outlier():
    rng = np.random.default_rng(2)
    u = rng.uniform(-4.0, 4.0, 200_000).astype(np.float32)
    a = cal.compute_amax(_stats(u), "entropy")
    assert 3.6 <= a <= 4.0  # no outliers: the threshold stays near the real range
    g = rng.standard_normal(200_000).astype(np.float32)
    g[5] = 60.0  # one huge outlier
    st = _stats(g)
    assert cal.compute_amax(st, "minmax") == pytest.approx(60.0)
    e = cal.compute_amax(st, "entropy")
    assert 2.0 < e < 15.0  # clipped far below the outlier, above the bulk of a unit gaussian


def test_weight_scales_per_output_channel():
    w = np.zeros((3, 2, 1, 1), np.float32)
    w[0, 1] = -2.54
    w[1, 0] = 1.27
    s = weight_scales(w, 0)
    assert s.tolist() == pytest.approx([0.02, 0.01, 1 / 127])
    assert weight_scales(np.ones((4, 6), np.float32) * np.arange(6), 1).tolist() == pytest.approx(list(np.maximum(np.arange(6), 1e-30) / 127 + (np.arange(6) == 0) / 127))


def test_sqnr():
    r = np.ones(100)
    assert sqnr_db(r, r) == float("inf")
    assert sqnr_db(r, r * 1.1) == pytest.approx(20.0)


# ---------------------------------------------------------------- placement


def test_placer_on_hand_built_graph_obeys_rules_and_matches_plan():
    m = make_float_model()
    x = np.random.default_rng(0).standard_normal((12, 16, 8, 8)).astype(np.float32)
    q, rep = quantize(m, cal.CalibrationData({"x": x}, "test"), method="minmax", with_cache_scales=False)
    assert check_qdq(q) == []
    view = GraphView(q)
    # skip of the residual Add is quantized, the conv branch is not
    add = next(n for n in q.graph.node if n.op_type == "Add")
    assert view.producer[add.input[0]].op_type == "Conv"
    assert view.producer[add.input[1]].op_type == "DequantizeLinear"
    # the Concat input r1 and the Concat output share one scale
    cat_dq = view.producer[next(n for n in q.graph.node if n.name == "conv3").input[0]]
    r1_dq = view.producer[add.input[1]]
    assert view.const(cat_dq.input[1]) == view.const(r1_dq.input[1])
    # biases stay float initializers
    for n in q.graph.node:
        if n.op_type in ("Conv", "Gemm") and len(n.input) > 2:
            assert n.input[2] in view.initializers
    assert sorted(rep.quantized_nodes) == ["conv1", "conv2", "conv3", "gemm"]


def test_plan_leaves_thin_and_excluded_float():
    m = make_float_model()
    plan, quantized, float_nodes, _ = plan_tensorrt(m, exclude=["conv2"], min_channels=17)
    assert quantized == [] and {f["node"] for f in float_nodes} == {"conv1", "conv2", "conv3", "gemm"}
    plan, quantized, float_nodes, _ = plan_tensorrt(m, exclude=["conv2"])
    assert "conv2" not in quantized and [f["node"] for f in float_nodes] == ["conv2"]


def test_weights_quantize_per_channel_exactly():
    m = make_float_model()
    x = np.random.default_rng(0).standard_normal((6, 16, 8, 8)).astype(np.float32)
    q, _ = quantize(m, cal.CalibrationData({"x": x}, "t"), method="minmax", with_cache_scales=False)
    view = GraphView(q)
    conv1 = next(n for n in q.graph.node if n.name == "conv1")
    dq = view.producer[conv1.input[1]]
    qn = view.producer[dq.input[0]]
    w = view.const(qn.input[0])
    s = view.const(qn.input[1])
    assert s.shape == (w.shape[0],)
    assert np.allclose(s, np.abs(w).reshape(w.shape[0], -1).max(1) / 127)


# ---------------------------------------------------------------- accuracy and round trip


@pytest.fixture(scope="module")
def digits_int8(digits_onnx, tmp_path_factory):
    path, xtr, ytr, xte, yte = digits_onnx
    m = onnx.load(str(path))
    q, rep = quantize(m, cal.CalibrationData({"images": xtr[:300]}, "digits"), method="entropy")
    return m, q, rep


def test_digits_int8_tensorrt_target_loses_at_most_half_a_point(digits_onnx, digits_int8):
    _, _, _, xte, yte = digits_onnx
    m, q, rep = digits_int8
    assert len(rep.quantized_nodes) >= 3
    assert [v for v in check_qdq(q) if v.severity == "error"] == []
    acc_f, acc_q = onnx_accuracy(m, xte, yte), onnx_accuracy(q, xte, yte)
    assert acc_f > 0.9
    assert acc_f - acc_q <= 0.005, (acc_f, acc_q)
    assert rep.fidelity["top1_agreement"] >= 0.95 and rep.fidelity["sqnr_db"]["logits"] > 15


@pytest.mark.parametrize("method", ["minmax", "percentile"])
def test_digits_other_methods_also_hold_accuracy(digits_onnx, method):
    path, xtr, _, xte, yte = digits_onnx
    m = onnx.load(str(path))
    q, _ = quantize(m, cal.CalibrationData({"images": xtr[:200]}, "digits"), method=method, with_cache_scales=False)
    assert onnx_accuracy(m, xte, yte) - onnx_accuracy(q, xte, yte) <= 0.01


def test_qdq_survives_save_load_round_trip(digits_onnx, digits_int8, tmp_path):
    from edgekit.graph.io import load_model, save_model

    _, _, _, xte, _ = digits_onnx
    _, q, _ = digits_int8
    save_model(q, tmp_path / "q.onnx")
    back = load_model(tmp_path / "q.onnx")
    assert [n.op_type for n in back.graph.node] == [n.op_type for n in q.graph.node]
    assert check_qdq(back) == check_qdq(q)
    a = {t.name: numpy_helper.to_array(t) for t in q.graph.initializer}
    b = {t.name: numpy_helper.to_array(t) for t in back.graph.initializer}
    assert a.keys() == b.keys() and all(np.array_equal(a[k], b[k]) for k in a)
    import onnxruntime as ort

    outs = [ort.InferenceSession(x.SerializeToString(), providers=["CPUExecutionProvider"]).run(None, {"images": xte[:16]})[0]
            for x in (q, back)]
    assert np.array_equal(outs[0], outs[1])


def test_cpu_target_is_ort_integer_model_with_good_agreement(digits_onnx):
    path, xtr, _, xte, yte = digits_onnx
    m = onnx.load(str(path))
    q, rep = quantize(m, cal.CalibrationData({"images": xtr[:100]}, "digits"), target="cpu", method="minmax")
    ops = {n.op_type for n in q.graph.node}
    assert "QLinearConv" in ops
    assert onnx_accuracy(m, xte, yte) - onnx_accuracy(q, xte, yte) <= 0.02
    assert rep.fidelity["top1_agreement"] >= 0.95
