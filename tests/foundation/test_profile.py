import hashlib
import json
import time

import numpy as np
import pytest

from edgekit.bench.harness import HarnessSettings, make_feeds, profile_model, timed_loop
from edgekit.errors import InputError, ShapeError
from edgekit.graph.io import TensorSpec


def _sha(p):
    return hashlib.sha256(p.read_bytes()).hexdigest()


def test_timed_loop_obeys_iterations_and_duration():
    calls = []
    s = HarnessSettings(warmup_ms=0, duration_s=0.0, iterations=25)
    times, wall, warm, phases = timed_loop(lambda: calls.append(1), s)
    assert len(times) == 25 and warm >= 1 and len(calls) == 25 + warm and phases == {}
    s = HarnessSettings(warmup_ms=20, duration_s=0.15, iterations=1)
    t0 = time.perf_counter()
    times, wall, warm, _ = timed_loop(lambda: time.sleep(0.005), s)
    assert wall >= 0.15 and time.perf_counter() - t0 >= 0.17
    assert all(t >= 5.0 for t in times)  # each query slept >= 5 ms
    assert warm >= 2  # 20 ms of warm-up at 5 ms a query


def test_timed_loop_collects_device_phases():
    s = HarnessSettings(warmup_ms=0, duration_s=0, iterations=5)
    times, _, _, phases = timed_loop(lambda: None, s, timing=lambda: {"gpu_compute_ms": 1.5, "h2d_ms": 0.1})
    assert phases["gpu_compute_ms"] == [1.5] * 5 and len(phases["h2d_ms"]) == 5


def test_make_feeds_batch_and_files(tmp_path):
    specs = [TensorSpec("x", "float32", ("batch", 3, 8, 8))]
    f = make_feeds(specs, 4, None)
    assert f["x"].shape == (4, 3, 8, 8) and f["x"].dtype == np.float32
    arr = np.ones((2, 3, 8, 8), np.float32)
    np.save(tmp_path / "a.npy", arr)
    assert np.array_equal(make_feeds(specs, None, str(tmp_path / "a.npy"))["x"], arr)
    np.savez(tmp_path / "a.npz", y=arr)
    with pytest.raises(ShapeError):
        make_feeds(specs, None, str(tmp_path / "a.npz"))
    static = [TensorSpec("x", "float32", (1, 3, 8, 8))]
    with pytest.raises(ShapeError):
        make_feeds(static, 8, None)
    with pytest.raises(InputError):
        make_feeds(specs, None, str(tmp_path / "missing.npy"))


def test_profile_model_reports_contract(tiny_onnx):
    rep = profile_model(tiny_onnx, "cpu", "auto", HarnessSettings(warmup_ms=10, duration_s=0.1, iterations=20, batch=2))
    d = rep.to_dict()
    assert d["backend"] == "onnxruntime" and d["device"] == "cpu" and d["batch"] == 2
    lat = d["latency_ms"]
    assert 0 < lat["min"] <= lat["median"] <= lat["p99"] <= lat["max"]
    assert len(d["times_ms"]) == d["iterations"] >= 20
    assert min(d["times_ms"]) == lat["min"] and max(d["times_ms"]) == lat["max"]
    assert d["throughput_qps"] == pytest.approx(2 * d["iterations"] / d["walltime_s"])


def test_profile_on_jetson_profile_warns_it_measured_the_host(tiny_onnx):
    rep = profile_model(tiny_onnx, "orin", "onnxruntime", HarnessSettings(warmup_ms=0, duration_s=0, iterations=3))
    assert rep.device == "agx-orin"
    assert any("not on a Jetson AGX Orin" in w for w in rep.warnings)


def test_cli_profile_two_models_json_and_plot(cli, tiny_onnx, tmp_path):
    other = tmp_path / "copy.onnx"
    other.write_bytes(tiny_onnx.read_bytes())
    before = _sha(tiny_onnx)
    out_json = tmp_path / "p.json"
    plot = tmp_path / "p.png"
    r = cli(["profile", tiny_onnx, other, "--device", "cpu", "--warmup-ms", "5", "--duration-s", "0.1",
             "--iterations", "10", "--threads", "1", "--json", out_json, "--plot", plot])
    assert r.exit_code == 0, r.output
    d = json.loads(out_json.read_text())
    assert len(d["models"]) == 2 and d["comparison"][0]["speedup_vs_first"] == 1.0
    ratio = d["comparison"][1]["speedup_vs_first"]
    assert ratio == pytest.approx(d["models"][0]["latency_ms"]["median"] / d["models"][1]["latency_ms"]["median"])
    assert plot.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert "speedup vs first" in r.output
    assert _sha(tiny_onnx) == before


@pytest.mark.parametrize("args,msg", [
    (["--device", "orn"], "did you mean 'orin'"),
    (["--iterations", "0"], "--iterations"),
    (["--batch", "5"], "fixed batch"),
    (["--plot", "x.txt"], ".png"),
])
def test_cli_profile_bad_input(cli, tiny_static_onnx, tmp_path, args, msg):
    out_json = tmp_path / "never.json"
    r = cli(["profile", tiny_static_onnx, "--duration-s", "0", "--warmup-ms", "0", "--json", out_json] + args)
    assert r.exit_code == 1
    assert msg in r.output
    assert "Traceback" not in r.output
    assert not out_json.exists()


def test_cli_profile_bad_files(cli, tmp_path):
    junk = tmp_path / "junk.onnx"
    junk.write_bytes(b"\x00\x01garbage" * 50)
    r = cli(["profile", junk, "--duration-s", "0"])
    assert r.exit_code == 1 and "not a readable ONNX" in r.output and "Traceback" not in r.output
    r = cli(["profile", tmp_path / "missing.onnx", "--duration-s", "0"])
    assert r.exit_code == 1 and "no such file" in r.output


def test_debug_env_shows_traceback(cli, tmp_path):
    r = cli(["profile", tmp_path / "missing.onnx"], env={"EDGEKIT_DEBUG": "1"})
    assert r.exit_code != 0
    assert r.exception is not None and type(r.exception).__name__ == "InputError"
