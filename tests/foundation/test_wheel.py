"""`pip install .` (not only editable) must give a working `edgekit devices`: the data folders ship."""

import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]


def test_wheel_contains_data_folders_and_finds_profiles(tmp_path):
    pytest.importorskip("hatchling")
    proc = subprocess.run([sys.executable, "-m", "pip", "wheel", "-q", "--no-deps", "--no-build-isolation",
                           "-w", str(tmp_path), str(ROOT)], capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr[-2000:]
    wheel = next(tmp_path.glob("edgekit-*.whl"))
    with zipfile.ZipFile(wheel) as z:
        names = set(z.namelist())
        z.extractall(tmp_path / "site")
    for folder in ("profiles", "kernels", "exporters"):
        assert any(n.startswith(f"edgekit/_data/{folder}/") for n in names), folder
    assert "edgekit/_data/profiles/agx-orin.toml" in names
    code = ("import edgekit, edgekit._resources as r; from edgekit.devices import list_profiles; "
            "assert '_data' in str(r.data_dir('profiles')), r.data_dir('profiles'); "
            "print(len(list_profiles()))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=str(tmp_path),
                         env={"PYTHONPATH": str(tmp_path / "site"), "PATH": "/usr/bin:/bin"})
    assert out.returncode == 0, out.stderr[-2000:]
    assert int(out.stdout.strip()) >= 8
