"""`--device NAME` drives the defaults of prune, quantize and inspect sparsity; an explicit flag wins;
`edgekit run pipeline.toml` carries one device through the chain.

Every profile's [defaults] table is checked, prune's rounding follows the profile (or the measured
ONNX Runtime default without --device), and `deploy --device X` accepts what `quantize --device X`
wrote, for every profile (TensorRT itself never runs here: deploy validates as `build` would).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper

from edgekit.devices import list_profiles
from tests.pty_harness import run_in_pty

ROOT = Path(__file__).resolve().parents[2]
PROFILES = sorted(p.name for p in list_profiles())


def _env():
    return dict(os.environ, PYTHONPATH=str(ROOT), OMP_NUM_THREADS="1", NO_COLOR="1")


def _edgekit(*args, check=True):
    proc = subprocess.run([sys.executable, "-m", "edgekit", *map(str, args)], capture_output=True, text=True,
                          env=_env(), cwd=str(ROOT))
    if check:
        assert proc.returncode == 0, proc.stdout + proc.stderr
    return proc


def _json(*args):
    proc = _edgekit(*args, "--json", "-")
    return json.loads(proc.stdout)


def _in_process(cli, *args) -> dict:
    """The command's --json - report, run in-process (the subprocess tests cover the real CLI)."""
    r = cli([*args, "--json", "-"])
    assert r.exit_code == 0, r.output
    return r.json()


def _net(c: int = 64, opset: int = 13) -> onnx.ModelProto:
    """Conv(3->c) Relu Conv(c->c) Relu GAP Flatten Gemm(c->10): two prunable groups of c channels,
    wide enough that INT8 quantizes both convolutions."""
    rng = np.random.default_rng(0)
    inits = [numpy_helper.from_array((rng.standard_normal(s) * 0.2).astype(np.float32), n) for n, s in
             [("w1", (c, 3, 3, 3)), ("b1", (c,)), ("w2", (c, c, 3, 3)), ("b2", (c,)), ("fw", (10, c)), ("fb", (10,))]]
    nodes = [helper.make_node("Conv", ["x", "w1", "b1"], ["c1"], pads=[1, 1, 1, 1], name="conv1"),
             helper.make_node("Relu", ["c1"], ["r1"], name="relu1"),
             helper.make_node("Conv", ["r1", "w2", "b2"], ["c2"], pads=[1, 1, 1, 1], name="conv2"),
             helper.make_node("Relu", ["c2"], ["r2"], name="relu2"),
             helper.make_node("GlobalAveragePool", ["r2"], ["g"], name="gap"),
             helper.make_node("Flatten", ["g"], ["f"], name="flat"),
             helper.make_node("Gemm", ["f", "fw", "fb"], ["y"], transB=1, name="fc")]
    graph = helper.make_graph(nodes, "dev", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 3, 12, 12])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 10])], inits)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", opset)])
    model.ir_version = 7
    return model


@pytest.fixture
def net(tmp_path):
    path = tmp_path / "net.onnx"
    onnx.save(_net(), str(path))
    return path


def _kept(path: Path):
    m = onnx.load(str(path))
    return {t.name: t.dims[0] for t in m.graph.initializer if t.name in ("w1", "w2")}


# ---- the profiles ----------------------------------------------------------------------------------

@pytest.mark.parametrize("name", PROFILES)
def test_every_profile_names_a_channel_multiple_for_its_default_precision_with_a_reason(name):
    from edgekit.devices import get_profile

    prof = get_profile(name)
    multiple = prof.channel_multiple()
    assert isinstance(multiple, int) and multiple >= 1
    assert prof.defaults.channel_multiple_reason.strip()
    if prof.kind != "cpu":  # the GPU figures come from documentation, and say so
        assert "never measured" in prof.defaults.channel_multiple_reason
    assert json.dumps(prof.to_dict())  # the devices command prints it


