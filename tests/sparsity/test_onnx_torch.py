"""The ONNX graph as a torch module: same outputs as ONNX Runtime, zeros kept through training,
trained weights and refreshed BN statistics written back, unknown ops refused."""

from __future__ import annotations

import copy

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper

from edgekit.errors import InputError, UnsupportedOpError

torch = pytest.importorskip("torch")
nn = torch.nn

from edgekit.sparsity import apply_nm_onnx, check_nm_onnx  # noqa: E402
from edgekit.sparsity.onnx_torch import to_torch  # noqa: E402


class _Net(nn.Module):
    def __init__(self):
        super().__init__()
        self.c1, self.b1 = nn.Conv2d(4, 8, 3, padding=1, bias=False), nn.BatchNorm2d(8)
        self.c2, self.b2 = nn.Conv2d(8, 8, 3, padding=1, bias=False), nn.BatchNorm2d(8)
        self.pool = nn.MaxPool2d(2)
        self.fc = nn.Linear(8 * 3 * 3, 5)

    def forward(self, x):
        y = torch.relu(self.b1(self.c1(x)))
        y = torch.relu(self.b2(self.c2(y)) + y)
        return self.fc(torch.flatten(self.pool(y), 1))


def _export(model, path):
    model.eval()
    with torch.no_grad():
        torch.onnx.export(model, (torch.zeros(1, 4, 6, 6),), str(path), input_names=["x"], output_names=["y"],
                          dynamic_axes={"x": {0: "b"}, "y": {0: "b"}}, opset_version=17, dynamo=False,
                          training=torch.onnx.TrainingMode.PRESERVE, do_constant_folding=False)
    return onnx.load(str(path))


def _ort(model, x):
    import onnxruntime as ort

    sess = ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"])
    return sess.run(None, {"x": x})[0]


def test_module_matches_onnxruntime_and_writes_back(tmp_path):
    torch.manual_seed(0)
    net = _Net()
    proto = _export(net, tmp_path / "n.onnx")
    assert "BatchNormalization" in [n.op_type for n in proto.graph.node]
    sparse, _ = apply_nm_onnx(proto)
    mod = to_torch(sparse)
    x = np.random.default_rng(0).normal(size=(3, 4, 6, 6)).astype(np.float32)
    with torch.no_grad():
        np.testing.assert_allclose(mod(torch.from_numpy(x)).numpy(), _ort(sparse, x), rtol=1e-4, atol=1e-5)
    # a few optimizer steps with the zero-keeping hook
    opt = torch.optim.AdamW(mod.parameters(), lr=1e-2)
    hook = mod.keep_zeros()
    for _ in range(3):
        opt.zero_grad()
        mod(torch.from_numpy(x)).pow(2).mean().backward()
        opt.step()
        hook()
    tuned = mod.to_onnx()
    assert check_nm_onnx(tuned).compliant and len(check_nm_onnx(tuned).ok) == len(check_nm_onnx(sparse).ok)
    # structure untouched (Identity(initializer) nodes become plain initializers)
    assert [n for n in tuned.graph.node] == [n for n in sparse.graph.node if n.op_type != "Identity"]
    with torch.no_grad():
        np.testing.assert_allclose(mod(torch.from_numpy(x)).numpy(), _ort(tuned, x), rtol=1e-4, atol=1e-5)
    assert np.abs(_ort(tuned, x) - _ort(sparse, x)).max() > 1e-3         # the weights really changed


def test_bn_recalibration_equals_torch_train_mode_statistics(tmp_path):
    torch.manual_seed(1)
    net = _Net()
    proto = _export(net, tmp_path / "n.onnx")
    mod = to_torch(proto)
    # one batch: torch keeps the unbiased variance and averages per-batch variances, we pool them;
    # on a single batch of 48*36 values per channel the two agree to ~1e-3
    batches = [torch.randn(48, 4, 6, 6) * 2 + 1]
    mod.recalibrate_bn(batches)
    ref = copy.deepcopy(net)
    for bn in (ref.b1, ref.b2):
        bn.reset_running_stats()
        bn.momentum = None
    ref.train()
    with torch.no_grad():
        for b in batches:
            ref(b)
    ref.eval()
    x = batches[0][:4]
    with torch.no_grad():
        np.testing.assert_allclose(mod(x).numpy(), ref(x).numpy(), rtol=2e-3, atol=2e-3)
    np.testing.assert_allclose(_ort(mod.to_onnx(), x.numpy()), ref(x).detach().numpy(), rtol=2e-3, atol=2e-3)


def test_refuses_unknown_ops_and_quantized_models():
    nodes = [helper.make_node("Mod", ["x", "x"], ["y"])]
    g = helper.make_graph(nodes, "g", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1])],
                          [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1])])
    with pytest.raises(UnsupportedOpError):
        to_torch(helper.make_model(g))
    nodes = [helper.make_node("QuantizeLinear", ["x", "s"], ["q"]), helper.make_node("DequantizeLinear", ["q", "s"], ["y"])]
    g = helper.make_graph(nodes, "g", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1])],
                          [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1])],
                          initializer=[helper.make_tensor("s", TensorProto.FLOAT, [], [0.1])])
    with pytest.raises(InputError):
        to_torch(helper.make_model(g))
