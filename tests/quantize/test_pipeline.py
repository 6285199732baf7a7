"""The full ONNX pipeline on a model trained on real data (scikit-learn digits):

    dense float ONNX, BatchNormalization kept (digits.export_onnx(keep_bn=True))
      -> edgekit.prune.prune(ratio=0.1, round_to=4)            graph-level channel pruning (A1)
      -> edgekit.sparsity.apply_nm_onnx(n=2, m=4)              one-shot 2:4 on the pruned weights (B2)
      -> edgekit.sparsity.onnx_torch.to_torch(...)             the ONNX graph as a torch module:
           .recalibrate_bn(1024 train images)                  fresh BN statistics (forward only)
           digits.train(1347 images, 2 epochs = 44 AdamW steps,   short fine-tune; the zeros (pruned
                        after_step=module.keep_zeros())        2:4 positions) re-applied after each step
           .to_onnx()                                          trained weights written back
      -> edgekit.quantize.ptq.quantize(target="tensorrt",      INT8 QDQ for TensorRT (B1), entropy
                                       method="entropy")       calibration on 256 train images

The QDQ model must keep the 2:4 pattern on every layer that had it (checked on the int8 values
TensorRT will see), obey the QDQ placement rules, and lose at most 0.5 accuracy points (ONNX Runtime)
against the dense float model. ``round_to=4`` keeps pruned channel counts multiples of 4 so that 2:4
still applies to every layer it applied to before pruning.
"""

from __future__ import annotations

import pytest

torch = pytest.importorskip("torch")
digits = pytest.importorskip("edgekit.models.digits")
prune_mod = pytest.importorskip("edgekit.prune")

from edgekit.quantize.calibrate import CalibrationData  # noqa: E402
from edgekit.quantize.ptq import quantize  # noqa: E402
from edgekit.quantize.rules import check_qdq  # noqa: E402
from edgekit.sparsity import apply_nm_onnx, check_nm_onnx  # noqa: E402
from edgekit.sparsity.onnx_torch import to_torch  # noqa: E402

RATIO = 0.1          # prunes ~8 % of the parameters of the digits ResNet; 0.2 recovers only to the edge of the bound
FT_SAMPLES, FT_LR, FT_EPOCHS = 1347, 5e-4, 2   # two epochs over the whole train split = 44 AdamW steps


@pytest.mark.slow
def test_prune_then_24_then_int8_keeps_pattern_and_accuracy(tmp_path):
    from edgekit.graph.io import load_model

    torch.manual_seed(0)
    model, _ = digits.trained("resnet", seed=0)
    Xtr, ytr, Xte, yte = digits.load(image_size=16, seed=0)
    dense = load_model(digits.export_onnx(model, tmp_path / "dense.onnx", keep_bn=True))
    assert any(n.op_type == "BatchNormalization" for n in dense.graph.node)
    acc_dense = digits.accuracy_onnx(dense, Xte, yte)

    pruned, prep = prune_mod.prune(dense, ratio=RATIO, round_to=4)
    assert prep.to_dict()["params_after"] < prep.to_dict()["params_before"]   # something was pruned

    sparse, nm_report = apply_nm_onnx(pruned)
    ok_layers = {layer.name for layer in nm_report.ok}
    assert len(ok_layers) >= 3

    module = to_torch(sparse)
    module.recalibrate_bn([torch.from_numpy(Xtr[i:i + 256]) for i in range(0, 1024, 256)])
    digits.train(module, Xtr[:FT_SAMPLES], ytr[:FT_SAMPLES], epochs=FT_EPOCHS, lr=FT_LR, after_step=module.keep_zeros())
    tuned = module.to_onnx()
    assert {layer.name for layer in check_nm_onnx(tuned).ok} == ok_layers

    calib = CalibrationData({dense.graph.input[0].name: Xtr[:256]}, source="digits train split")
    qdq, _ = quantize(tuned, calib, method="entropy", target="tensorrt")

    errors = [v for v in check_qdq(qdq) if v.severity == "error"]
    assert not errors, errors
    rep = check_nm_onnx(qdq)
    assert not rep.violating, [(layer.name, layer.bad_groups) for layer in rep.violating]
    assert {layer.name for layer in rep.ok} == ok_layers
    assert any("QuantizeLinear" in layer.source or "DequantizeLinear" in layer.source for layer in rep.ok)

    acc_int8 = digits.accuracy_onnx(qdq, Xte, yte)
    assert acc_int8 >= acc_dense - 0.005, (acc_dense, acc_int8)
