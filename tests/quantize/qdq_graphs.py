"""Hand-built QDQ graphs for the rule checker: one good graph and one bad variant per rule.

Good graph (C = 16 channels everywhere, so nothing is "thin")::

    x -QDQ(sx)-> conv1 (W per-channel axis 0, float bias) -> relu1 = r1
    r1 -QDQ(sr)-> conv2 -> c2 ;  add = c2 + DQ(r1)  (skip quantized, conv branch not) -> relu2 = r2
    cat = Concat(r2, r1) -QDQ(sr, same scale as r1: concat-scales)-> conv3 -> gap -> flatten
        -QDQ-> Gemm(transB=1, W per-channel axis 0) -> y
"""

from __future__ import annotations

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

C = 16


def _rng():
    return np.random.default_rng(0)


def make_model(bad=None, opset=17, thin=False):
    """bad: None or one of the rule ids, to build the graph that breaks exactly that rule."""
    rng = _rng()
    nodes, inits = [], []

    def init(name, arr):
        inits.append(numpy_helper.from_array(np.asarray(arr), name))
        return name

    def act_qdq(t, scale, name, zp=np.int8(0)):
        s = init(f"{name}_s", np.float32(scale))
        z = init(f"{name}_z", np.asarray(zp))
        nodes.append(helper.make_node("QuantizeLinear", [t, s, z], [f"{name}_q"], name=f"{name}_Q"))
        nodes.append(helper.make_node("DequantizeLinear", [f"{name}_q", s, z], [f"{name}_dq"], name=f"{name}_DQ"))
        return f"{name}_dq"

    def w_qdq(wname, w, axis, name, per_tensor=False, wrong_axis=False):
        init(wname, w)
        ax = (1 - axis) if wrong_axis else axis
        n = w.shape[ax]
        other = tuple(i for i in range(w.ndim) if i != ax)
        sc = (np.abs(w).max(axis=other) / 127).astype(np.float32)
        if per_tensor:
            sc = np.float32(np.abs(w).max() / 127)
        s = init(f"{name}_ws", sc)
        z = init(f"{name}_wz", np.zeros(np.shape(sc), np.int8))
        kw = {} if per_tensor else {"axis": ax}
        nodes.append(helper.make_node("QuantizeLinear", [wname, s, z], [f"{name}_wq"], name=f"{name}_WQ", **kw))
        nodes.append(helper.make_node("DequantizeLinear", [f"{name}_wq", s, z], [f"{name}_wdq"], name=f"{name}_WDQ", **kw))
        _ = n
        return f"{name}_wdq"

    c1 = 8 if thin else C
    w1 = rng.standard_normal((c1, C, 3, 3)).astype(np.float32)
    zp = np.int8(3) if bad == "activation-symmetric" else np.int8(0)
    xq = act_qdq("x", 0.05, "x", zp=zp)
    w1dq = w_qdq("w1", w1, 0, "conv1", wrong_axis=(bad == "weight-per-channel"))
    b1 = init("b1", rng.standard_normal(c1).astype(np.float32))
    if bad == "bias-float":
        bs = init("b1_s", np.float32(0.01))
        bz = init("b1_z", np.int32(0))
        nodes.append(helper.make_node("QuantizeLinear", [b1, bs, bz], ["b1_q"], name="b1_Q"))
        nodes.append(helper.make_node("DequantizeLinear", ["b1_q", bs, bz], ["b1_dq"], name="b1_DQ"))
        b1 = "b1_dq"
    nodes.append(helper.make_node("Conv", [xq, w1dq, b1], ["c1"], name="conv1", pads=[1, 1, 1, 1]))
    relu_in = "c1"
    if bad == "qdq-placement":  # QDQ between conv1 and its ReLU
        relu_in = act_qdq("c1", 0.1, "c1out")
    nodes.append(helper.make_node("Relu", [relu_in], ["r1"], name="relu1"))
    if thin:
        # thin model stops here: x -> conv1 (8 channels, quantized) -> relu -> y
        nodes.append(helper.make_node("Identity", ["r1"], ["y"], name="out"))
        return _finish(nodes, inits, opset, out_shape=[1, c1, 8, 8])
    sr = 0.04
    r1q = act_qdq("r1", sr, "r1")
    w2 = rng.standard_normal((C, C, 3, 3)).astype(np.float32)
    conv2_in = "r1" if bad == "compute-inputs" else r1q
    nodes.append(helper.make_node("Conv", [conv2_in, w_qdq("w2", w2, 0, "conv2"),
                                           init("b2", np.zeros(C, np.float32))], ["c2"], name="conv2", pads=[1, 1, 1, 1]))
    if bad == "residual-add":  # quantize the conv branch, leave the skip float
        nodes.append(helper.make_node("Add", [act_qdq("c2", 0.1, "c2"), "r1"], ["a"], name="add"))
    else:
        nodes.append(helper.make_node("Add", ["c2", r1q], ["a"], name="add"))
    nodes.append(helper.make_node("Relu", ["a"], ["r2"], name="relu2"))
    nodes.append(helper.make_node("Concat", ["r2", "r1"], ["cat"], name="concat", axis=1))
    cat_scale = 0.09 if bad == "concat-scales" else sr
    catq = act_qdq("cat", cat_scale, "cat")
    w3 = rng.standard_normal((C, 2 * C, 1, 1)).astype(np.float32)
    nodes.append(helper.make_node("Conv", [catq, w_qdq("w3", w3, 0, "conv3")], ["c3"], name="conv3"))
    nodes.append(helper.make_node("GlobalAveragePool", ["c3"], ["g"], name="gap"))
    nodes.append(helper.make_node("Flatten", ["g"], ["f"], name="flatten"))
    fq = act_qdq("f", 0.02, "f")
    wg = rng.standard_normal((C, C)).astype(np.float32)  # [N, K] with transB=1 -> output axis 0
    nodes.append(helper.make_node("Gemm", [fq, w_qdq("wg", wg, 0, "gemm"), init("bg", np.zeros(C, np.float32))],
                                  ["y"], name="gemm", transB=1))
    return _finish(nodes, inits, opset, out_shape=[1, C])


def _finish(nodes, inits, opset, out_shape):
    g = helper.make_graph(nodes, "qdq_rules", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, C, 8, 8])],
                          [helper.make_tensor_value_info("y", TensorProto.FLOAT, out_shape)], initializer=inits)
    m = helper.make_model(g, opset_imports=[helper.make_opsetid("", opset)])
    m.ir_version = 8
    return m


def make_float_model():
    """The same network without any QDQ (for the no-qdq rule and the placer)."""
    m = make_model()
    from edgekit.quantize.graphutil import GraphView

    view = GraphView(m)
    rename = {}
    keep = []
    for n in m.graph.node:
        if n.op_type == "QuantizeLinear":
            continue
        if n.op_type == "DequantizeLinear":
            q = view.producer[n.input[0]]
            rename[n.output[0]] = q.input[0]
            continue
        keep.append(n)
    for n in keep:
        for i, t in enumerate(n.input):
            if t in rename:
                n.input[i] = rename[t]
    del m.graph.node[:]
    m.graph.node.extend(keep)
    used = {t for n in keep for t in n.input}
    inits = [t for t in m.graph.initializer if t.name in used]
    del m.graph.initializer[:]
    m.graph.initializer.extend(inits)
    onnx.checker.check_model(m)
    return m