def test_cpu_profile_and_prune_help_agree_with_the_library_default():
    from edgekit.cli import prune as cli_prune
    from edgekit.devices import get_profile
    from edgekit.prune.core import DEFAULT_ROUND_TO

    assert get_profile("cpu").channel_multiple() == DEFAULT_ROUND_TO == cli_prune._DEFAULT_ROUND_TO


def test_a_bad_channel_multiple_is_a_one_line_error(tmp_path):
    src = Path(list_profiles()[0].source).read_text()
    (tmp_path / "bad.toml").write_text(src.replace("name = ", "name = 'bad'\n#", 1)
                                       .replace("[defaults]\nchannel_multiple = {", "[defaults]\nchannel_multiple = { "
                                                "fp64 = 0,", 1))
    proc = subprocess.run([sys.executable, "-m", "edgekit", "devices"], capture_output=True, text=True,
                          env=dict(_env(), EDGEKIT_PROFILES_DIR=str(tmp_path)))
    assert proc.returncode != 0
    assert "channel_multiple.fp64" in proc.stderr and "Traceback" not in proc.stderr


# ---- prune -----------------------------------------------------------------------------------------

def test_prune_without_device_rounds_to_the_measured_default(net, tmp_path):
    from edgekit.prune.core import DEFAULT_ROUND_TO

    d = _json("prune", net, "-o", tmp_path / "p.onnx", "--ratio", "0.3")
    assert d["round_to"] == DEFAULT_ROUND_TO
    row = next(r for r in d["device"]["defaults"] if r["flag"] == "--round-to")
    assert row["from"] == "edgekit default" and "bench/prune_rounding.py" in row["reason"]
    kept = _kept(tmp_path / "p.onnx")
    assert all(k % DEFAULT_ROUND_TO == 0 and k < 64 for k in kept.values()), kept


@pytest.mark.parametrize("device", ["xavier-nx", "tx2"])
def test_prune_device_sets_rounding_and_an_explicit_flag_wins(cli, net, tmp_path, device):
    from edgekit.devices import get_profile

    want = get_profile(device).channel_multiple()
    d = _in_process(cli, "prune", net, "-o", tmp_path / "p.onnx", "--ratio", "0.4", "--device", device)
    assert d["round_to"] == want and d["device"]["device"] == device
    row = next(r for r in d["device"]["defaults"] if r["flag"] == "--round-to")
    assert row["from"] == f"profile {device}" and row["value"] == want
    assert all(k % want == 0 for k in _kept(tmp_path / "p.onnx").values())
    d = _in_process(cli, "prune", net, "-o", tmp_path / "q.onnx", "--ratio", "0.4", "--device", device, "--round-to", "3")
    assert d["round_to"] == 3
    assert next(r for r in d["device"]["defaults"] if r["flag"] == "--round-to")["from"] == "flag"


def test_prune_precision_picks_the_devices_multiple(cli, net, tmp_path):
    from edgekit.devices import get_profile

    prof = get_profile("xavier-nx")
    d = _in_process(cli, "prune", net, "-o", tmp_path / "fp16.onnx", "--ratio", "0.4", "--device", "xavier-nx",
              "--precision", "fp16")
    assert d["round_to"] == prof.channel_multiple("fp16") != prof.channel_multiple()
    for args in (["--precision", "fp16"], ["--device", "tx2", "--precision", "int8"]):
        r = cli(["prune", net, "-o", tmp_path / "bad.onnx", "--ratio", "0.4", *args])
        assert r.exit_code == 1 and (r.exception is None or isinstance(r.exception, SystemExit)), r.output
        assert "Traceback" not in r.output and "error" in r.output
        assert not (tmp_path / "bad.onnx").exists()


def test_a_device_multiple_above_every_group_is_not_refused(cli, tmp_path):
    """An explicit --round-to above every group is refused; the same number from a profile is not."""
    small = tmp_path / "small.onnx"
    onnx.save(_net(c=16), str(small))
    d = _in_process(cli, "prune", small, "-o", tmp_path / "p.onnx", "--ratio", "0.5", "--device", "agx-xavier")
    assert d["round_to"] == 32 and any("fewer channels" in n for n in d["notes"])
    proc = _edgekit("prune", small, "-o", tmp_path / "q.onnx", "--ratio", "0.5", "--round-to", "32", check=False)
    assert proc.returncode == 1 and "larger than every prunable group" in proc.stderr


