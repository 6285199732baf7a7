"""Small ONNX graphs built with onnx.helper (no torch): fast inputs for the estimator's tests."""

from __future__ import annotations

from typing import List, Optional

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper


def conv_net(cin: int = 3, width: int = 32, hw: int = 56, blocks: int = 2, batch: Optional[object] = 1,
             extra: Optional[str] = None, seed: int = 0) -> onnx.ModelProto:
    """stem conv -> ``blocks`` x (conv-BN-ReLU, conv-BN, +residual, ReLU) -> global pool -> Gemm.

    ``batch``: an int, or a string for a symbolic batch axis. ``extra``: an op type in a custom
    domain inserted after the stem (an op the estimator does not know)."""
    rng = np.random.default_rng(seed)
    inits: List[onnx.TensorProto] = []
    nodes: List[onnx.NodeProto] = []

    def w(name: str, *shape: int) -> str:
        inits.append(numpy_helper.from_array(rng.standard_normal(shape).astype(np.float32), name))
        return name

    def conv_bn(x: str, ci: int, co: int, k: int, tag: str, relu: bool) -> str:
        nodes.append(helper.make_node("Conv", [x, w(f"{tag}_w", co, ci, k, k)], [f"{tag}_c"], name=f"Conv_{tag}",
                                      pads=[k // 2] * 4))
        nodes.append(helper.make_node("BatchNormalization", [f"{tag}_c", w(f"{tag}_s", co), w(f"{tag}_b", co),
                                                             w(f"{tag}_m", co), w(f"{tag}_v", co)],
                                      [f"{tag}_bn"], name=f"BN_{tag}"))
        if not relu:
            return f"{tag}_bn"
        nodes.append(helper.make_node("Relu", [f"{tag}_bn"], [f"{tag}_r"], name=f"Relu_{tag}"))
        return f"{tag}_r"

    x = conv_bn("input", cin, width, 3, "stem", True)
    if extra:
        nodes.append(helper.make_node(extra, [x], ["custom_out"], name="Custom_0", domain="com.example"))
        x = "custom_out"
    for b in range(blocks):
        y = conv_bn(x, width, width, 3, f"b{b}a", True)
        y = conv_bn(y, width, width, 3, f"b{b}b", False)
        nodes.append(helper.make_node("Add", [y, x], [f"b{b}_add"], name=f"Add_b{b}"))
        nodes.append(helper.make_node("Relu", [f"b{b}_add"], [f"b{b}_out"], name=f"Relu_b{b}"))
        x = f"b{b}_out"
    nodes.append(helper.make_node("GlobalAveragePool", [x], ["gap"], name="GAP"))
    nodes.append(helper.make_node("Flatten", ["gap"], ["flat"], name="Flatten"))
    nodes.append(helper.make_node("Gemm", ["flat", w("fc_w", 10, width), w("fc_b", 10)], ["logits"],
                                  name="Gemm_fc", transB=1))
    inp = helper.make_tensor_value_info("input", TensorProto.FLOAT, [batch, cin, hw, hw])
    out = helper.make_tensor_value_info("logits", TensorProto.FLOAT, [batch, 10])
    opsets = [helper.make_opsetid("", 17)] + ([helper.make_opsetid("com.example", 1)] if extra else [])
    return helper.make_model(helper.make_graph(nodes, "net", [inp], [out], inits), opset_imports=opsets)


@pytest.fixture
def cache(tmp_path, monkeypatch):
    """A private EDGEKIT_CACHE_DIR: no test reads or writes the user's local calibrations."""
    d = tmp_path / "cache"
    monkeypatch.setenv("EDGEKIT_CACHE_DIR", str(d))
    return d


@pytest.fixture
def net():
    """The :func:`conv_net` builder."""
    return conv_net
