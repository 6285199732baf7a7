"""Property test: random graphs from the supported ops prune to valid models equal to the masked
original, ratio 0 is the identity, or the pruner refuses cleanly."""

from __future__ import annotations

import numpy as np
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from onnx import TensorProto, helper, numpy_helper

from edgekit.errors import EdgekitError

BLOCKS = ["conv", "residual", "concat", "split", "grouped", "depthwise", "pool", "bn", "reshape_roundtrip"]


class _B:
    def __init__(self, seed):
        self.rng = np.random.default_rng(seed)
        self.nodes, self.inits, self.k = [], [], 0

    def name(self, p):
        self.k += 1
        return f"{p}{self.k}"

    def const(self, arr):
        n = self.name("w")
        self.inits.append(numpy_helper.from_array(np.asarray(arr), n))
        return n

    def conv(self, x, cin, cout, k=3, g=1, act=True):
        w = self.const(self.rng.standard_normal((cout, cin // g, k, k)).astype(np.float32) * 0.3)
        b = self.const(self.rng.standard_normal(cout).astype(np.float32) * 0.1)
        y = self.name("c")
        self.nodes.append(helper.make_node("Conv", [x, w, b], [y], pads=[k // 2] * 4, group=g, name=y))
        if act:
            z = self.name("r")
            self.nodes.append(helper.make_node("Relu", [y], [z], name=z))
            return z
        return y

    def op(self, op, ins, **kw):
        y = self.name(op.lower())
        self.nodes.append(helper.make_node(op, ins, [y], name=y, **kw))
        return y


def build(blocks, seed, hw=8):
    b = _B(seed)
    c = 8
    x = b.conv("x", 3, c)
    for blk in blocks:
        if blk == "conv":
            x, c = b.conv(x, c, c + 4), c + 4
        elif blk == "residual":
            x = b.op("Add", [x, b.conv(b.conv(x, c, c), c, c, act=False)])
        elif blk == "concat":
            x, c = b.op("Concat", [b.conv(x, c, 4), b.conv(x, c, 6)], axis=1), 10
        elif blk == "split":
            half = c // 2
            s1, s2 = b.name("s"), b.name("s")
            sizes = b.const(np.array([half, c - half], dtype=np.int64))
            b.nodes.append(helper.make_node("Split", [x, sizes], [s1, s2], axis=1, name=b.name("split")))
            x = b.op("Concat", [b.conv(s1, half, half), s2], axis=1)
        elif blk == "grouped":
            x, c = b.conv(b.conv(x, c, 8), 8, 8, g=2), 8
        elif blk == "depthwise":
            x = b.conv(x, c, c, g=c)
        elif blk == "pool":
            x = b.op("MaxPool", [x], kernel_shape=[3, 3], pads=[1, 1, 1, 1])
        elif blk == "bn":
            ps = [b.const(b.rng.uniform(0.5, 1.5, c).astype(np.float32)) for _ in range(4)]
            x = b.op("BatchNormalization", [x] + ps)
        elif blk == "reshape_roundtrip":
            shp = b.const(np.array([1, c, hw * hw], dtype=np.int64))
            back = b.const(np.array([1, c, hw, hw], dtype=np.int64))
            x = b.op("Reshape", [b.op("Relu", [b.op("Reshape", [x, shp])]), back])
    p = b.op("GlobalAveragePool", [x])
    f = b.op("Flatten", [p], axis=1)
    w = b.const(b.rng.standard_normal((3, c)).astype(np.float32))
    b.nodes.append(helper.make_node("Gemm", [f, w], ["y"], transB=1, name="head"))
    g = helper.make_graph(b.nodes, "rand", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 3, hw, hw])],
                          [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 3])], b.inits)
    return helper.make_model(g, opset_imports=[helper.make_opsetid("", 17)], ir_version=8)


@settings(max_examples=20, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(blocks=st.lists(st.sampled_from(BLOCKS), min_size=1, max_size=5), seed=st.integers(0, 1000))
def test_random_graphs(blocks, seed):
    from edgekit.runtime.verify import random_feeds, run
    from edgekit.prune import prune

    from tests.prune.helpers import check_mask_equivalence

    model = build(blocks, seed)
    feeds = random_feeds(model, seed)
    base = run(model, feeds)
    try:
        same, _ = prune(model, ratio=0.0)
    except EdgekitError:  # a clean refusal is allowed
        return
    for a, b in zip(base, run(same, feeds)):
        np.testing.assert_array_equal(a, b)
    check_mask_equivalence(model, seed=seed, feeds=feeds)
    pruned, rep = prune(model, ratio=0.5)
    assert rep.flops_after < rep.flops_before
