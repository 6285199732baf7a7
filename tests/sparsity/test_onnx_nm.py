"""2:4 on ONNX: the checker reads every weight layout TensorRT sees, apply_nm_onnx writes TensorRT's
pattern without torch, and both survive a save/load round trip."""

from __future__ import annotations

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper

from edgekit.sparsity import apply_nm_onnx, check_nm_onnx, nm_mask


def _model(nodes, inits, inp, out, opset=17):
    g = helper.make_graph(nodes, "g", [inp], [out], initializer=inits)
    m = helper.make_model(g, opset_imports=[helper.make_opsetid("", opset)])
    m.ir_version = 8
    onnx.checker.check_model(m)
    return m


def _mlp(transB: int, rng, k=8, n=6):
    """x[1,k] -> Gemm(B) -> MatMul(W2 [n, 4]) -> y. Gemm B stored [n,k] (transB=1) or [k,n] (0)."""
    b = rng.normal(size=(n, k) if transB else (k, n)).astype(np.float32)
    w2 = rng.normal(size=(n, 4)).astype(np.float32)
    nodes = [helper.make_node("Gemm", ["x", "B"], ["h"], name="gemm", transB=transB),
             helper.make_node("MatMul", ["h", "W2"], ["y"], name="mm")]
    return _model(nodes, [numpy_helper.from_array(b, "B"), numpy_helper.from_array(w2, "W2")],
                  helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, k]),
                  helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 4]))


def _set(model, name, value):
    for t in model.graph.initializer:
        if t.name == name:
            t.CopyFrom(numpy_helper.from_array(value.astype(np.float32), name))


@pytest.mark.parametrize("transB", [0, 1])
def test_gemm_groups_follow_transB_and_matmul_runs_along_rows(transB):
    rng = np.random.default_rng(0)
    m = _mlp(transB, rng, k=8, n=8)
    b = numpy_helper.to_array(m.graph.initializer[0])
    red_axis = 1 if transB else 0                      # the K (reduction) axis in the stored layout
    right = b * nm_mask(b, 2, 4, axis=red_axis)
    wrong = b * nm_mask(b, 2, 4, axis=1 - red_axis)
    _set(m, "B", right)
    assert check_nm_onnx(m).layer("gemm").status == "ok"
    _set(m, "B", wrong)
    rep = check_nm_onnx(m)
    assert rep.layer("gemm").status == "violates" and rep.layer("gemm").axis == red_axis
    # MatMul weight [in, out]: groups along axis 0 (rows), not along the last axis
    w2 = numpy_helper.to_array(m.graph.initializer[1])
    _set(m, "W2", w2 * nm_mask(w2, 2, 4, axis=1))
    assert check_nm_onnx(m).layer("mm").status == "violates"
    _set(m, "W2", w2 * nm_mask(w2, 2, 4, axis=0))
    assert check_nm_onnx(m).layer("mm").status == "ok"


def _conv_model(rng, c=8, k=8, group=1):
    w = rng.normal(size=(k, c // group, 3, 3)).astype(np.float32)
    nodes = [helper.make_node("Conv", ["x", "W"], ["y"], name="conv", group=group, pads=[1, 1, 1, 1])]
    return _model(nodes, [numpy_helper.from_array(w, "W")],
                  helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, c, 5, 5]),
                  helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, k, 5, 5]))


def test_apply_nm_onnx_conv_matches_reference_and_leaves_input_alone():
    import onnxruntime as ort

    rng = np.random.default_rng(1)
    m = _conv_model(rng)
    original = m.SerializeToString()
    w = numpy_helper.to_array(m.graph.initializer[0])
    out, report = apply_nm_onnx(m)
    assert m.SerializeToString() == original                    # input not modified
    assert report.layer("conv").status == "ok"
    new_w = numpy_helper.to_array(out.graph.initializer[0])
    np.testing.assert_array_equal(new_w, w * nm_mask(w, 2, 4, axis=1))
    assert check_nm_onnx(out).compliant
    # the sparse model computes exactly the conv of the masked weight
    x = rng.normal(size=(1, 8, 5, 5)).astype(np.float32)
    ref = _conv_model(rng)
    _set(ref, "W", w * nm_mask(w, 2, 4, axis=1))
    y1 = ort.InferenceSession(out.SerializeToString(), providers=["CPUExecutionProvider"]).run(None, {"x": x})[0]
    y2 = ort.InferenceSession(ref.SerializeToString(), providers=["CPUExecutionProvider"]).run(None, {"x": x})[0]
    np.testing.assert_allclose(y1, y2, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("c,group,word", [(6, 1, "multiple of 4"), (8, 8, "depthwise"), (8, 2, "grouped")])
def test_apply_nm_onnx_reports_skips_and_keeps_weights(c, group, word):
    rng = np.random.default_rng(2)
    m = _conv_model(rng, c=c, k=8, group=group)
    out, report = apply_nm_onnx(m)
    layer = report.layer("conv")
    assert layer.status == "skipped" and word in layer.reason
    assert out.graph.initializer[0].SerializeToString() == m.graph.initializer[0].SerializeToString()
    assert check_nm_onnx(out).layer("conv").status == "skipped"


def _dq_conv_model(q: np.ndarray, zp: int = 0, transpose: bool = False):
    """int8 weight -> DequantizeLinear (per-channel) [-> Transpose] -> Conv."""
    k = q.shape[0] if not transpose else q.shape[1]
    scale = np.full((q.shape[0],), 0.05, np.float32)
    inits = [numpy_helper.from_array(q, "Wq"), numpy_helper.from_array(scale, "s"),
             numpy_helper.from_array(np.full((q.shape[0],), zp, np.int8), "zp")]
    nodes = [helper.make_node("DequantizeLinear", ["Wq", "s", "zp"], ["Wf"], axis=0)]
    wname = "Wf"
    if transpose:
        nodes.append(helper.make_node("Transpose", ["Wf"], ["Wt"], perm=[1, 0, 2, 3]))
        wname = "Wt"
    c = q.shape[1] if not transpose else q.shape[0]
    nodes.append(helper.make_node("Conv", ["x", wname], ["y"], name="conv", pads=[1, 1, 1, 1]))
    return _model(nodes, inits, helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, c, 5, 5]),
                  helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, k, 5, 5]))


