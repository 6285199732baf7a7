import os

import onnx
import pytest

from edgekit.errors import InputError, ModelLoadError
from edgekit.graph.io import atomic_output, load_model, model_input_specs, save_model



def test_load_roundtrip(tmp_path, make_tiny):
    m = make_tiny()
    p = tmp_path / "m.onnx"
    save_model(m, p)
    back = load_model(p)
    assert back.graph == m.graph
    spec = model_input_specs(back)[0]
    assert spec.name == "x" and spec.shape == ("batch", 3, 8, 8) and spec.dtype == "float32"


@pytest.mark.parametrize("content,expect", [
    (None, "no such file"),
    (b"", "empty"),
    (b"this is plainly not a protobuf \xff\xfe\x00garbage" * 10, "not a readable ONNX"),
])
def test_bad_files(tmp_path, content, expect):
    p = tmp_path / "bad.onnx"
    if content is not None:
        p.write_bytes(content)
    with pytest.raises(ModelLoadError) as ei:
        load_model(p)
    assert expect in str(ei.value)


def test_truncated_model(tmp_path, make_tiny):
    data = make_tiny().SerializeToString()
    p = tmp_path / "trunc.onnx"
    p.write_bytes(data[: len(data) // 2])
    with pytest.raises(ModelLoadError):
        load_model(p)


def test_external_data_roundtrip_and_missing_data(tmp_path, make_tiny):
    m = make_tiny()
    p = tmp_path / "ext.onnx"
    save_model(m, p, external_data=True)
    assert (tmp_path / "ext.onnx.data").exists()
    assert not [f for f in os.listdir(tmp_path) if f.startswith(".")]  # no temporary files left
    back = load_model(p)
    assert onnx.numpy_helper.to_array(back.graph.initializer[0]).shape == (4, 3, 3, 3)
    (tmp_path / "ext.onnx.data").unlink()
    with pytest.raises(ModelLoadError) as ei:
        load_model(p)
    assert "external" in str(ei.value)


def test_atomic_output_leaves_nothing_on_error(tmp_path):
    dest = tmp_path / "out.bin"
    with pytest.raises(RuntimeError):
        with atomic_output(dest) as tmp:
            tmp.write_text("half")
            raise RuntimeError("boom")
    assert not dest.exists()
    assert list(tmp_path.iterdir()) == []


def test_atomic_output_missing_folder(tmp_path):
    with pytest.raises(InputError):
        with atomic_output(tmp_path / "nope" / "x.onnx"):
            pass