def test_prune_unknown_device_is_one_line(net, tmp_path):
    proc = _edgekit("prune", net, "-o", tmp_path / "p.onnx", "--ratio", "0.3", "--device", "xavier-mx", check=False)
    assert proc.returncode == 1 and "did you mean" in proc.stderr and "Traceback" not in proc.stderr
    assert not (tmp_path / "p.onnx").exists()


def test_prune_device_report_in_a_terminal(net, tmp_path):
    res = run_in_pty(["prune", net, "-o", tmp_path / "p.onnx", "--ratio", "0.3", "--device", "orin-nano"])
    text = " ".join(res.plain.split())  # rich wraps long lines at the terminal's width
    assert res.returncode == 0, text
    assert "--round-to 32: from profile orin-nano" in text and "Traceback" not in text


# ---- quantize -> deploy, every profile -------------------------------------------------------------

def test_deploy_accepts_what_quantize_wrote_for_every_profile(net, tmp_path):
    """For each profile: quantize --device X either refuses up front in one line (a board without
    fast INT8), or writes a model (+ cache) that `deploy --device X` accepts. The cpu profile has no
    TensorRT: its quantize picks the ONNX Runtime target and writes no cache."""
    from edgekit.cli.main import app
    from typer.testing import CliRunner

    runner = CliRunner()
    for prof in list_profiles():
        q, cache = tmp_path / f"{prof.name}.int8.onnx", tmp_path / f"{prof.name}.int8.calib"
        res = runner.invoke(app, ["quantize", str(net), "-o", str(q), "--calib", "synthetic", "--samples", "8",
                                  "--device", prof.name, "--json", "-"])
        if not prof.fast_int8:
            assert res.exit_code == 1 and "no fast INT8" in res.output and not q.exists(), (prof.name, res.output)
            continue
        assert res.exit_code == 0, (prof.name, res.output)
        d = json.loads(res.stdout)
        sources = {r["flag"]: r for r in d["device"]["defaults"]}
        if prof.kind == "cpu":
            assert d["target"] == "cpu" and d["calibration_cache"] is None and not cache.exists()
            continue
        assert sources["--trt-version"]["from"] == f"profile {prof.name}"
        if cache.exists():
            assert d["calibration_cache"]["version"].startswith(prof.software.tensorrt.split(".")[0])
        else:  # TensorRT 11+: no implicit calibration, the Q/DQ scales travel in the model
            assert not sources["--cache"]["value"]
        # the Q/DQ model as written, and the float model with the cache (TensorRT's implicit INT8:
        # there the cache header must name the board's TensorRT)
        res = runner.invoke(app, ["deploy", str(q), "--device", prof.name, "-o", str(tmp_path / f"b_{prof.name}"),
                                  "--recipe", "none"])
        assert res.exit_code == 0, (prof.name, res.output)
        if cache.exists():
            res = runner.invoke(app, ["deploy", str(net), "--device", prof.name, "--precision", "int8",
                                      "--calib-cache", str(cache), "-o", str(tmp_path / f"f_{prof.name}"),
                                      "--recipe", "none"])
            assert res.exit_code == 0, (prof.name, res.output)


def test_quantize_explicit_trt_version_wins_and_deploy_refuses_the_mismatch(net, tmp_path):
    q = tmp_path / "q.onnx"
    d = _json("quantize", net, "-o", q, "--calib", "synthetic", "--samples", "8", "--device", "xavier-nx",
              "--trt-version", "10.3")
    assert d["calibration_cache"]["version"].startswith("10.3")
    assert next(r for r in d["device"]["defaults"] if r["flag"] == "--trt-version")["from"] == "flag"
    proc = _edgekit("deploy", net, "--device", "xavier-nx", "--precision", "int8", "--calib-cache",
                    q.with_suffix(".calib"), "-o", tmp_path / "b", "--recipe", "none", check=False)
    assert proc.returncode != 0 and "10.3" in proc.stderr and not (tmp_path / "b").exists()


