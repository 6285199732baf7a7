import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper


def tiny_conv_model(dynamic_batch: bool = True) -> onnx.ModelProto:
    """Conv(3->4) + Relu + GlobalAveragePool + Flatten + Gemm(4->3): small, real, fast."""
    rng = np.random.default_rng(0)
    w = numpy_helper.from_array(rng.standard_normal((4, 3, 3, 3)).astype(np.float32), "w")
    b = numpy_helper.from_array(rng.standard_normal(4).astype(np.float32), "b")
    fw = numpy_helper.from_array(rng.standard_normal((3, 4)).astype(np.float32), "fw")
    fb = numpy_helper.from_array(rng.standard_normal(3).astype(np.float32), "fb")
    nodes = [
        helper.make_node("Conv", ["x", "w", "b"], ["c"], pads=[1, 1, 1, 1]),
        helper.make_node("Relu", ["c"], ["r"]),
        helper.make_node("GlobalAveragePool", ["r"], ["g"]),
        helper.make_node("Flatten", ["g"], ["f"]),
        helper.make_node("Gemm", ["f", "fw", "fb"], ["y"], transB=1),
    ]
    batch = "batch" if dynamic_batch else 1
    graph = helper.make_graph(nodes, "tiny", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [batch, 3, 8, 8])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, [batch, 3])], [w, b, fw, fb])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    onnx.checker.check_model(model)
    return model


@pytest.fixture
def tiny_onnx(tmp_path):
    path = tmp_path / "tiny.onnx"
    onnx.save(tiny_conv_model(), str(path))
    return path


@pytest.fixture
def tiny_static_onnx(tmp_path):
    path = tmp_path / "tiny_static.onnx"
    onnx.save(tiny_conv_model(dynamic_batch=False), str(path))
    return path


@pytest.fixture
def make_tiny():
    return tiny_conv_model
