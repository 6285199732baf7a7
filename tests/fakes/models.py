"""Tiny ONNX models for the build/runtime tests (generated, never downloaded)."""

from __future__ import annotations

from pathlib import Path
from typing import Sequence

import numpy as np


def conv_model(path: Path, batch: object = 1, channels: int = 8, sparse_24: bool = False, qdq: bool = False,
               extra_ops: Sequence[str] = (), seed: int = 0) -> Path:
    """input[batch,4,16,16] -> Conv(channels, 3x3) [-> Relu] [-> extra ops] -> out.

    ``batch`` may be a string to make the first dimension dynamic. ``sparse_24`` zeroes two of every
    four input channels (TensorRT's 2:4 rule); ``qdq`` puts Q/DQ on the conv input and weight;
    ``extra_ops`` appends ops the DLA does not run (e.g. "Softmax").
    """
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    rng = np.random.default_rng(seed)
    w = rng.standard_normal((channels, 4, 3, 3)).astype(np.float32)
    if sparse_24:
        w[:, 0::4] = 0.0
        w[:, 1::4] = 0.0
    inits = [numpy_helper.from_array(w, "conv.weight"), numpy_helper.from_array(np.zeros(channels, np.float32), "conv.bias")]
    nodes = []
    x = "input"
    wname = "conv.weight"
    if qdq:
        inits += [numpy_helper.from_array(np.array(0.02, np.float32), "x_scale"),
                  numpy_helper.from_array(np.array(0, np.int8), "x_zp"),
                  numpy_helper.from_array((np.abs(w).reshape(channels, -1).max(1) / 127).astype(np.float32), "w_scale"),
                  numpy_helper.from_array(np.zeros(channels, np.int8), "w_zp")]
        nodes += [helper.make_node("QuantizeLinear", ["input", "x_scale", "x_zp"], ["xq"], name="q_in"),
                  helper.make_node("DequantizeLinear", ["xq", "x_scale", "x_zp"], ["xdq"], name="dq_in"),
                  helper.make_node("QuantizeLinear", ["conv.weight", "w_scale", "w_zp"], ["wq"], name="q_w", axis=0),
                  helper.make_node("DequantizeLinear", ["wq", "w_scale", "w_zp"], ["wdq"], name="dq_w", axis=0)]
        x, wname = "xdq", "wdq"
    nodes.append(helper.make_node("Conv", [x, wname, "conv.bias"], ["c"], name="conv1", pads=[1, 1, 1, 1]))
    nodes.append(helper.make_node("Relu", ["c"], ["r"], name="relu1"))
    last = "r"
    for i, op in enumerate(extra_ops):
        attrs = {"axis": 1} if op == "Softmax" else {}
        nodes.append(helper.make_node(op, [last], [f"e{i}"], name=f"{op.lower()}{i}", **attrs))
        last = f"e{i}"
    nodes.append(helper.make_node("Identity", [last], ["out"], name="out_identity"))
    graph = helper.make_graph(nodes, "tiny", [helper.make_tensor_value_info("input", TensorProto.FLOAT, [batch, 4, 16, 16])],
                              [helper.make_tensor_value_info("out", TensorProto.FLOAT, [batch, channels, 16, 16])], inits)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)], producer_name="edgekit-tests")
    model.ir_version = 8
    onnx.checker.check_model(model)
    path = Path(path)
    onnx.save(model, str(path))
    return path


def two_input_model(path: Path) -> Path:
    import onnx
    from onnx import TensorProto, helper

    graph = helper.make_graph([helper.make_node("Add", ["a", "b"], ["out"], name="add")], "two",
                              [helper.make_tensor_value_info("a", TensorProto.FLOAT, ["N", 8]),
                               helper.make_tensor_value_info("b", TensorProto.FLOAT, ["N", 8])],
                              [helper.make_tensor_value_info("out", TensorProto.FLOAT, ["N", 8])])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)])
    model.ir_version = 8
    onnx.save(model, str(path))
    return Path(path)
