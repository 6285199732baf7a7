"""The board loop with a fake trtexec replaying recorded output: `profile --export-layers` on an
engine writes per-layer times, and `estimate --refit` reads them back."""

from __future__ import annotations

import json

import onnx

from fakes.pytest_fixtures import fake_trtexec  # noqa: F401  (pytest fixture; tests/ is on sys.path)
from fixtures import recorded

from edgekit.trt.manifest import write_manifest
from edgekit.trt.layer_profile import FORMAT, read_layer_times

LOG = recorded("trtexec") / "jetson-jp6-trt100300-resnet50-nodatatransfers-summary-only.log"
TIMES = recorded("trtexec-json") / "trex-mobilenet-titanrtx-times.first200.DERIVED.json"
PROFILE = recorded("trtexec-json") / "trex-mobilenet-titanrtx-profile.json"


def test_export_layers_then_refit(cli, tmp_path, fake_trtexec, net, cache):  # noqa: F811
    engine = tmp_path / "m.engine"
    engine.write_bytes(b"engine")
    write_manifest(engine, {"tensorrt": "10.3.0", "device": "orin-nano", "gpu": {"sm": "8.7"},
                            "inputs": [{"name": "input", "dtype": "float32", "shape": [1, 3, 224, 224]}]})
    fake_trtexec(LOG, times=TIMES, profile=PROFILE)
    out = tmp_path / "layers.json"
    r = cli(["profile", engine, "--device", "orin-nano", "--backend", "trtexec", "--duration-s", "1",
             "--export-layers", out])
    assert r.exit_code == 0, r.output
    data = json.loads(out.read_text())
    assert data["format"] == FORMAT and data["device"] == "orin-nano"
    recorded_layers = [x for x in json.loads(PROFILE.read_text()) if "name" in x]
    assert len(read_layer_times(out)) == len(recorded_layers)
    model = tmp_path / "net.onnx"
    onnx.save(net(), str(model))
    r = cli(["estimate", model, "--device", "orin-nano", "--refit", out, "--json", "-"],
            env={"EDGEKIT_CACHE_DIR": str(cache)})
    assert r.exit_code == 0, r.output
    d = r.json()
    measured = sum(x["averageMs"] for x in recorded_layers)
    assert abs(d["refit"]["measured_ms"] - measured) < 1e-3
    assert abs(d["latency_ms"] - measured) / measured < 0.05
