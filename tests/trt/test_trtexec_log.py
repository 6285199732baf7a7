"""The trtexec parser returns exactly the numbers written in every recorded log (tests/fixtures).

Expected values were typed in by reading each log file, not produced by the parser.
"""

from __future__ import annotations

import json
import math

import pytest

from edgekit.errors import InputError
from edgekit.trt.trtexec_log import (parse_export_profile, parse_export_times, parse_log, parse_log_file,
                                     strip_prefix, version_from_tag)
from fixtures import recorded

LOGS = recorded("trtexec")
JSONS = recorded("trtexec-json")


# (min, max, mean, median, {percentile: value})
SUMMARIES = {
    "jetson-nano-jp46-trt8001-loadengine-fp16.log": dict(
        version="8.0.1", status="passed", throughput=24.7474, walltime=4.04082, gpu_total=3.98877,
        device="NVIDIA Tegra X1", cc="5.3", trace=(100, 4.04082),
        metrics={
            "latency": (40.2976, 40.6343, 40.3953, 40.3808, {99.0: 40.6343}),
            "end_to_end_host_latency": (40.3104, 40.647, 40.4076, 40.3934, {99.0: 40.647}),
            "enqueue_time": (6.76562, 8.41187, 7.24886, 7.18372, {99.0: 8.41187}),
            "h2d_latency": (0.471436, 0.553223, 0.476471, 0.474121, {99.0: 0.553223}),
            "gpu_compute_time": (39.795, 40.1282, 39.8877, 39.875, {99.0: 40.1282}),
            "d2h_latency": (0.0292969, 0.0351562, 0.0311401, 0.03125, {99.0: 0.0351562}),
        }),
    "jetson-nano-jp461-trt8201-onnx-build-fp32.log": dict(
        version="8.2.1", status="passed", throughput=11.0613, walltime=3.16419, gpu_total=3.15371,
        device="NVIDIA Tegra X1", cc="5.3", trace=(35, 3.16419),
        metrics={
            "latency": (89.312, 91.492, 90.3919, 90.3035, {99.0: 91.492}),
            "end_to_end_host_latency": (89.3254, 91.5049, 90.4048, 90.3167, {99.0: 91.5049}),
            "enqueue_time": (1.54553, 9.62085, 6.19246, 6.2948, {99.0: 9.62085}),
            "h2d_latency": (0.274475, 0.288208, 0.277587, 0.276855, {99.0: 0.288208}),
            "gpu_compute_time": (89.0273, 91.2045, 90.1061, 90.0183, {99.0: 91.2045}),
            "d2h_latency": (0.00683594, 0.00881958, 0.008238, 0.00830078, {99.0: 0.00881958}),
        }),
    "agx-xavier-jp5dp-trt8400-mnist-summary-only.log": dict(
        version="8.4.0", status="passed", throughput=41087.7, walltime=3.00119, gpu_total=2.99202,
        device=None, cc=None, trace=(None, None),
        metrics={
            "latency": (0.387207, 0.447357, 0.402238, 0.401947, {99.0: 0.420288}),
            "enqueue_time": (0.0830078, 0.229004, 0.090497, 0.0871582, {99.0: 0.126099}),
            "h2d_latency": (0.00622559, 0.0571899, 0.0104126, 0.00952148, {99.0: 0.0272217}),
            "gpu_compute_time": (0.375977, 0.403564, 0.388221, 0.388443, {99.0: 0.393188}),
            "d2h_latency": (0.00195312, 0.00537109, 0.00360451, 0.00366211, {99.0: 0.00488281}),
        }),
    "jetson-jp6-trt100300-resnet50-nodatatransfers-summary-only.log": dict(
        version="10.3.0", status="passed", throughput=318.007, walltime=3.00622, gpu_total=3.00249,
        device=None, cc=None, trace=(None, None),
        metrics={
            "latency": (3.12671, 3.15479, 3.14068, 3.14062, {90.0: 3.14587, 95.0: 3.14771, 99.0: 3.15039}),
            "enqueue_time": (0.844238, 2.05505, 0.887139, 0.872437, {90.0: 0.932861, 95.0: 0.953735, 99.0: 1.0658}),
            "h2d_latency": (0.0, 0.0, 0.0, 0.0, {90.0: 0.0, 95.0: 0.0, 99.0: 0.0}),
            "gpu_compute_time": (3.12671, 3.15479, 3.14068, 3.14062, {90.0: 3.14587, 95.0: 3.14771, 99.0: 3.15039}),
            "d2h_latency": (0.0, 0.0, 0.0, 0.0, {90.0: 0.0, 95.0: 0.0, 99.0: 0.0}),
        }),
}

