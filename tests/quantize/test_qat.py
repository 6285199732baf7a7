"""QAT for TensorRT: fake-quant placement, export to a QDQ ONNX that passes the placement rules,
ONNX Runtime agrees with the torch fake-quant model, QDQ survives save/load."""

from __future__ import annotations

import numpy as np
import onnx
import pytest
from onnx import numpy_helper

from edgekit.errors import InputError

torch = pytest.importorskip("torch")
nn = torch.nn

from edgekit.quantize.qat import calibrate, export_qat_onnx, prepare_qat  # noqa: E402
from edgekit.quantize.rules import check_qdq  # noqa: E402


class _Block(nn.Module):
    def __init__(self, c):
        super().__init__()
        self.c1, self.b1 = nn.Conv2d(c, c, 3, padding=1, bias=False), nn.BatchNorm2d(c)
        self.c2, self.b2 = nn.Conv2d(c, c, 3, padding=1, bias=False), nn.BatchNorm2d(c)

    def forward(self, x):
        y = torch.relu(self.b1(self.c1(x)))
        return torch.relu(self.b2(self.c2(y)) + x)


class _Net(nn.Module):
    def __init__(self):
        super().__init__()
        self.stem, self.bn = nn.Conv2d(1, 16, 3, padding=1), nn.BatchNorm2d(16)
        self.blk = _Block(16)
        self.head = nn.Conv2d(16, 32, 1)
        self.fc1, self.fc2 = nn.Linear(32, 32), nn.Linear(32, 10)

    def forward(self, x):
        x = self.blk(torch.relu(self.bn(self.stem(x))))
        x = torch.relu(self.head(x)).mean((2, 3))
        return self.fc2(torch.relu(self.fc1(x)))


def _net():
    torch.manual_seed(0)
    m = _Net()
    with torch.no_grad():  # non-trivial BN statistics so folding matters
        for bn in (m.bn, m.blk.b1, m.blk.b2):
            bn.running_mean.uniform_(-0.5, 0.5)
            bn.running_var.uniform_(0.5, 2.0)
            bn.weight.uniform_(0.5, 1.5)
    return m.eval()


def _ops(model):
    return [n.op_type for n in model.graph.node]


def test_prepare_places_fake_quant_where_tensorrt_wants_it():
    m = _net()
    q, report = prepare_qat(m)
    assert report.bn_folded
    assert set(report.quantized) == {"blk.c1", "blk.c2", "head", "fc1"}
    thin = {d["layer"] for d in report.float_layers}
    assert thin == {"stem", "fc2"}                        # 1 input channel / 10 outputs: left float
    assert len(report.skip_quantizers) == 1              # the residual Add's skip input
    assert not any(isinstance(mod, nn.BatchNorm2d) for mod in q.modules())
    # the input model is untouched
    assert any(isinstance(mod, nn.BatchNorm2d) for mod in m.modules())


def test_export_passes_rule_checker_and_matches_torch(tmp_path):
    import onnxruntime as ort

    m = _net()
    q, _ = prepare_qat(m)
    torch.manual_seed(1)
    x = torch.randn(32, 1, 8, 8)
    calibrate(q, [x[:16], x[16:]])
    path = export_qat_onnx(q, tmp_path / "qat.onnx", x[:1])
    model = onnx.load(str(path))
    errors = [v for v in check_qdq(model) if v.severity == "error"]
    assert not errors, errors
    ops = _ops(model)
    assert "BatchNormalization" not in ops and ops.count("QuantizeLinear") >= 4
    # weights stored as int8 initializers behind a per-channel DequantizeLinear on axis 0
    inits = {t.name: numpy_helper.to_array(t) for t in model.graph.initializer}
    weight_dq = [n for n in model.graph.node if n.op_type == "DequantizeLinear" and n.input[0] in inits]
    assert len(weight_dq) == 4 and all(inits[n.input[0]].dtype == np.int8 for n in weight_dq)
    # no QDQ on the graph output and none feeding BN/ReLU
    assert model.graph.node[-1].op_type not in ("DequantizeLinear", "QuantizeLinear")
    sess = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    y_ort = sess.run(None, {"images": x.numpy()})[0]
    with torch.no_grad():
        y_q = q(x).numpy()
        y_f = m(x).numpy()
    # ORT runs the fake-quant model (an element may differ by one rounding step at a tie)
    assert np.mean(np.abs(y_ort - y_q) < 1e-4) > 0.95
    np.testing.assert_allclose(y_ort, y_q, atol=2e-3)
    assert np.abs(y_q - y_f).max() > 0                              # ... which really is quantized
    assert np.abs(y_q - y_f).max() < 0.1 * np.abs(y_f).max()


