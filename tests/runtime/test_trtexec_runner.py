"""TrtexecRunner.benchmark with a fake `trtexec` replaying recorded logs and --exportTimes JSON."""

from __future__ import annotations

import json

import numpy as np
import pytest

from edgekit.stats import LatencyReport, Summary
from edgekit.trt.manifest import write_manifest
from edgekit.errors import BuildError, EngineMismatchError, InputError
from edgekit.runtime import BACKENDS, runner_class
from edgekit.runtime.trtexec import TrtexecRunner, parse_export_output
from fixtures import recorded

LOGS, JSONS = recorded("trtexec"), recorded("trtexec-json")


@pytest.fixture
def engine(tmp_path):
    e = tmp_path / "m.engine"
    e.write_bytes(b"engine")
    write_manifest(e, {"tensorrt": "10.3.0", "device": "orin-nano", "gpu": {"sm": "8.7"},
                       "inputs": [{"name": "input", "dtype": "float32", "shape": [1, 3, 224, 224]}]})
    return e


def test_registered():
    assert BACKENDS["trtexec"] == ("edgekit.runtime.trtexec", "TrtexecRunner")
    assert runner_class("trtexec") is TrtexecRunner


def test_benchmark_recomputes_statistics_from_export_times(engine, fake_trtexec):
    times = JSONS / "trex-mobilenet-titanrtx-times.first200.DERIVED.json"
    argv_file = fake_trtexec(LOGS / "jetson-jp6-trt100300-resnet50-nodatatransfers-summary-only.log", times=times)
    with TrtexecRunner(engine, device="orin-nano") as r:
        rep = r.benchmark(warmup_ms=500, duration_s=2, iterations=50, shapes={"input": (1, 3, 224, 224)})
    assert isinstance(rep, LatencyReport)
    records = json.loads(times.read_text())
    expect = Summary.of([x["computeMs"] for x in records])
    assert rep.phases["gpu_compute_ms"].to_dict() == expect.to_dict()
    assert rep.latency.to_dict() == Summary.of([x["latencyMs"] for x in records]).to_dict()
    assert rep.phases["h2d_ms"].max == 0.0 and rep.phases["d2h_ms"].max == 0.0
    assert rep.phases["enqueue_ms"].count == 200
    assert rep.iterations == 200 and rep.extra["latency_source"] == "trtexec --exportTimes"
    # trtexec's own summary is kept beside edgekit's numbers
    assert rep.extra["trtexec"]["throughput_qps"] == 318.007
    assert rep.extra["trtexec"]["summary"]["gpu_compute_time"]["p99"] == 3.15039
    assert rep.environment["tensorrt"] == "10.3.0"
    d = rep.to_dict(include_times=False)
    assert {"latency_ms", "gpu_compute_ms", "h2d_ms", "d2h_ms", "throughput_qps"} <= set(d)
    ran = argv_file.read_text().split()
    assert "--warmUp=500" in ran and "--duration=2" in ran and "--iterations=50" in ran
    assert "--percentile=90,95,99" in ran and "--shapes=input:1x3x224x224" in ran
    assert any(a.startswith("--exportTimes=") for a in ran) and f"--loadEngine={engine}" in ran
    assert r.last_timing()["gpu_compute_ms"] == expect.median


def test_benchmark_falls_back_to_the_printed_summary_of_an_old_trtexec(tmp_path, fake_trtexec):
    e = tmp_path / "m.engine"
    e.write_bytes(b"x")
    argv_file = fake_trtexec(LOGS / "jetson-nano-jp461-trt8201-onnx-build-fp32.log")  # no times JSON
    with TrtexecRunner(e, device="tx2", check_manifest=False) as r:
        rep = r.benchmark()
    assert rep.extra["latency_source"] == "trtexec console summary"
    assert rep.latency.median == 90.3035 and rep.latency.p99 == 91.492 and rep.latency.p90 is None
    assert rep.phases["gpu_compute_ms"].mean == 90.1061 and rep.phases["h2d_ms"].median == 0.276855
    assert rep.phases["d2h_ms"].p99 == 0.00881958 and rep.phases["enqueue_ms"].max == 9.62085
    assert rep.throughput_qps == 11.0613 and rep.walltime_s == 3.16419 and rep.iterations == 35
    # trtexec prints no standard deviation: the largest one min/mean/max allow, and said so
    lat = rep.latency
    bound = ((lat.max - lat.mean) * (lat.mean - lat.min)) ** 0.5
    assert lat.stddev == pytest.approx(bound) and lat.cv_percent == pytest.approx(100 * bound / lat.mean)
    assert "upper bound" in rep.extra["spread"] and any("upper bounds" in w for w in rep.warnings)
    json.dumps(rep.to_dict())  # no NaN sneaks into the JSON
    assert "NaN" not in json.dumps(rep.to_dict())
    ran = argv_file.read_text().split()
    assert "--percentile=99" in ran  # 8.2 takes a single percentile
    assert "--noDataTransfers" not in ran and "--includeDataTransfers" not in ran


