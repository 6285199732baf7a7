"""Lean loading (weights read once, referenced by offset into the source file) and streaming
saving: the round trip is exact, pruning through the lean path writes the same model as the
ordinary path, and anything unusual falls back to the full loader with its error messages."""

from __future__ import annotations

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper

from edgekit.errors import ModelLoadError
from edgekit.graph.io import load_model_lean, save_lean, save_model, stored_array, weight_store


def _model(seed: int = 0) -> onnx.ModelProto:
    rng = np.random.default_rng(seed)
    w1 = numpy_helper.from_array(rng.standard_normal((16, 3, 3, 3)).astype(np.float32), "w1")
    b1 = numpy_helper.from_array(rng.standard_normal(16).astype(np.float32), "b1")  # small: inline
    w2 = numpy_helper.from_array(rng.standard_normal((8, 16, 1, 1)).astype(np.float16), "w2")
    shape = numpy_helper.from_array(np.array([1, -1], dtype=np.int64), "shape")
    nodes = [
        helper.make_node("Conv", ["x", "w1", "b1"], ["c1"], pads=[1, 1, 1, 1]),
        helper.make_node("Relu", ["c1"], ["r1"]),
        helper.make_node("Cast", ["w2"], ["w2f"], to=TensorProto.FLOAT),
        helper.make_node("Conv", ["r1", "w2f"], ["c2"]),
        helper.make_node("Reshape", ["c2", "shape"], ["y"]),
    ]
    g = helper.make_graph(nodes, "g", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 3, 8, 8])],
                          [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 512])], [w1, b1, w2, shape])
    m = helper.make_model(g, opset_imports=[helper.make_opsetid("", 17)])
    m.metadata_props.add(key="k", value="v")
    return m


def test_lean_round_trip_is_exact(tmp_path):
    src = tmp_path / "m.onnx"
    onnx.save(_model(), str(src))
    before = src.read_bytes()
    m, store = load_model_lean(src)
    assert store is not None
    lean = {t.name for t in m.graph.initializer if t.data_location == TensorProto.EXTERNAL}
    assert lean == {"w1", "w2"}  # large float tensors; small and int64 ones stay inline
    assert m.ByteSize() < 1000  # the weights are not in the message
    with weight_store(store):
        for t in m.graph.initializer:
            if t.name in lean:
                ref = numpy_helper.to_array(onnx.load(str(src)).graph.initializer[[i.name for i in m.graph.initializer].index(t.name)])
                np.testing.assert_array_equal(stored_array(t), ref)
    out = tmp_path / "o.onnx"
    save_lean(m, out, store)
    assert onnx.load(str(out)) == onnx.load(str(src))  # same message, field by field
    onnx.checker.check_model(str(out))
    assert src.read_bytes() == before


def test_references_resolve_only_inside_the_store_block(tmp_path):
    src = tmp_path / "m.onnx"
    onnx.save(_model(), str(src))
    m, store = load_model_lean(src)
    t = next(t for t in m.graph.initializer if t.name == "w1")
    assert stored_array(t) is None
    with weight_store(store):
        assert stored_array(t).shape == (16, 3, 3, 3)
        assert not stored_array(t).flags.writeable  # nobody edits the source weights in place


def test_save_model_and_save_lean_write_equal_models(tmp_path):
    m = _model(1)
    a, b = tmp_path / "a.onnx", tmp_path / "b.onnx"
    save_model(m, a)
    save_lean(m, b)
    assert onnx.load(str(a)) == onnx.load(str(b))


@pytest.mark.parametrize("content", [b"", b"not an onnx file at all", b"\x0a\xff\xff\xff"])
def test_bad_files_fall_back_to_the_full_loader_errors(tmp_path, content):
    p = tmp_path / "bad.onnx"
    p.write_bytes(content)
    with pytest.raises(ModelLoadError):
        load_model_lean(p)


