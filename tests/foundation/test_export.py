"""Export: SPEC forms, parity, device opset, and every bad input."""

import json
import sys
import textwrap

import onnx
import pytest

torch = pytest.importorskip("torch")

from edgekit.errors import InputError, ParityError, ShapeError  # noqa: E402
from edgekit.exporting import export, resolve_spec  # noqa: E402


@pytest.fixture
def user_module(tmp_path, monkeypatch):
    (tmp_path / "usermodels.py").write_text(textwrap.dedent("""
        import torch
        from torch import nn

        def small():
            torch.manual_seed(0)
            return nn.Sequential(nn.Conv2d(3, 8, 3, padding=1), nn.BatchNorm2d(8), nn.ReLU(),
                                 nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(8, 5))

        class Unstable(nn.Module):
            def forward(self, x):
                # differs between PyTorch and any exported graph: a Python-side random number
                import random
                return x * random.random()

        def unstable():
            return Unstable()

        def not_a_module():
            return 42
    """))
    monkeypatch.chdir(tmp_path)
    monkeypatch.syspath_prepend(str(tmp_path))
    yield tmp_path
    sys.modules.pop("usermodels", None)


def _outputs_match(module, path, shape):
    import numpy as np
    import onnxruntime as ort

    x = np.random.default_rng(3).standard_normal(shape).astype(np.float32)
    sess = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    got = sess.run(None, {sess.get_inputs()[0].name: x})[0]
    with torch.no_grad():
        ref = module(torch.from_numpy(x)).numpy()
    return np.abs(got - ref).max()


def test_export_module_factory_both_exporters(user_module, tmp_path):
    for exporter in ("torchscript", "dynamo"):
        out = tmp_path / f"small_{exporter}.onnx"
        rep = export("usermodels:small", out, input_shapes=[[1, 3, 16, 16]], dynamic_batch=True, exporter=exporter)
        assert rep.exporter == exporter and out.exists()
        m = onnx.load(str(out))
        onnx.checker.check_model(m)
        assert {o.domain: o.version for o in m.opset_import}[""] == rep.opset
        assert rep.max_abs_error <= 1e-4
        module, _ = resolve_spec("usermodels:small")
        assert _outputs_match(module, out, (3, 3, 16, 16)) < 1e-4  # dynamic batch really works


def test_export_device_caps_opset_and_uses_torchscript(user_module, tmp_path):
    out = tmp_path / "tx2.onnx"
    rep = export("usermodels:small", out, input_shapes=[[1, 3, 16, 16]], device="tx2")
    assert rep.opset == 13 and rep.exporter == "torchscript"
    assert {o.domain: o.version for o in onnx.load(str(out)).opset_import}[""] == 13
    with pytest.raises(InputError):
        export("usermodels:small", tmp_path / "no.onnx", input_shapes=[[1, 3, 16, 16]], device="tx2", opset=17)
    assert not (tmp_path / "no.onnx").exists()


def test_export_torchscript_file(user_module, tmp_path):
    module, _ = resolve_spec("usermodels:small")
    ts = tmp_path / "small.pt"
    torch.jit.save(torch.jit.trace(module, torch.zeros(1, 3, 16, 16)), str(ts))
    rep = export(str(ts), tmp_path / "ts.onnx", input_shapes=[[1, 3, 16, 16]])
    assert rep.max_abs_error <= 1e-4


def test_parity_failure_leaves_no_file(user_module, tmp_path):
    out = tmp_path / "unstable.onnx"
    with pytest.raises(ParityError):
        export("usermodels:unstable", out, input_shapes=[[1, 4]], exporter="torchscript")
    assert not out.exists()
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".unstable")]


@pytest.mark.parametrize("spec,shape,err,msg", [
    ("nosuchmodule_xyz:f", [[1, 3, 8, 8]], InputError, "cannot import"),
    ("usermodels:not_a_module", [[1, 3, 8, 8]], InputError, "not a torch.nn.Module"),
    ("usermodels:missing", [[1, 3, 8, 8]], InputError, "no attribute"),
    ("resnet5O", None, InputError, "did you mean 'resnet50'"),
    ("usermodels:small", [[1, 5, 16, 16]], ShapeError, "does not run on input shape"),
    ("usermodels:small", None, ShapeError, "--input-shape"),
])
def test_export_bad_specs(user_module, tmp_path, spec, shape, err, msg):
    out = tmp_path / "bad.onnx"
    with pytest.raises(err) as ei:
        export(spec, out, input_shapes=shape)
    assert msg in str(ei.value) + str(ei.value.hint or "")
    assert not out.exists()


def test_cli_export_builtin_and_bad_input(cli, user_module, tmp_path):
    out = tmp_path / "yolo.onnx"
    js = tmp_path / "e.json"
    r = cli(["export", "yolo-tiny", "-o", out, "--input-shape", "1x3x64x64", "--exporter", "torchscript",
             "--json", js])
    assert r.exit_code == 0, r.output
    d = json.loads(js.read_text())
    assert d["exporter"] == "torchscript" and d["recipe"] == "detector"
    assert d["max_abs_error"] <= d["atol"] or d["max_rel_error"] <= d["rtol"]
    m = onnx.load(str(out))
    assert [i.name for i in m.graph.input] == ["images"] and [o.name for o in m.graph.output] == ["preds"]
    r = cli(["export", "usermodels:small", "-o", tmp_path / "x.onnx", "--input-shape", "1x3xbad"])
    assert r.exit_code == 1 and "not a shape" in r.output and "Traceback" not in r.output
    r = cli(["export", "usermodels:small", "-o", tmp_path / "x.onnx", "--device", "orn"])
    assert r.exit_code == 1 and "did you mean 'orin'" in r.output
    assert not (tmp_path / "x.onnx").exists()


def test_keep_bn_preserves_batchnorm_nodes(user_module, tmp_path):
    folded = tmp_path / "folded.onnx"
    kept = tmp_path / "kept.onnx"
    export("usermodels:small", folded, input_shapes=[[1, 3, 16, 16]], exporter="torchscript")
    rep = export("usermodels:small", kept, input_shapes=[[1, 3, 16, 16]], keep_bn=True)
    ops_folded = [n.op_type for n in onnx.load(str(folded)).graph.node]
    ops_kept = [n.op_type for n in onnx.load(str(kept)).graph.node]
    assert "BatchNormalization" not in ops_folded
    assert ops_kept.count("BatchNormalization") == 1
    assert rep.max_abs_error <= 1e-4
    with pytest.raises(InputError):
        export("usermodels:small", tmp_path / "x.onnx", input_shapes=[[1, 3, 16, 16]], keep_bn=True,
               exporter="dynamo")
