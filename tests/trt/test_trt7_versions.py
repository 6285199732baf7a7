"""TensorRT 7 in the generations table: what trtexec 7 and its ONNX parser accept, and that edgekit
refuses to build for it with a one-line reason (JetPack 4.4/4.5 boards run TensorRT 7.1.3)."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from edgekit.errors import InputError
from edgekit.trt import versions as V

FIXTURES = Path(__file__).resolve().parent.parent / "fixtures"


@pytest.mark.parametrize("version", ["7.0", "7.1.3", "7.2.1.6"])
def test_trt7_row_has_the_flags_trtexec_7_knows(version):
    g = V.known_generation(version)
    assert g.name == "7.x" and not g.buildable
    assert g.trtexec_explicit_batch_flag and g.explicit_batch_flag  # ONNX needs --explicitBatch / 1 << EXPLICIT_BATCH
    assert not g.qdq_int8 and g.implicit_int8  # INT8 only through a calibration cache (--int8 --calib=)
    assert g.trtexec_workspace == "workspace" and g.trtexec_build_only == "--buildOnly"
    assert not g.trtexec_percentiles_list and not g.memory_pools and not g.execute_v3 and not g.serialized_build
    assert V.unknown_trtexec_flags(version, ["trtexec", "--onnx=m.onnx", "--explicitBatch", "--workspace=1024",
                                             "--buildOnly", "--fp16", "--percentile=99"]) == []
    assert V.unknown_trtexec_flags(version, ["--timingCacheFile=t", "--sparsity=enable", "--noDataTransfers",
                                             "--memPoolSize=workspace:64", "--skipInference"]) == [
        "--timingCacheFile", "--sparsity", "--noDataTransfers", "--memPoolSize", "--skipInference"]


@pytest.mark.parametrize("version,opset", [("7.0.0", 11), ("7.1.3", 11), ("7.2", 13), ("8.5.2", None)])
def test_trt7_opset_caps(version, opset):
    assert V.max_onnx_opset(version) == opset


def test_building_for_trt7_is_refused_with_what_it_lacks():
    with pytest.raises(InputError, match=r"not supported for building.*Q/DQ.*opset <= 11") as exc:
        V.generation("7.1.3")
    assert "8.0" in exc.value.hint
    for bad in ("6.0", "7.3", "7.9.1"):
        with pytest.raises(InputError):
            V.known_generation(bad)


def test_every_generation_from_8_builds_and_parses_qdq():
    rows = [g for g in V.GENERATIONS if g.since >= (8, 0)]
    assert rows and all(g.buildable and g.qdq_int8 and g.serialized_build and not g.trtexec_explicit_batch_flag
                        for g in rows)
    assert [g.since for g in V.GENERATIONS] == sorted(g.since for g in V.GENERATIONS)


def test_flags_trt7_needs_are_the_ones_the_recorded_trt10_log_rejects():
    log = (FIXTURES / "trtexec" / "jetson-jp6-trt100300-FAILED-unknown-option.log").read_text()
    rejected = re.findall(r"Unknown option: (--\w+)", log)
    command = re.search(r"&&&& FAILED TensorRT\.trtexec \[TensorRT v100300\] # (.*)", log).group(1).split()
    assert sorted(V.unknown_trtexec_flags("10.3.0", command)) == sorted(rejected)
    assert V.unknown_trtexec_flags("7.1.3", command) == []  # the same command line is a valid trtexec 7 one
