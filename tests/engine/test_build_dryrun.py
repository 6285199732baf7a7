"""`edgekit build --dry-run` prints the right trtexec flags for every device profile and TensorRT version.

Expected flags come from trtexec's help text per release (sampleOptions.cpp), typed in here.
"""

from __future__ import annotations


import pytest

from edgekit.trt.trtexec_log import parse_log_file
from edgekit.devices import list_profiles
from fakes.models import conv_model
from fixtures import recorded

FIX = recorded("trtexec")

# profile -> (TensorRT, flags that must be present, flags that must be absent)
EXPECTED = {
    "tx2": ("8.2.1", ["--fp16", "--workspace=1024", "--buildOnly"],
            ["--int8", "--sparsity=enable", "--memPoolSize", "--skipInference", "--useDLACore"]),
    # the original Nano: TensorRT 8.2 (--workspace in MiB, --buildOnly), FP16 only, no DLA
    "nano": ("8.2.1", ["--fp16", "--workspace=512", "--buildOnly"],
             ["--int8", "--sparsity=enable", "--memPoolSize", "--skipInference", "--useDLACore"]),
    "xavier-nx": ("8.5.2", ["--fp16", "--int8", "--memPoolSize=workspace:2048", "--buildOnly"],
                  ["--workspace=", "--sparsity=enable", "--skipInference"]),
    "agx-xavier": ("8.5.2", ["--fp16", "--int8", "--memPoolSize=workspace:4096", "--buildOnly"],
                   ["--workspace=", "--sparsity=enable"]),
    "orin-nano": ("10.3", ["--fp16", "--int8", "--sparsity=enable", "--memPoolSize=workspace:2048M", "--skipInference"],
                  ["--workspace=", "--buildOnly", "--explicitBatch"]),
    "orin-nx": ("10.3", ["--fp16", "--int8", "--sparsity=enable", "--memPoolSize=workspace:4096M", "--skipInference"],
                ["--workspace=", "--buildOnly"]),
    "agx-orin": ("10.3", ["--fp16", "--int8", "--sparsity=enable", "--memPoolSize=workspace:8192M", "--skipInference"],
                 ["--workspace=", "--buildOnly"]),
    # TensorRT 11 (strongly typed): no precision flags at all
    "thor": ("11.4", ["--sparsity=enable", "--memPoolSize=workspace:8192M", "--skipInference"],
             ["--fp16", "--int8", "--best", "--workspace=", "--buildOnly", "--useDLACore"]),
    # FP16 by default, INT8 as well for a Q/DQ model (TensorRT builds Q/DQ nodes only with INT8 on)
    "x86-gpu": ("10.3", ["--fp16", "--int8", "--memPoolSize=workspace:4096M", "--skipInference"],
                ["--sparsity=enable", "--workspace="]),
}


@pytest.fixture
def qdq(tmp_path):
    return conv_model(tmp_path / "m.onnx", qdq=True)


def test_every_profile_is_covered():
    names = {p.name for p in list_profiles()}
    assert set(EXPECTED) | {"cpu"} >= names, f"new profile(s) without a dry-run expectation: {names - set(EXPECTED)}"


@pytest.mark.parametrize("device", sorted(EXPECTED))
def test_dry_run_flags_per_profile(cli, qdq, tiny, tmp_path, device):
    version, present, absent = EXPECTED[device]
    out = tmp_path / "m.engine"
    model = tiny if device in ("tx2", "nano") else qdq  # TX2 and Nano refuse Q/DQ models (no fast INT8): see test_build_checks.py
    r = cli(["build", model, "--device", device, "-o", out, "--dry-run", "--json", "-"])
    assert r.exit_code == 0, r.output
    d = r.json()
    argv = d["trtexec_command"]
    assert d["dry_run"] is True and d["trt_version"] == version
    assert argv[0] == "trtexec" and f"--onnx={model}" in argv and f"--saveEngine={out}" in argv
    for flag in present:
        assert any(a == flag or a.startswith(flag) for a in argv), (flag, argv)
    for flag in absent:
        assert not any(a.startswith(flag) for a in argv), (flag, argv)
    tc = [a for a in argv if a.startswith("--timingCacheFile=")]
    assert tc and tc[0].endswith(f"{device}-trt{'.'.join(version.split('.')[:2])}.cache")
    assert d["trtexec_command_line"].startswith("trtexec --onnx=")
    assert not out.exists()  # a dry run builds nothing