NO_SUMMARY = {
    "xavier-nx-jp515-trt8502-dumpprofile-no-summary.log": ("passed", "8.5.2", "--dumpProfile"),
    "desktop-trt8601-FAILED-qdq-onnx-parse.log": ("failed", "8.6.1", "trtexec failed"),
    "jetson-jp6-trt100300-FAILED-unknown-option.log": ("failed", "10.3.0", "trtexec failed"),
    "sparsity-devguide-example.log": ("unknown", None, "no '=== Performance summary ==='"),
    "dla-unsupported-layer-warnings-fragment.log": ("unknown", None, "no '=== Performance summary ==='"),
}


def test_every_fixture_log_is_covered():
    on_disk = {p.name for p in LOGS.glob("*.log")}
    assert on_disk == set(SUMMARIES) | set(NO_SUMMARY)


@pytest.mark.parametrize("name", sorted(SUMMARIES))
def test_summary_numbers_are_exact(name):
    exp = SUMMARIES[name]
    log = parse_log_file(LOGS / name)
    assert log.status == exp["status"]
    assert log.trt_version == exp["version"]
    assert log.has_summary and log.no_summary_reason is None
    assert log.throughput_qps == exp["throughput"]
    assert log.total_host_walltime_s == exp["walltime"]
    assert log.total_gpu_compute_time_s == exp["gpu_total"]
    assert log.device_name == exp["device"]
    assert log.compute_capability == exp["cc"]
    assert (log.trace_queries, log.trace_seconds) == exp["trace"]
    assert set(log.metrics) == set(exp["metrics"])
    for key, (mn, mx, mean, med, pct) in exp["metrics"].items():
        st = log.metrics[key]
        assert (st.min, st.max, st.mean, st.median) == (mn, mx, mean, med), key
        assert st.percentiles == pct, key
    assert log.errors == []
    assert not log.failed


def test_version_specific_shapes_of_the_summary():
    v80 = parse_log_file(LOGS / "jetson-nano-jp46-trt8001-loadengine-fp16.log")
    v84 = parse_log_file(LOGS / "agx-xavier-jp5dp-trt8400-mnist-summary-only.log")
    v10 = parse_log_file(LOGS / "jetson-jp6-trt100300-resnet50-nodatatransfers-summary-only.log")
    # 8.0/8.2 print End-to-End Host Latency and one percentile; 8.4 drops E2E; 8.5+ prints three
    assert "end_to_end_host_latency" in v80.metrics and "end_to_end_host_latency" not in v84.metrics
    assert list(v84.metrics["latency"].percentiles) == [99.0]
    assert sorted(v10.metrics["latency"].percentiles) == [90.0, 95.0, 99.0]
    assert v10.metrics["latency"].to_dict()["p95"] == 3.14771
    assert "p90" not in v84.metrics["latency"].to_dict()


def test_trace_details_lines_do_not_leak_into_the_summary():
    # "Average on 10 runs - GPU latency: 39.8724 ms ..." must not be read as a summary value
    log = parse_log_file(LOGS / "jetson-nano-jp46-trt8001-loadengine-fp16.log")
    assert log.metrics["gpu_compute_time"].mean == 39.8877
    assert log.command.endswith("--iterations=100 --warmUp=50 --fp16")


def test_dumpprofile_log_has_no_summary_but_a_layer_table():
    log = parse_log_file(LOGS / "xavier-nx-jp515-trt8502-dumpprofile-no-summary.log")
    assert not log.has_summary and log.metrics == {} and log.throughput_qps is None
    assert "--separateProfileRun" in log.no_summary_reason
    assert log.device_name == "Xavier" and log.compute_capability == "7.2"
    prof = log.profile
    assert prof.iterations == 309
    assert len(prof.layers) == 28
    assert (prof.total.time_ms, prof.total.average_ms, prof.total.median_ms, prof.total.percentage) == \
        (3068.65, 9.9309, 9.1586, 100.0)
    first = prof.layers[0]
    assert (first.name, first.time_ms, first.average_ms, first.median_ms, first.percentage) == \
        ("[HostToDeviceCopy 0]", 16.77, 0.0543, 0.0285, 0.5)
    foreign = [l for l in prof.layers if l.name.startswith("{ForeignNode")][0]
    assert (foreign.time_ms, foreign.average_ms, foreign.median_ms, foreign.percentage) == (2130.62, 6.8952, 6.2962, 69.4)
    names = [l.name for l in prof.layers]
    assert "Reformatting CopyNode for Output Tensor 1 to {ForeignNode[lstm_W...Max_reduce_min]}" in names
    assert "ArgMax_argmax" == names[-1]
    assert "profile" not in log.missing and "throughput" in log.missing


