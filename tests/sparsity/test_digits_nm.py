"""2:4 on a model trained on real data (scikit-learn digits): one-shot, then a short mask-preserving
fine-tune recovers to within 0.5 points of the dense model, and the pattern survives ONNX export."""

from __future__ import annotations

import copy

import pytest

torch = pytest.importorskip("torch")
digits = pytest.importorskip("edgekit.models.digits")

from edgekit.sparsity import apply_nm, check_nm, check_nm_onnx, recalibrate_bn  # noqa: E402


@pytest.mark.slow
def test_nm_one_shot_then_masked_finetune_recovers(tmp_path):
    torch.manual_seed(0)
    dense, _ = digits.trained("resnet", seed=0)
    Xtr, ytr, Xte, yte = digits.load(image_size=16, seed=0)
    acc_dense = digits.accuracy(dense, Xte, yte)

    sparse = copy.deepcopy(dense)
    masks, report = apply_nm(sparse)
    assert len(report.ok) >= 3
    assert all("multiple of 4" in s.reason or "conv" in s.reason for s in report.skipped)
    assert check_nm(sparse).compliant
    acc_one_shot = digits.accuracy(sparse, Xte, yte)

    # the short fine-tune: refresh BN statistics (forward only), then 8 masked AdamW steps
    recalibrate_bn(sparse, [torch.from_numpy(Xtr[i:i + 256]) for i in range(0, 1024, 256)])
    acc_bn = digits.accuracy(sparse, Xte, yte)
    assert acc_bn > acc_one_shot
    digits.train(sparse, Xtr[:512], ytr[:512], epochs=1, lr=5e-4, after_step=masks)
    acc_ft = digits.accuracy(sparse, Xte, yte)
    rep = check_nm(sparse)
    assert rep.compliant, [(layer.name, layer.bad_groups) for layer in rep.violating]
    assert acc_ft >= acc_dense - 0.005, (acc_dense, acc_one_shot, acc_bn, acc_ft)

    # the pattern and the accuracy survive export + save/load (ONNX Runtime)
    path = digits.export_onnx(sparse.eval(), tmp_path / "sparse.onnx")
    onnx_rep = check_nm_onnx(str(path))
    assert onnx_rep.compliant and len(onnx_rep.ok) == len(rep.ok)
    assert abs(digits.accuracy_onnx(str(path), Xte, yte) - acc_ft) <= 0.0025