def test_qat_training_step_uses_straight_through_gradients():
    m = _net()
    q, _ = prepare_qat(m)
    x = torch.randn(8, 1, 8, 8)
    calibrate(q, [x])
    q.train()
    out = q(x)
    out.sum().backward()
    conv = q.get_submodule("blk.c1").layer
    assert conv.weight.grad is not None and conv.weight.grad.abs().sum() > 0


def test_qdq_and_int8_sparse_weights_survive_save_load(tmp_path):
    from edgekit.graph.io import load_model, save_model
    from edgekit.sparsity import apply_nm, check_nm_onnx

    m = _net()
    apply_nm(m)
    q, _ = prepare_qat(m)
    x = torch.randn(8, 1, 8, 8)
    calibrate(q, [x])
    p1 = export_qat_onnx(q, tmp_path / "a.onnx", x[:1])
    a = load_model(p1)
    p2 = save_model(a, tmp_path / "b.onnx")
    b = load_model(p2)
    assert _ops(a) == _ops(b)
    for ta, tb in zip(a.graph.initializer, b.graph.initializer):
        np.testing.assert_array_equal(numpy_helper.to_array(ta), numpy_helper.to_array(tb))
    rep = check_nm_onnx(b)
    assert rep.compliant
    behind_dq = [layer for layer in rep.ok if "DequantizeLinear" in layer.source]
    assert len(behind_dq) == 4 and all(layer.zero_fraction >= 0.5 for layer in behind_dq)
    assert not [v for v in check_qdq(b) if v.severity == "error"]


def test_dynamo_exporter_probe(tmp_path):
    """Documents what the torch 2.13 dynamo exporter does with the same fake-quant model."""
    import onnxruntime as ort

    m = _net()
    q, _ = prepare_qat(m)
    x = torch.randn(4, 1, 8, 8)
    calibrate(q, [x])
    path = export_qat_onnx(q, tmp_path / "dyn.onnx", x[:1], opset=18, dynamo=True)
    model = onnx.load(str(path))
    assert "QuantizeLinear" in _ops(model)
    assert not [v for v in check_qdq(model) if v.severity == "error"]
    sess = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    with torch.no_grad():
        np.testing.assert_allclose(sess.run(None, {sess.get_inputs()[0].name: x[:1].numpy()})[0], q(x[:1]).numpy(),
                                   rtol=1e-3, atol=1e-4)


def test_bad_requests(tmp_path):
    m = _net()
    q, _ = prepare_qat(m)
    with pytest.raises(InputError):
        export_qat_onnx(q, tmp_path / "x.onnx", torch.randn(1, 1, 8, 8))   # not calibrated
    assert not (tmp_path / "x.onnx").exists()
    with pytest.raises(InputError):
        calibrate(q, [])
    with pytest.raises(InputError):
        calibrate(m, [torch.randn(1, 1, 8, 8)])                            # no quantizers
    with pytest.raises(InputError):
        prepare_qat(m, method="entropy-ish")
    with pytest.raises(InputError):
        export_qat_onnx(q, tmp_path / "y.onnx", torch.randn(1, 1, 8, 8), opset=11)


class _Attn(nn.Module):
    """Linear layers on 3-D tokens (exported as MatMul with a transposed weight) and q @ k^T."""

    def __init__(self, d=32):
        super().__init__()
        self.q, self.k, self.v, self.o = (nn.Linear(d, d) for _ in range(4))

    def forward(self, x):
        a = torch.softmax(self.q(x) @ self.k(x).transpose(-2, -1) * 0.2, dim=-1)
        return self.o(a @ self.v(x))


def test_attention_matmuls_and_3d_linears_are_quantized_per_rules(tmp_path):
    import onnxruntime as ort

    torch.manual_seed(0)
    m = _Attn().eval()
    q, report = prepare_qat(m)
    x = torch.randn(4, 6, 32)
    calibrate(q, [x])
    path = export_qat_onnx(q, tmp_path / "attn.onnx", x[:1])
    model = onnx.load(str(path))
    assert not [v for v in check_qdq(model) if v.severity == "error"]
    matmuls = [n for n in model.graph.node if n.op_type == "MatMul"]
    producers = {o: n for n in model.graph.node for o in n.output}
    assert len(matmuls) == 6 and all(producers[i].op_type == "DequantizeLinear" for n in matmuls for i in n.input)
    assert "Transpose" not in [producers[n.input[1]].op_type for n in matmuls]
    sess = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    with torch.no_grad():
        np.testing.assert_allclose(sess.run(None, {"images": x.numpy()})[0], q(x).numpy(), atol=2e-3)
