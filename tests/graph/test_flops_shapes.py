"""FLOPs/params counting and weight-free shape inference."""

from __future__ import annotations

import numpy as np
from onnx import TensorProto, helper, numpy_helper


def _model():
    rng = np.random.default_rng(0)
    nodes = [helper.make_node("Conv", ["x", "w1", "b1"], ["c1"], pads=[1, 1, 1, 1]),
             helper.make_node("Conv", ["c1", "w2"], ["c2"], pads=[1, 1, 1, 1], group=4),
             helper.make_node("Relu", ["c2"], ["r"]),
             helper.make_node("Flatten", ["r"], ["f"]),
             helper.make_node("MatMul", ["f", "wm"], ["y"])]
    inits = [numpy_helper.from_array(rng.standard_normal(s).astype(np.float32), n) for n, s in
             (("w1", (8, 3, 3, 3)), ("b1", (8,)), ("w2", (8, 2, 3, 3)), ("wm", (8 * 5 * 5, 7)))]
    g = helper.make_graph(nodes, "g", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [2, 3, 5, 5])],
                          [helper.make_tensor_value_info("y", TensorProto.FLOAT, [2, 7])], inits)
    return helper.make_model(g, opset_imports=[helper.make_opsetid("", 17)], ir_version=8)


def test_flops_per_op():
    from edgekit.graph.flops import count_params, node_costs

    costs = {c.op_type: c for c in node_costs(_model())}
    out = 2 * 8 * 5 * 5
    convs = [c for c in node_costs(_model()) if c.op_type == "Conv"]
    assert convs[0].flops == 2 * out * 3 * 9 and convs[1].flops == 2 * out * 2 * 9  # grouped: Cin/g
    assert costs["Relu"].flops == out
    assert costs["MatMul"].flops == 2 * 2 * 7 * 200
    assert count_params(_model()) == 8 * 27 + 8 + 8 * 18 + 200 * 7


def test_shapes_without_weights():
    from edgekit.graph.shapes import infer_shapes, light_copy

    m = _model()
    s = infer_shapes(m)
    assert s["c2"] == (2, 8, 5, 5) and s["f"] == (2, 200) and s["y"] == (2, 7)
    assert sum(len(t.raw_data) for t in light_copy(m).graph.initializer) < 1000