@pytest.mark.parametrize("version,present,absent", [
    ("8.2", ["--workspace=8192", "--buildOnly", "--fp16", "--int8"], ["--memPoolSize", "--skipInference"]),
    ("8.4", ["--memPoolSize=workspace:8192", "--buildOnly"], ["--workspace=", "--skipInference"]),
    ("8.5", ["--memPoolSize=workspace:8192", "--buildOnly"], ["--skipInference"]),
    ("8.6", ["--memPoolSize=workspace:8192", "--skipInference"], ["--buildOnly", "--workspace="]),
    ("10.3", ["--memPoolSize=workspace:8192M", "--skipInference", "--fp16", "--int8"], ["--buildOnly"]),
    ("11.4", ["--memPoolSize=workspace:8192M", "--skipInference", "--sparsity=enable"],
     ["--fp16", "--int8", "--best", "--calib=", "--buildOnly", "--workspace="]),
])
def test_dry_run_flags_per_tensorrt_version(cli, qdq, version, present, absent):
    r = cli(["build", qdq, "--device", "orin", "--trt-version", version, "--dry-run", "--json", "-"])
    assert r.exit_code == 0, r.output
    argv = r.json()["trtexec_command"]
    for flag in present:
        assert flag in argv or any(a.startswith(flag) for a in argv), (flag, argv)
    for flag in absent:
        assert not any(a.startswith(flag) for a in argv), (flag, argv)


def test_dla_calib_shapes_and_builder_settings(cli, tiny, tmp_path):
    cache = tmp_path / "c.cache"
    cache.write_text("TRT-8502-EntropyCalibration2\ninput: 3c010a14\n")
    r = cli(["build", tiny, "--device", "xavier-nx", "--dla", "1", "--gpu-fallback", "--calib-cache", cache,
             "--dry-run", "--json", "-"])
    assert r.exit_code == 0, r.output
    d = r.json()
    argv = d["trtexec_command"]
    assert "--useDLACore=1" in argv and "--allowGPUFallback" in argv and f"--calib={cache}" in argv
    s = d["builder_settings"]
    assert s["create_network"].startswith("1 << EXPLICIT_BATCH")
    assert s["workspace"].startswith("config.set_memory_pool_limit(MemoryPoolType.WORKSPACE, 2147483648")
    assert s["builder_flags"] == ["FP16", "INT8", "GPU_FALLBACK"]
    assert s["calibrator"].startswith("IInt8EntropyCalibrator2")
    assert s["device"] == "DeviceType.DLA, DLA_core = 1"
    r82 = cli(["build", tiny, "--device", "tx2", "--dry-run", "--json", "-"]).json()["builder_settings"]
    assert r82["workspace"] == f"config.max_workspace_size = {1024 << 20}"
    assert r82["execution"].startswith("execute_async_v2")
    r11 = cli(["build", tiny, "--device", "orin", "--trt-version", "11.4", "--dry-run", "--json", "-"]).json()
    assert r11["builder_settings"]["builder_flags"] == ["SPARSE_WEIGHTS"]
    assert "EXPLICIT_BATCH" not in r11["builder_settings"]["create_network"]


def test_dynamic_shapes_become_min_opt_max(cli, tmp_path):
    dyn = conv_model(tmp_path / "d.onnx", batch="N")
    r = cli(["build", dyn, "--device", "orin", "--shapes", "input:4x4x16x16", "--min-shapes", "input:1x4x16x16",
             "--max-shapes", "input:8x4x16x16", "--dry-run", "--json", "-"])
    argv = r.json()["trtexec_command"]
    assert "--minShapes=input:1x4x16x16" in argv and "--optShapes=input:4x4x16x16" in argv
    assert "--maxShapes=input:8x4x16x16" in argv


def test_human_dry_run_output_shows_the_command(cli, tiny):
    r = cli(["build", tiny, "--device", "tx2", "--dry-run"])
    assert r.exit_code == 0
    assert "trtexec --onnx=" in r.output and "--workspace=1024" in r.output and "--buildOnly" in r.output


def test_the_10x_command_avoids_every_option_the_recorded_10x_trtexec_rejected(cli, tiny):
    rejected = [e.split(":", 1)[1].split()[0] for e in
                parse_log_file(FIX / "jetson-jp6-trt100300-FAILED-unknown-option.log").errors]
    assert rejected == ["--workspace", "--buildOnly", "--explicitBatch"]
    argv = cli(["build", tiny, "--device", "orin-nano", "--dry-run", "--json", "-"]).json()["trtexec_command"]
    for opt in rejected:
        assert not any(a.split("=")[0] == opt for a in argv)


def test_json_to_a_file(cli, tiny, tmp_path):
    target = tmp_path / "plan.json"
    r = cli(["build", tiny, "--device", "agx-xavier", "--dry-run", "--json", target])
    assert r.exit_code == 0, r.output
    import json

    d = json.loads(target.read_text())
    assert d["plan"]["device"] == "agx-xavier" and d["trtexec_command"][0] == "trtexec"
    assert any("no Q/DQ nodes" in w for w in d["warnings"])  # INT8 default fell back to FP16, and says so