def test_truncated_file_is_a_load_error(tmp_path):
    p = tmp_path / "m.onnx"
    onnx.save(_model(), str(p))
    data = p.read_bytes()
    p.write_bytes(data[: len(data) // 2])
    with pytest.raises(ModelLoadError):
        load_model_lean(p)


def test_model_with_its_own_external_data_uses_the_full_loader(tmp_path):
    p = tmp_path / "ext.onnx"
    onnx.save(_model(), str(p), save_as_external_data=True, all_tensors_to_one_file=True, location="ext.onnx.data",
              size_threshold=0)
    m, store = load_model_lean(p)
    assert store is None
    assert all(t.data_location != TensorProto.EXTERNAL for t in m.graph.initializer)


@pytest.mark.parametrize("pattern", ["resize_skip_concat", "qdq_per_channel_weights", "tf_nhwc_convnet", "matmul_add_mlp",
                                     "bn_unfolded", "cast_fp16_weights", "split_group_conv", "channel_shuffle"])
def test_prune_file_lean_path_writes_the_same_model_as_the_full_path(tmp_path, monkeypatch, pattern):
    import sys
    from pathlib import Path

    from edgekit.prune import api

    sys.path.insert(0, str(Path(__file__).parents[1] / "prune"))
    try:
        import patterns as P  # tests/prune/patterns.py: converter-style graphs
    finally:
        sys.path.pop(0)
    src = tmp_path / "in.onnx"
    onnx.save(P.build(pattern).model, str(src))
    before = src.read_bytes()
    _, store = load_model_lean(src)
    assert store is not None and store.arrays  # the lean path is really taken
    lean_out, full_out = tmp_path / "lean.onnx", tmp_path / "full.onnx"
    rep1, _ = api.prune_file(src, lean_out, ratio=0.5)
    monkeypatch.setattr(api, "_needs_full_weights", lambda *a: True)
    rep2, _ = api.prune_file(src, full_out, ratio=0.5)
    assert src.read_bytes() == before
    assert rep1.flops_after == rep2.flops_after and rep1.flops_after < rep1.flops_before
    a, b = onnx.load(str(lean_out)), onnx.load(str(full_out))
    arrays = lambda m: {t.name: numpy_helper.to_array(t).tobytes() for t in m.graph.initializer}  # noqa: E731
    assert arrays(a) == arrays(b)
    assert [n.op_type for n in a.graph.node] == [n.op_type for n in b.graph.node]
    assert all(t.data_location != TensorProto.EXTERNAL for t in a.graph.initializer)
    onnx.checker.check_model(a, full_check=True)


def _image_net(perm=None, first="Conv", shape=(1, 3, 8, 8)):
    """x -> [Transpose(perm)] -> first op -> y: the reader of the image input decides its layout."""
    from onnx import TensorProto, helper

    nodes, src = [], "x"
    if perm is not None:
        nodes.append(helper.make_node("Transpose", ["x"], ["xt"], perm=list(perm)))
        src = "xt"
    if first == "Conv":
        c = shape[1] if perm is None else shape[perm[1]]
        w = helper.make_tensor("w", TensorProto.FLOAT, [2, c, 1, 1], [0.5] * (2 * c))
        nodes.append(helper.make_node("Conv", [src, "w"], ["y"]))
        inits = [w]
    else:
        nodes.append(helper.make_node(first, [src], ["y"]))
        inits = []
    g = helper.make_graph(nodes, "g", [helper.make_tensor_value_info("x", TensorProto.FLOAT, list(shape))],
                          [helper.make_tensor_value_info("y", TensorProto.FLOAT, None)], inits)
    return helper.make_model(g)


def test_input_channel_axis_follows_the_reader_of_the_input():
    from edgekit.graph.io import input_channel_axis

    # a converter's Transpose in front says channels-last, whatever the sizes
    assert input_channel_axis(_image_net((0, 3, 1, 2), shape=(1, 8, 8, 3)), "x", (1, 8, 8, 3)) == 3
    assert input_channel_axis(_image_net((0, 3, 1, 2), shape=(1, 64, 64, 16)), "x", (1, 64, 64, 16)) == 3
    assert input_channel_axis(_image_net((0, 2, 1), shape=(1, 50, 40)), "x", (1, 50, 40)) == 2  # (N, L, C)
    # a Transpose that does not bring the last axis to 1 is no layout change of this kind
    assert input_channel_axis(_image_net((0, 1, 3, 2), shape=(1, 3, 8, 8)), "x", (1, 3, 8, 8)) == 1
    # read by a Conv as it is: NCHW, even with a last dimension of 3
    assert input_channel_axis(_image_net(shape=(1, 16, 8, 3)), "x", (1, 16, 8, 3)) == 1
    # nothing to go by (an elementwise op first): the sizes decide, image channels last
    assert input_channel_axis(_image_net(first="Relu", shape=(1, 32, 32, 3)), "x", (1, 32, 32, 3)) == 3
    assert input_channel_axis(_image_net(first="Relu", shape=(1, 3, 32, 32)), "x", (1, 3, 32, 32)) == 1
    assert input_channel_axis(_image_net(first="Relu", shape=(1, 3, 32, 3)), "x", (1, 3, 32, 3)) == 1
    assert input_channel_axis(_image_net(first="Relu", shape=(1, 10)), "x", (1, 10)) == 1