def test_quantize_refuses_a_model_above_the_boards_opset_before_calibrating(tmp_path):
    new = tmp_path / "new.onnx"
    onnx.save(_net(opset=17), str(new))
    before = new.read_bytes()
    proc = _edgekit("quantize", new, "-o", tmp_path / "q.onnx", "--calib", "synthetic", "--device", "agx-xavier",
                    "--trt-version", "8.2.1", check=False)
    assert proc.returncode == 1 and "opset 13 at most" in proc.stderr, proc.stderr
    assert new.read_bytes() == before and not (tmp_path / "q.onnx").exists()


# ---- inspect sparsity ------------------------------------------------------------------------------

@pytest.mark.parametrize("device", ["orin-nano", "xavier-nx"])
def test_inspect_sparsity_says_whether_24_applies_on_the_board(net, device):
    from edgekit.devices import get_profile

    d = _json("inspect", "sparsity", net, "--device", device)
    row = next(r for r in d["device"]["defaults"] if r["flag"] == "2:4")
    assert row["value"] is get_profile(device).sparse_tensor_cores
    assert row["from"] == f"profile {device}"


# ---- edgekit run pipeline.toml ----------------------------------------------------------------------

_PIPELINE = '''device = "{device}"
[[step]]
command = "prune"
args = ["net.onnx", "-o", "net.pruned.onnx", "--ratio", "0.3"]
[[step]]
command = "quantize"
args = ["{quant_in}", "-o", "net.int8.onnx", "--calib", "synthetic", "--samples", "8"]
[[step]]
command = "deploy"
args = ["net.int8.onnx", "-o", "bundle", "--recipe", "none"]
'''


def test_run_pipeline_carries_one_device_through_the_chain(net, tmp_path):
    (tmp_path / "pipeline.toml").write_text(_PIPELINE.format(device="orin-nano", quant_in="net.pruned.onnx"))
    proc = subprocess.run([sys.executable, "-m", "edgekit", "run", "pipeline.toml", "--json", "-"], cwd=str(tmp_path),
                          capture_output=True, text=True, env=_env())
    assert proc.returncode == 0, proc.stderr
    d = json.loads(proc.stdout)
    assert d["ok"] and [s["returncode"] for s in d["steps"]] == [0, 0, 0]
    assert all(s["argv"][-2:] == ["--device", "orin-nano"] for s in d["steps"])
    assert d["steps"][0]["report"]["round_to"] == 32  # orin-nano's INT8 multiple
    assert d["steps"][1]["report"]["calibration_cache"]["version"].startswith("10.3")
    assert (tmp_path / "bundle" / "run.sh").is_file()


def test_run_pipeline_stops_at_the_first_failing_step(net, tmp_path):
    (tmp_path / "pipeline.toml").write_text(_PIPELINE.format(device="orin-nano", quant_in="net.pruned.onnx")
                                            .replace('"net.onnx"', '"missing.onnx"'))
    proc = subprocess.run([sys.executable, "-m", "edgekit", "run", "pipeline.toml", "--json", "-"], cwd=str(tmp_path),
                          capture_output=True, text=True, env=_env())
    assert proc.returncode == 1
    d = json.loads(proc.stdout)
    assert not d["ok"] and len(d["steps"]) == 1 and d["steps"][0]["returncode"] == 1
    assert not (tmp_path / "bundle").exists()


@pytest.mark.parametrize("text", ['device = "orn-nano"\n[[step]]\ncommand = "prune"\nargs = []\n',
                                  '[[step]]\ncommand = "rm"\nargs = ["-rf", "/"]\n', "[[step]\n"])
def test_run_bad_pipeline_is_one_line(tmp_path, text):
    (tmp_path / "p.toml").write_text(text)
    proc = _edgekit("run", tmp_path / "p.toml", check=False)
    assert proc.returncode == 1 and "Traceback" not in proc.stderr and "error" in proc.stderr