def test_trtexec_11_flags_for_graphs_and_transfers(tmp_path, fake_trtexec):
    e = tmp_path / "m.engine"
    e.write_bytes(b"x")
    write_manifest(e, {"tensorrt": "11.4.0", "device": "agx-orin"})
    argv_file = fake_trtexec(LOGS / "jetson-jp6-trt100300-resnet50-nodatatransfers-summary-only.log")
    with TrtexecRunner(e) as r:
        r.benchmark(cuda_graph=False, data_transfers=True)
    ran = argv_file.read_text().split()
    # trtexec 11 graphs by default and leaves transfers out by default: edgekit says what it wants
    assert "--noCudaGraph" in ran and "--includeDataTransfers" in ran


def test_no_summary_log_is_a_clear_error(engine, fake_trtexec):
    fake_trtexec(LOGS / "xavier-nx-jp515-trt8502-dumpprofile-no-summary.log")
    with TrtexecRunner(engine, device="orin-nano") as r:
        with pytest.raises(BuildError, match="no performance summary.*--separateProfileRun"):
            r.benchmark()


def test_failed_run_reports_trtexecs_errors(engine, fake_trtexec):
    fake_trtexec(LOGS / "jetson-jp6-trt100300-FAILED-unknown-option.log", rc=1)
    with TrtexecRunner(engine) as r:
        with pytest.raises(BuildError, match="Unknown option: --workspace 2048"):
            r.benchmark()


def test_layer_profile_from_export_profile(engine, fake_trtexec):
    fake_trtexec(LOGS / "jetson-jp6-trt100300-resnet50-nodatatransfers-summary-only.log",
                 profile=JSONS / "trex-mobilenet-titanrtx-profile.json")
    with TrtexecRunner(engine) as r:
        rep = r.benchmark(profile_layers=True)
    assert rep.extra["layers"]["iterations"] == 6610 and len(rep.extra["layers"]["layers"]) == 73


def test_manifest_checks(engine, tmp_path, fake_trtexec):
    fake_trtexec(LOGS / "jetson-jp6-trt100300-resnet50-nodatatransfers-summary-only.log")
    with pytest.raises(EngineMismatchError, match="orin-nano.*xavier-nx"):
        TrtexecRunner(engine, device="xavier-nx").activate()
    with pytest.raises(EngineMismatchError, match="10.3.0.*8.5"):
        TrtexecRunner(engine, trt_version="8.5.2").activate()
    with pytest.raises(InputError, match="ONNX model"):
        onnx_file = tmp_path / "m.onnx"
        onnx_file.write_bytes(b"x")
        TrtexecRunner(onnx_file).activate()
    bare = tmp_path / "bare.engine"
    bare.write_bytes(b"x")
    with pytest.raises(InputError, match="which TensorRT version"):
        TrtexecRunner(bare).activate()
    with TrtexecRunner(engine) as r:
        assert [s.name for s in r.input_specs()] == ["input"]


def test_export_output_parser():
    text = json.dumps([{"name": "out", "dimensions": "1x2x3", "values": list(range(6))},
                       {"name": "score", "dimensions": "2", "values": [0.5, 0.25]}])
    out = parse_export_output(text)
    assert out["out"].shape == (1, 2, 3) and out["out"][0, 1, 2] == 5.0
    np.testing.assert_array_equal(out["score"], np.array([0.5, 0.25], np.float32))
