"""`edgekit profile ENGINE --backend trtexec` when trtexec leaves no --exportTimes file: the printed
summary alone gives a full report (every recorded log, and a 7.x summary), never a traceback."""

from __future__ import annotations

import json

import pytest

from edgekit.trt.manifest import write_manifest
from edgekit.trt.trtexec_log import parse_log_file
from fixtures import ROOT, recorded

LOGS = recorded("trtexec")
SYNTHETIC_7X = ROOT / "synthetic" / "trtexec-7x-blocks.log"


@pytest.fixture
def engine(tmp_path):
    e = tmp_path / "m.engine"
    e.write_bytes(b"engine")
    write_manifest(e, {"tensorrt": "10.3.0", "device": "orin-nano", "gpu": {"sm": "8.7"},
                       "inputs": [{"name": "input", "dtype": "float32", "shape": [1, 3, 224, 224]}]})
    return e


@pytest.mark.parametrize("path", sorted(LOGS.glob("*.log")) + [SYNTHETIC_7X], ids=lambda p: p.name)
def test_profile_from_the_printed_summary_alone(cli, engine, fake_trtexec, path):
    log = parse_log_file(path)
    fake_trtexec(path, rc=1 if log.failed else 0)  # no times JSON
    for args in ([], ["--json", "-"]):
        r = cli(["profile", engine, "--device", "orin-nano", "--backend", "trtexec", "--duration-s", "1"] + args)
        assert "Traceback" not in r.output, r.output
        if not log.has_summary or "latency" not in log.metrics:
            assert r.exit_code == 1 and len([l for l in r.output.splitlines() if l.startswith("error:")]) == 1
            continue
        assert r.exit_code == 0, r.output
        if not args:
            assert "Latency (ms)" in r.output and "%" in r.output
            continue
        d = json.loads(r.stdout)
        assert d["latency_ms"]["median"] == log.metrics["latency"].median
        assert d["latency_ms"]["p99"] == log.metrics["latency"].percentile(99)
        assert d["throughput_qps"] > 0 and d["iterations"] > 0
        assert d["cv_percent"] is not None and d["stddev_ms"] is not None
        assert d["latency_source"] == "trtexec console summary" and "upper bound" in d["spread"]