def test_failed_onnx_parse_keeps_trtexecs_own_error_lines():
    log = parse_log_file(LOGS / "desktop-trt8601-FAILED-qdq-onnx-parse.log")
    assert log.failed and log.status == "failed" and not log.has_summary
    assert log.no_summary_reason.startswith("trtexec failed")
    assert log.errors[0] == "ModelImporter.cpp:774: --- End node ---"
    # the assertion text continues on a line without any logger prefix
    assert '[6] Assertion failed: scaleAllPositive && "Scale coefficients must all be positive"' in log.errors
    assert log.errors[-3:] == ["Parsing model failed", "Failed to create engine from model or file.",
                               "Engine set up failed"]
    assert "--int8 --workspace=1024000 --verbose" in log.command
    assert "Scale coefficients must all be positive" in log.error_text()


def test_failed_unknown_option_log():
    log = parse_log_file(LOGS / "jetson-jp6-trt100300-FAILED-unknown-option.log")
    assert log.failed and log.trt_version == "10.3.0"
    assert log.errors == ["Unknown option: --workspace 2048", "Unknown option: --buildOnly",
                          "Unknown option: --explicitBatch"]


def test_sparsity_lines():
    log = parse_log_file(LOGS / "sparsity-devguide-example.log")
    assert log.sparsity_eligible == ["conv1", "conv2", "conv3"]
    assert log.sparsity_picked == ["conv2", "conv3"]
    assert not log.has_summary and "no '=== Performance summary ===' block" in log.no_summary_reason


def test_dla_fallback_warnings_without_timestamps():
    log = parse_log_file(LOGS / "dla-unsupported-layer-warnings-fragment.log")
    names = [(f.name, f.layer_type) for f in log.dla_fallback]
    assert names == [
        ("/model.24/Constant_1_output_0", "CONSTANT"), ("(Unnamed Layer* 277) [Shuffle]", "SHUFFLE"),
        ("/model.24/Constant_2_output_0", "CONSTANT"), ("/model.24/Constant_3_output_0", "CONSTANT"),
        ("(Unnamed Layer* 282) [Shuffle]", "SHUFFLE"), ("/model.24/Constant_4_output_0", "CONSTANT"),
        ("(Unnamed Layer* 285) [Shuffle]", "SHUFFLE"), ("/model.24/Constant_5_output_0", "CONSTANT"),
        ("(Unnamed Layer* 288) [Shuffle]", "SHUFFLE"),
    ]
    assert all(f.reason == "Unsupported on DLA" for f in log.dla_fallback)


def test_layer_placement_blocks():
    log = parse_log_file(LOGS / "jetson-nano-jp461-trt8201-onnx-build-fp32.log")
    assert log.dla_layers == []  # the "Layers Running on DLA" block is empty in this log
    assert log.gpu_layers[:2] == ["/model/conv1/Conv + /model/relu/Relu", "/model/maxpool/MaxPool"]
    assert log.gpu_layers[-1] == "(Unnamed Layer* 54) [Shuffle] + /Reshape_1"
    assert len(log.gpu_layers) == 4  # 23 lines were cut from the fixture


@pytest.mark.parametrize("tag,expected", [("8001", "8.0.1"), ("8201", "8.2.1"), ("8400", "8.4.0"),
                                          ("8502", "8.5.2"), ("8601", "8.6.1"), ("100300", "10.3.0"),
                                          ("110400", "11.4.0")])
def test_version_tags(tag, expected):
    assert version_from_tag(tag) == expected


def test_prefixes_are_stripped():
    assert strip_prefix("[06/26/2023-11:30:51] [I] [TRT] hello") == ("I", "hello")
    assert strip_prefix("[W] [TRT] Layer x") == ("W", "Layer x")
    assert strip_prefix("plain") == (None, "plain")