def test_checker_reads_int8_values_behind_dequantizelinear_and_transpose():
    rng = np.random.default_rng(3)
    w = rng.normal(size=(8, 8, 3, 3))
    keep = nm_mask(w, 2, 4, axis=1)
    q = np.clip(np.rint(w / 0.05), -127, 127).astype(np.int8)
    q[q == 0] = 1
    sparse_q = np.where(keep, q, 0).astype(np.int8)
    rep = check_nm_onnx(_dq_conv_model(sparse_q))
    assert rep.layer("conv").status == "ok" and "DequantizeLinear" in rep.layer("conv").source
    # with a zero point of 3, "zero" means q == 3 (what dequantizes to 0.0), not q == 0
    rep = check_nm_onnx(_dq_conv_model(sparse_q, zp=3))
    assert rep.layer("conv").status == "violates"
    shifted = np.where(keep, q, 3).astype(np.int8)
    assert check_nm_onnx(_dq_conv_model(shifted, zp=3)).layer("conv").status == "ok"
    # stored transposed ([C, K, R, S]) behind a Transpose: the pattern is judged on the conv's view
    stored = np.ascontiguousarray(np.transpose(sparse_q, (1, 0, 2, 3)))
    assert check_nm_onnx(_dq_conv_model(stored, transpose=True)).layer("conv").status == "ok"
    stored_bad = np.ascontiguousarray(np.where(nm_mask(w, 2, 4, axis=0), q, 0).astype(np.int8).transpose(1, 0, 2, 3))
    assert check_nm_onnx(_dq_conv_model(stored_bad, transpose=True)).layer("conv").status == "violates"
    # apply_nm_onnx does not touch already-quantized weights; it says why
    _, report = apply_nm_onnx(_dq_conv_model(q))
    assert report.layer("conv").status == "skipped" and "quantized" in report.layer("conv").reason


def test_sparsity_survives_onnx_save_load(tmp_path):
    from edgekit.graph.io import load_model, save_model

    rng = np.random.default_rng(4)
    out, _ = apply_nm_onnx(_mlp(1, rng, k=8, n=8))
    path = save_model(out, tmp_path / "sparse.onnx")
    back = load_model(path)
    for a, b in zip(out.graph.initializer, back.graph.initializer):
        np.testing.assert_array_equal(numpy_helper.to_array(a), numpy_helper.to_array(b))
    rep = check_nm_onnx(path)
    assert rep.compliant and {layer.name for layer in rep.ok} == {"gemm", "mm"}
    # external-data save (large-model path) keeps the zeros too
    path2 = save_model(out, tmp_path / "sparse_ext.onnx", external_data=True)
    assert check_nm_onnx(load_model(path2)).compliant


def test_checker_quantizes_float_weight_behind_quantize_dequantize():
    """float W -> QuantizeLinear -> DequantizeLinear (B1's PTQ form): judged on the int8 values."""
    rng = np.random.default_rng(5)
    w = rng.normal(size=(8, 8, 3, 3)).astype(np.float32)
    keep = nm_mask(w, 2, 4, axis=1)
    scale = (np.abs(w).reshape(8, -1).max(1) / 127).astype(np.float32)

    def model(weight):
        inits = [numpy_helper.from_array(weight, "W"), numpy_helper.from_array(scale, "s"),
                 numpy_helper.from_array(np.zeros(8, np.int8), "zp")]
        nodes = [helper.make_node("QuantizeLinear", ["W", "s", "zp"], ["Wq"], axis=0),
                 helper.make_node("DequantizeLinear", ["Wq", "s", "zp"], ["Wd"], axis=0),
                 helper.make_node("Conv", ["x", "Wd"], ["y"], name="conv", pads=[1, 1, 1, 1])]
        return _model(nodes, inits, helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 8, 5, 5]),
                      helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 8, 5, 5]))

    # pruned positions hold tiny float values that quantize to 0: TensorRT sees a 2:4 weight
    tiny = np.where(keep, w, 1e-3 * scale[:, None, None, None]).astype(np.float32)
    rep = check_nm_onnx(model(tiny))
    assert rep.layer("conv").status == "ok" and rep.layer("conv").source.startswith("QuantizeLinear")
    # values that survive quantization break the pattern
    big = np.where(keep, w, 3 * scale[:, None, None, None]).astype(np.float32)
    assert check_nm_onnx(model(big)).layer("conv").status == "violates"
