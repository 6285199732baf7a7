"""Mask equivalence on every supported op pattern (tiny torch modules and hand-built ONNX graphs)."""

from __future__ import annotations

import warnings

import numpy as np
import pytest
from onnx import TensorProto, helper, numpy_helper

from tests.prune.helpers import check_mask_equivalence, export

torch = pytest.importorskip("torch")
nn = torch.nn


def cbr(i, o, k=3, g=1):
    return nn.Sequential(nn.Conv2d(i, o, k, padding=k // 2, groups=g, bias=False), nn.BatchNorm2d(o), nn.ReLU())


class Residual(nn.Module):
    def __init__(self):
        super().__init__()
        self.a, self.b, self.c = cbr(3, 16), cbr(16, 16), cbr(16, 16)
        self.head = nn.Conv2d(16, 5, 1)

    def forward(self, x):
        y = self.a(x)
        y = y + self.b(y)
        return self.head(y + self.c(y))


class ConcatSplit(nn.Module):
    def __init__(self):
        super().__init__()
        self.a, self.b = cbr(3, 12), cbr(3, 8)
        self.c = cbr(20, 16, 1)
        self.d = cbr(8, 8)
        self.e = nn.Conv2d(24, 4, 1)

    def forward(self, x):
        y = self.c(torch.cat([self.a(x), self.b(x)], 1))
        p, q = y.chunk(2, 1)
        r1, r2 = torch.split(y, [6, 10], 1)
        return self.e(torch.cat([p, self.d(q) + q, r1[:, :0] if False else r2[:, 2:10]], 1)[:, :24])


class FlattenLinear(nn.Module):
    def __init__(self):
        super().__init__()
        self.a = cbr(3, 8)
        self.fc1 = nn.Linear(8 * 4 * 4, 32)
        self.fc2 = nn.Linear(32, 3)

    def forward(self, x):
        y = nn.functional.adaptive_avg_pool2d(self.a(x), 4)
        return self.fc2(torch.relu(self.fc1(y.flatten(1))))


class Grouped(nn.Module):
    """grouped conv (slots), depthwise, SE gating, channel shuffle, pixel shuffle."""

    def __init__(self):
        super().__init__()
        self.a = cbr(3, 16)
        self.g = cbr(16, 16, 3, g=4)
        self.dw = cbr(16, 16, 3, g=16)
        self.se1, self.se2 = nn.Conv2d(16, 4, 1), nn.Conv2d(4, 16, 1)
        self.b = cbr(16, 16, 1)
        self.up = nn.Conv2d(4, 6, 3, padding=1)
        self.out = nn.Conv2d(16 + 6, 3, 1)

    def forward(self, x):
        y = self.dw(self.g(self.a(x)))
        s = torch.sigmoid(self.se2(torch.relu(self.se1(y.mean((2, 3), keepdim=True)))))
        y = self.b(y * s)
        n, c, h, w = y.shape
        y = y.reshape(n, 4, c // 4, h, w).transpose(1, 2).reshape(n, c, h, w)  # channel shuffle
        z = nn.functional.pixel_shuffle(y, 2)  # DepthToSpace
        z = self.up(z)
        z = nn.functional.pixel_unshuffle(z, 2)[:, :6]
        return self.out(torch.cat([y, z], 1))


class NormsPads(nn.Module):
    def __init__(self):
        super().__init__()
        self.a = nn.Conv2d(3, 12, 3)
        self.inorm = nn.InstanceNorm2d(12, affine=True)
        self.b = nn.Conv2d(12, 12, 3)
        self.t = nn.ConvTranspose2d(12, 10, 2, stride=2)
        self.c = nn.Conv2d(10, 4, 1)

    def forward(self, x):
        y = self.inorm(self.a(x))
        y = nn.functional.pad(y, (1, 1, 1, 1))
        y = nn.functional.interpolate(torch.relu(self.b(y)), scale_factor=2.0, mode="nearest")
        y = nn.functional.max_pool2d(y, 2)
        return self.c(nn.functional.gelu(self.t(y)))


class TokenMLP(nn.Module):
    """MatMul + Add linears on [B, N, C] with NHWC-style transposes and a LayerNorm on tokens."""

    def __init__(self):
        super().__init__()
        self.conv = nn.Conv2d(3, 16, 2, 2)
        self.fc1, self.fc2 = nn.Linear(16, 40), nn.Linear(40, 16)
        self.head = nn.Linear(16, 3)

    def forward(self, x):
        t = self.conv(x).flatten(2).transpose(1, 2)          # [B, N, 16]
        t = self.fc2(nn.functional.gelu(self.fc1(t)))
        return self.head(t.mean(1))


PATTERNS = {"residual": (Residual, (1, 3, 16, 16)), "concat_split": (ConcatSplit, (1, 3, 8, 8)),
            "flatten_linear": (FlattenLinear, (2, 3, 8, 8)), "grouped_shuffle": (Grouped, (1, 3, 8, 8)),
            "norms_pads": (NormsPads, (1, 3, 12, 12)), "token_mlp": (TokenMLP, (2, 3, 8, 8))}


@pytest.mark.parametrize("name", sorted(PATTERNS))
@pytest.mark.parametrize("dynamo", [False, True], ids=["legacy", "dynamo"])
def test_pattern_mask_equivalence(name, dynamo):
    if dynamo and name in ("grouped_shuffle", "norms_pads", "concat_split"):
        pytest.skip("dynamo export covered by the built-in models; keep the suite fast")
    cls, shape = PATTERNS[name]
    torch.manual_seed(0)
    m = cls().eval()
    for mod in m.modules():
        if isinstance(mod, nn.BatchNorm2d):
            with torch.no_grad():
                mod.running_mean.normal_(0, 0.3)
                mod.running_var.uniform_(0.5, 2)
                mod.bias.normal_(0, 0.3)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        model = export(m, shape, dynamo=dynamo)
    for seed in range(2):
        check_mask_equivalence(model, seed=seed)


def test_grouped_shuffle_groups_are_found():
    from edgekit.prune import analyze

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        model = export(Grouped().eval(), (1, 3, 8, 8))
    dg = analyze(model)
    ops = {o.split(":")[0] for g in dg.groups for o in g.ops}
    assert {"Conv", "Mul", "DepthToSpace"} <= ops, dg.details()
    # nothing refused except the graph output group
    assert all("graph output" in g.reason for g in dg.skipped), dg.details()


# ---- hand-built graphs: Constant / Transpose / DequantizeLinear weights, Gemm transB ----------

def _graph(nodes, inits, inp=(1, 4, 6, 6), out_shape=None, opset=17):
    g = helper.make_graph(nodes, "g", [helper.make_tensor_value_info("x", TensorProto.FLOAT, list(inp))],
                          [helper.make_tensor_value_info("y", TensorProto.FLOAT, out_shape)], inits)
    return helper.make_model(g, opset_imports=[helper.make_opsetid("", opset)], ir_version=8)


def _w(rng, *shape):
    return rng.standard_normal(shape).astype(np.float32)


def test_weights_behind_constant_transpose_and_dq():
    rng = np.random.default_rng(0)
    wq = rng.integers(-100, 100, size=(8, 4, 3, 3)).astype(np.int8)
    scale = rng.uniform(0.01, 0.02, size=8).astype(np.float32)
    zp = np.zeros(8, dtype=np.int8)
    w2 = _w(rng, 3, 3, 8, 6)  # HWIO, transposed to OIHW by a Transpose node
    nodes = [
        helper.make_node("DequantizeLinear", ["wq", "s", "zp"], ["w1"], axis=0),
        helper.make_node("Conv", ["x", "w1", "b1"], ["c1"], pads=[1, 1, 1, 1]),
        helper.make_node("Relu", ["c1"], ["r1"]),
        helper.make_node("Transpose", ["w2hwio"], ["w2"], perm=[3, 2, 0, 1]),
        helper.make_node("Constant", [], ["b2"], value=numpy_helper.from_array(_w(rng, 6), "b2v")),
        helper.make_node("Conv", ["r1", "w2", "b2"], ["c2"], pads=[1, 1, 1, 1]),
        helper.make_node("GlobalAveragePool", ["c2"], ["p"]),
        helper.make_node("Flatten", ["p"], ["f"]),
        helper.make_node("Identity", ["wg"], ["wgi"]),
        helper.make_node("Gemm", ["f", "wgi", "bg"], ["y"], transB=1),
    ]
    inits = [numpy_helper.from_array(wq, "wq"), numpy_helper.from_array(scale, "s"),
             numpy_helper.from_array(zp, "zp"), numpy_helper.from_array(_w(rng, 8), "b1"),
             numpy_helper.from_array(w2, "w2hwio"), numpy_helper.from_array(_w(rng, 5, 6), "wg"),
             numpy_helper.from_array(_w(rng, 5), "bg")]
    model = _graph(nodes, inits, out_shape=[1, 5])
    dg, pruned = check_mask_equivalence(model, seed=1, min_groups=2)
    roles = {m.role for g in dg.groups for m in g.members}
    assert {"qparam", "in", "out"} <= roles
    inits_after = {t.name: t for t in pruned.graph.initializer}
    assert len(inits_after["s"].dims) == 1 and inits_after["s"].dims[0] == inits_after["wq"].dims[0]


def test_unknown_op_refuses_group_with_reason():
    rng = np.random.default_rng(0)
    nodes = [helper.make_node("Conv", ["x", "w1"], ["c1"]),
             helper.make_node("Hardmax", ["c1"], ["h"], axis=1),  # not in the handler table
             helper.make_node("Conv", ["h", "w2"], ["y"])]
    model = _graph(nodes, [numpy_helper.from_array(_w(rng, 8, 4, 1, 1), "w1"),
                           numpy_helper.from_array(_w(rng, 3, 8, 1, 1), "w2")], out_shape=[1, 3, 6, 6])
    from edgekit.prune import analyze, prune

    dg = analyze(model)
    assert not dg.groups
    assert any("Hardmax" in g.reason and "handler table" in g.reason for g in dg.skipped)
    pruned, rep = prune(model, ratio=0.5)
    assert rep.flops_after == rep.flops_before
    assert any("Hardmax" in s["reason"] for s in rep.skipped)


def test_shared_bias_behind_identity_is_not_cut_for_an_unpruned_reader():
    """Exporters de-duplicate equal initializers (all-zero biases) and read them through Identity
    nodes: a pruned conv gets its own cut copy, a conv whose channels stay keeps the full one."""
    rng = np.random.default_rng(0)
    nodes = [
        helper.make_node("Identity", ["onnx::Conv_9"], ["b1"]),  # TorchScript-style name, with "::"
        helper.make_node("Identity", ["onnx::Conv_9"], ["b2"]),
        helper.make_node("Conv", ["x", "w1", "b1"], ["c1"], pads=[1, 1, 1, 1]),
        helper.make_node("Relu", ["c1"], ["r1"]),
        helper.make_node("Conv", ["r1", "w2", "b2"], ["y"], pads=[1, 1, 1, 1]),  # output: its channels stay
    ]
    inits = [numpy_helper.from_array(np.zeros(8, np.float32), "onnx::Conv_9"), numpy_helper.from_array(_w(rng, 8, 4, 3, 3), "w1"),
             numpy_helper.from_array(_w(rng, 8, 8, 3, 3), "w2")]
    model = _graph(nodes, inits, out_shape=[1, 8, 6, 6])
    dg, pruned = check_mask_equivalence(model, seed=3)
    conv2 = next(n for n in pruned.graph.node if n.output[0] == "y")
    inits_after = {t.name: t for t in pruned.graph.initializer}
    prod = {o: n for n in pruned.graph.node for o in n.output}
    b = conv2.input[2]
    while b in prod:
        b = prod[b].input[0]
    assert list(inits_after[b].dims) == [8]
    for seed in range(4):  # several random decisions: never a cut shared bias
        check_mask_equivalence(model, seed=seed)