def test_unstable_warning_and_synthetic_11x_summary():
    # the 10.x/11.x summary layout from the TensorRT reference (no fixture holds the warning)
    text = "\n".join([
        "[01/02/2026-10:00:00] [I] === Performance summary ===",
        "[01/02/2026-10:00:00] [I] Throughput: 1234.5 qps",
        "[01/02/2026-10:00:00] [I] Latency: min = 0.5 ms, max = 0.9 ms, mean = 0.6 ms, median = 0.55 ms, "
        "percentile(90%) = 0.7 ms, percentile(95%) = 0.8 ms, percentile(99%) = 0.85 ms",
        "[01/02/2026-10:00:00] [I] GPU Compute Time: min = 0.4 ms, max = 0.8 ms, mean = 0.5 ms, median = 0.45 ms, "
        "percentile(90%) = 0.6 ms, percentile(95%) = 0.7 ms, percentile(99%) = 0.75 ms",
        "[01/02/2026-10:00:00] [I] Total Host Walltime: 3.0012 s",
        "[01/02/2026-10:00:00] [W] * GPU compute time is unstable, with coefficient of variance = 3.25%.",
        "[01/02/2026-10:00:00] [W]   If not already in use, locking GPU clock frequency may improve the stability.",
        "&&&& PASSED TensorRT.trtexec [TensorRT v110400] # trtexec --loadEngine=a.engine",
    ])
    log = parse_log(text)
    assert log.trt_version == "11.4.0" and log.throughput_qps == 1234.5
    assert log.gpu_compute_cv_percent == 3.25
    assert log.summary_warnings[0].startswith("GPU compute time is unstable")
    assert len(log.summary_warnings) == 2
    assert log.metrics["gpu_compute_time"].percentiles == {90.0: 0.6, 95.0: 0.7, 99.0: 0.75}
    assert "h2d_latency" in log.missing


def test_empty_log_says_what_is_missing():
    log = parse_log("")
    assert log.status == "unknown" and not log.has_summary
    assert set(log.missing) >= {"throughput", "latency", "trt_version"}


# ---- --exportTimes / --exportProfile ----

def test_export_times_fixture():
    path = JSONS / "trex-mobilenet-titanrtx-times.first200.DERIVED.json"
    raw = json.loads(path.read_text())
    t = parse_export_times(path)
    assert t.count == 200
    assert t.gpu_compute_ms[0] == 0.484512 and t.gpu_compute_ms[1] == 0.4704
    assert t.latency_ms[-1] == 0.46624
    assert min(t.gpu_compute_ms) == 0.463867 and max(t.gpu_compute_ms) == 0.484512
    assert set(t.h2d_ms) == {0.0} and set(t.d2h_ms) == {0.0}  # recorded with --noDataTransfers
    assert t.enqueue_ms[0] == pytest.approx(4.28702 - 4.19666)
    assert t.walltime_s == pytest.approx((98.287 - 4.17414) / 1000.0)
    s = t.summaries()
    assert s["gpu_compute_ms"].count == 200
    assert s["gpu_compute_ms"].max == 0.484512 and s["gpu_compute_ms"].min == 0.463867
    # latency == h2d + compute + d2h record by record
    assert all(math.isclose(r["latencyMs"], r["h2dMs"] + r["computeMs"] + r["d2hMs"]) for r in raw)


def test_export_times_old_names_and_bad_input(tmp_path):
    old = [{"startInMs": 1.0, "endInMs": 1.1, "startComputeMs": 1.1, "endComputeMs": 2.1, "startOutMs": 2.1,
            "endOutMs": 2.2, "inMs": 0.1, "computeMs": 1.0, "outMs": 0.1, "latencyMs": 1.2}]
    t = parse_export_times(old)
    assert (t.h2d_ms, t.gpu_compute_ms, t.d2h_ms, t.latency_ms) == ([0.1], [1.0], [0.1], [1.2])
    with pytest.raises(InputError, match="no records"):
        parse_export_times([])
    with pytest.raises(InputError, match="computeMs"):
        parse_export_times([{"h2dMs": 1}])
    bad = tmp_path / "t.json"
    bad.write_text("[{")
    with pytest.raises(InputError, match="not valid JSON"):
        parse_export_times(bad)


def test_export_profile_fixtures():
    new = parse_export_profile(JSONS / "trex-mobilenet-titanrtx-profile.json")
    assert new.iterations == 6610 and len(new.layers) == 73
    l0 = new.layers[0]
    assert (l0.name, l0.time_ms, l0.average_ms, l0.median_ms, l0.percentage) == \
        ("QuantizeLinear_2", 31.3879, 0.00474854, 0.004544, 1.00949)
    old = parse_export_profile(JSONS / "haxconn-xavier-trt713-googlenet-gpu-profile.json")
    assert old.iterations == 12483 and len(old.layers) == 85
    assert old.layers[0].median_ms is None  # TensorRT 7.1 wrote no medianMs
    assert old.layers[-1].name == "prob output reformatter 0" and old.layers[-1].time_ms == 56.0013
    assert sum(l.percentage for l in old.layers) == pytest.approx(100.0, abs=1e-3)
