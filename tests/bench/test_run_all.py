"""bench/run_all.py: --help prints help (runs nothing) and results default to the repo, not the cwd."""

import importlib.util
import subprocess
import sys
from pathlib import Path

RUN_ALL = Path(__file__).resolve().parents[2] / "bench" / "run_all.py"


def _load():
    spec = importlib.util.spec_from_file_location("bench_run_all", RUN_ALL)
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def test_help_prints_usage_and_runs_nothing(tmp_path):
    proc = subprocess.run([sys.executable, str(RUN_ALL), "--help"], cwd=tmp_path, capture_output=True,
                          text=True, timeout=60)
    assert proc.returncode == 0, proc.stderr
    assert "usage:" in proc.stdout and "--out" in proc.stdout
    assert "==" not in proc.stdout  # no benchmark started
    assert list(tmp_path.iterdir()) == []  # nothing written under the cwd


def test_list_names_the_benchmarks(tmp_path):
    proc = subprocess.run([sys.executable, str(RUN_ALL), "--list"], cwd=tmp_path, capture_output=True,
                          text=True, timeout=60)
    assert proc.returncode == 0, proc.stderr
    names = proc.stdout.split()
    assert "prune_hashes.py" in names and "run_all.py" not in names
    assert list(tmp_path.iterdir()) == []


def test_default_out_is_beside_bench_not_cwd(tmp_path, monkeypatch):
    mod = _load()
    monkeypatch.chdir(tmp_path)
    out = mod.parse_args([]).out
    assert out.is_absolute() and out == RUN_ALL.parent.parent / "build"
    assert mod.parse_args(["--out", str(tmp_path / "r")]).out == tmp_path / "r"


def test_out_that_is_a_file_is_refused_before_running(tmp_path, monkeypatch, capsys):
    mod = _load()
    monkeypatch.setattr(mod, "scripts", lambda: (_ for _ in ()).throw(AssertionError("ran benchmarks")))
    f = tmp_path / "file"
    f.write_text("x")
    assert mod.main(["--out", str(f)]) == 2
    assert "not a folder" in capsys.readouterr().err
    assert f.read_text() == "x"
