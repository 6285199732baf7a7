"""trtexec 7.x (JetPack 4.4 / 4.5) summaries and stacked logger prefixes.

tests/fixtures/synthetic/trtexec-7x-blocks.log has the 7.x layout (a header line per metric, one
statistic per line, ``percentile: X ms at 99%``, Host Latency's "end to end" twins, ``throughput:
N qps``) as trtexec 7.1/7.2 output quoted in public notes prints it; its numbers are made up.
"""

from __future__ import annotations

import pytest

from edgekit.trt.trtexec_log import parse_log, strip_prefix
from fixtures import ROOT

TS = "[03/12/2021-10:11:12] "
LOG_7X = (ROOT / "synthetic" / "trtexec-7x-blocks.log").read_text()


def test_7x_block_summary_gives_every_number_as_written():
    log = parse_log(LOG_7X)
    assert log.status == "passed" and log.has_summary
    assert log.throughput_qps == 70.3072
    assert log.total_host_walltime_s == 3.01532 and log.total_gpu_compute_time_s == 2.97991
    assert log.metrics["latency"].to_dict() == {"min": 13.9102, "max": 16.7012, "mean": 14.2214,
                                                "median": 14.1919, "p99": 15.8877}
    assert log.metrics["end_to_end_host_latency"].to_dict() == {"min": 13.9312, "max": 16.7305, "mean": 14.2411,
                                                                "median": 14.2103, "p99": 15.9121}
    assert log.metrics["gpu_compute_time"].to_dict() == {"min": 13.7441, "max": 16.5137, "mean": 14.0562,
                                                         "median": 14.0288, "p99": 15.7012}
    # 7.x prints Enqueue Time without a mean: not guessed, reported missing
    assert "enqueue_time" not in log.metrics and "enqueue_time" in log.missing
    assert log.trace_queries == 212


def test_7x_one_line_variant_and_capitalised_throughput():
    log = parse_log("[I] Host Latency: min: 1.2 ms, max: 3.4 ms, mean: 1.5 ms, median: 1.4 ms, "
                    "percentile: 2.9 ms at 99%\n"
                    "[I] GPU Compute: min: 1.0 ms, max: 3.0 ms, mean: 1.3 ms, median: 1.2 ms, percentile: 2.7 ms at 99%\n"
                    "[I] Throughput: 650.5 qps\n")
    assert log.throughput_qps == 650.5
    assert log.metrics["latency"].to_dict() == {"min": 1.2, "max": 3.4, "mean": 1.5, "median": 1.4, "p99": 2.9}
    assert log.metrics["gpu_compute_time"].percentile(99) == 2.7


def test_a_block_ends_at_the_first_foreign_line():
    log = parse_log(TS + "[I] GPU Compute\n" + TS + "[I] min: 1 ms\n" + TS + "[I] something else\n"
                    + TS + "[I] max: 2 ms\n" + TS + "[I] mean: 1.5 ms\n" + TS + "[I] median: 1.5 ms\n")
    assert "gpu_compute_time" not in log.metrics  # never completed: nothing half-read


@pytest.mark.parametrize("prefix", [TS + TS, TS + TS + TS, TS + "[I] " + TS])
def test_failed_line_behind_stacked_timestamps_is_failed(prefix):
    log = parse_log("&&&& RUNNING TensorRT.trtexec # trtexec --onnx=m.onnx\n"
                    + prefix + "&&&& FAILED TensorRT.trtexec # trtexec --onnx=m.onnx\n")
    assert log.status == "failed" and log.failed
    assert log.command == "trtexec --onnx=m.onnx"


def test_stacked_prefixes_are_stripped():
    assert strip_prefix(TS + TS + "[E] [TRT] broken") == ("E", "broken")
    assert strip_prefix(TS + "[W] " + TS + "late") == ("W", "late")
