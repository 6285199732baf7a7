"""Fusion as TensorRT does it, and the estimator's handling of odd inputs."""

from __future__ import annotations

import pytest

from edgekit.errors import ShapeError
from edgekit.estimate.layers import fuse_layers


def test_conv_bn_relu_and_residual_fuse_into_one_layer(net):
    layers = fuse_layers(net(blocks=2))
    by_node = {n: lay for lay in layers for n in lay.nodes}
    # every BN / ReLU / residual Add rides on the conv that produces its input
    for tag in ("stem", "b0a", "b0b", "b1a", "b1b"):
        assert by_node[f"BN_{tag}"] is by_node[f"Conv_{tag}"]
    assert by_node["Add_b0"] is by_node["Conv_b0b"] and by_node["Relu_b0"] is by_node["Conv_b0b"]
    assert not any(lay.op == "eltwise" for lay in layers)
    convs = [lay for lay in layers if lay.op == "conv"]
    assert len(convs) == 5 and all(lay.macs > 0 for lay in convs)
    # the residual add reads the block input: its bytes are counted on the fused layer
    plain = by_node["Conv_b0a"]
    assert by_node["Conv_b0b"].act_elems > plain.act_elems


def test_batch_scales_work_linearly(net):
    one = fuse_layers(net(batch="N"), batch=1)
    four = fuse_layers(net(batch="N"), batch=4)
    assert [lay.op for lay in one] == [lay.op for lay in four]
    assert sum(lay.macs for lay in four) == 4 * sum(lay.macs for lay in one)


def test_unknown_op_is_costed_by_bytes_and_flagged(net):
    layers = fuse_layers(net(extra="MysteryOp"))
    odd = [lay for lay in layers if lay.unmodelled]
    assert len(odd) == 1 and odd[0].op_types == ["MysteryOp"]
    assert odd[0].act_elems > 0      # never silently zero


def test_symbolic_spatial_dims_need_shapes_and_name_the_input(net):
    m = net()
    dims = m.graph.input[0].type.tensor_type.shape.dim
    dims[2].dim_param, dims[3].dim_param = "H", "W"
    with pytest.raises(ShapeError) as ei:
        fuse_layers(m)
    assert "input" in str(ei.value) and "--shapes" in (ei.value.hint or "")
    layers = fuse_layers(m, shapes={"input": [1, 3, 56, 56]})
    assert sum(lay.macs for lay in layers) == sum(lay.macs for lay in fuse_layers(net()))


def test_qdq_pairs_fold_into_the_int8_kernels(net):
    import numpy as np
    from onnx import helper, numpy_helper

    m = net()
    g = m.graph
    g.initializer.extend([numpy_helper.from_array(np.array(0.1, np.float32), "qs"),
                          numpy_helper.from_array(np.array(0, np.int8), "qz")])
    conv = next(n for n in g.node if n.name == "Conv_b0a")
    x, w = conv.input[0], conv.input[1]
    qdq = [helper.make_node("QuantizeLinear", [x, "qs", "qz"], ["xq"], name="Qx"),
           helper.make_node("DequantizeLinear", ["xq", "qs", "qz"], ["xdq"], name="DQx"),
           helper.make_node("QuantizeLinear", [w, "qs", "qz"], ["wq"], name="Qw"),
           helper.make_node("DequantizeLinear", ["wq", "qs", "qz"], ["wdq"], name="DQw")]
    conv.input[0], conv.input[1] = "xdq", "wdq"
    idx = list(g.node).index(conv)
    nodes = list(g.node[:idx]) + qdq + list(g.node[idx:])
    del g.node[:]
    g.node.extend(nodes)
    plain, quant = fuse_layers(net()), fuse_layers(m)
    assert [lay.op for lay in quant] == [lay.op for lay in plain]
    assert sum(lay.macs for lay in quant) == sum(lay.macs for lay in plain)
    assert sum(lay.weight_elems for lay in quant) == sum(lay.weight_elems for lay in plain)
