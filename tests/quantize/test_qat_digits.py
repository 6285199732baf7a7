"""QAT on a model trained on real data (scikit-learn digits): the exported QDQ model passes the
TensorRT placement rules and its ONNX Runtime accuracy is within 0.5 points of the float model."""

from __future__ import annotations

import pytest

torch = pytest.importorskip("torch")
digits = pytest.importorskip("edgekit.models.digits")

from edgekit.quantize.qat import calibrate, export_qat_onnx, prepare_qat  # noqa: E402
from edgekit.quantize.rules import check_qdq  # noqa: E402


@pytest.mark.slow
def test_qat_digits_export_passes_rules_and_keeps_accuracy(tmp_path):
    import onnx

    torch.manual_seed(0)
    model, _ = digits.trained("resnet", seed=0)
    Xtr, ytr, Xte, yte = digits.load(image_size=16, seed=0)
    acc_float = digits.accuracy(model, Xte, yte)

    qmodel, report = prepare_qat(model)
    assert len(report.quantized) >= 3
    calibrate(qmodel, [torch.from_numpy(Xtr[i:i + 128]) for i in range(0, 512, 128)])
    digits.train(qmodel, Xtr[:256], ytr[:256], epochs=1, lr=1e-4)   # a few fake-quant (STE) steps
    path = export_qat_onnx(qmodel.eval(), tmp_path / "qat.onnx", torch.from_numpy(Xte[:1]))

    proto = onnx.load(str(path))
    errors = [v for v in check_qdq(proto) if v.severity == "error"]
    assert not errors, errors
    assert sum(n.op_type == "QuantizeLinear" for n in proto.graph.node) >= 3
    acc_ort = digits.accuracy_onnx(str(path), Xte, yte)
    assert acc_ort >= acc_float - 0.005, (acc_float, acc_ort)
