"""TensorRT calibration cache text: header versions, hex scales, version check."""

from __future__ import annotations

import struct

import pytest

from edgekit.errors import EngineMismatchError, InputError
from edgekit.trt import calibration_cache as tc


@pytest.mark.parametrize("text,code", [("8.5.2", 8502), ("8.2.1", 8201), ("8.6.2", 8602), ("10.3.0", 100300),
                                       ("10.3", 100300), ("10.12.1", 101201), (8502, 8502)])
def test_version_code(text, code):
    assert tc.version_code(text) == code
    if isinstance(text, str) and text.count(".") == 2:
        assert ".".join(map(str, tc.version_tuple(code))) == text


def test_hex_is_big_endian_float32_bits():
    assert tc.scale_to_hex(1.0) == "3f800000"
    assert tc.scale_to_hex(0.5) == "3f000000"
    s = 0.0123
    assert tc.hex_to_scale(tc.scale_to_hex(s)) == struct.unpack("<f", struct.pack("<f", s))[0]
    assert tc.hex_to_scale("3c010a14") == pytest.approx(0.007876, rel=1e-3)


def test_write_read_round_trip(tmp_path):
    scales = {"images": 0.0157, "/layer1/conv/Conv_output_0": 0.11, "x:0": 2.5}
    cache = tc.make_cache(scales, "8.5.2", method="entropy")
    p = tc.write_cache(tmp_path / "m.calib", cache)
    lines = p.read_text().splitlines()
    assert lines[0] == "TRT-8502-EntropyCalibration2"
    assert lines[1] == f"images: {tc.scale_to_hex(0.0157)}"
    back = tc.read_cache(p, expect_version="8.5.2")
    assert back.calibrator == "EntropyCalibration2" and back.version_string == "8.5.2"
    assert back.scales.keys() == scales.keys()
    for k, v in scales.items():
        assert back.scales[k] == pytest.approx(v, rel=1e-7)
    assert back.dynamic_ranges()["x:0"] == pytest.approx(2.5 * 127)


def test_minmax_header_and_trt10(tmp_path):
    c = tc.make_cache({"a": 1.0}, "10.3.0", method="minmax")
    assert c.header == "TRT-100300-MinMaxCalibration"


def test_other_version_is_refused(tmp_path):
    p = tc.write_cache(tmp_path / "m.calib", tc.make_cache({"a": 0.1}, "8.6.2"))
    with pytest.raises(EngineMismatchError):
        tc.read_cache(p, expect_version="10.3.0")
    with pytest.raises(EngineMismatchError):
        tc.read_cache(p, expect_version="8.6.1")
    assert tc.read_cache(p, expect_version="8.6.1", match="minor").version == 8602
    with pytest.raises(EngineMismatchError):
        tc.read_cache(p, expect_calibrator="MinMaxCalibration")


@pytest.mark.parametrize("text", ["", "hello\n", "TRT-8502-EntropyCalibration2\nnot a line\n",
                                  "TRT-8502-EntropyCalibration2\nx: zz\n"])
def test_malformed_cache(tmp_path, text):
    p = tmp_path / "bad.calib"
    p.write_text(text)
    with pytest.raises(InputError):
        tc.read_cache(p)


def test_bad_scales_and_trt11_refused():
    with pytest.raises(InputError):
        tc.make_cache({"a": 0.0}, "8.6.2")
    with pytest.raises(InputError):
        tc.make_cache({"a": 0.1}, "11.4.0")
