"""Fixtures shared by tests/build and tests/runtime (imported by their conftest.py)."""

from __future__ import annotations

import os
import stat
import sys
from pathlib import Path

import pytest

from fakes.models import conv_model


@pytest.fixture(autouse=True)
def _isolated_cache(tmp_path, monkeypatch):
    # timing caches go under the test's tmp dir, never ~/.cache; no real trtexec is ever found
    monkeypatch.setenv("EDGEKIT_CACHE_DIR", str(tmp_path / "cache"))
    monkeypatch.delenv("EDGEKIT_TRTEXEC", raising=False)
    monkeypatch.setenv("PATH", os.pathsep.join(p for p in os.environ.get("PATH", "").split(os.pathsep)
                                               if not (Path(p) / "trtexec").exists()))


@pytest.fixture
def tiny(tmp_path):
    return conv_model(tmp_path / "tiny.onnx")


@pytest.fixture
def fake_trtexec(tmp_path, monkeypatch):
    """Put a fake `trtexec` on PATH that replays a recorded log with an exit code.

    configure(log_path, rc=0, times=None) -> argv file. The script writes a dummy engine to
    --saveEngine, copies `times` to --exportTimes, and records its argv.
    """
    bindir = tmp_path / "fakebin"
    bindir.mkdir()
    script = bindir / "trtexec"
    script.write_text(f"""#!{sys.executable}
import os, shutil, sys
args = sys.argv[1:]
with open(os.environ["FAKE_TRTEXEC_ARGV"], "a") as fh:
    fh.write(" ".join(args) + "\\n")
sys.stdout.write(open(os.environ["FAKE_TRTEXEC_LOG"]).read())
rc = int(os.environ.get("FAKE_TRTEXEC_RC", "0"))
if rc == 0:
    for a in args:
        if a.startswith("--saveEngine="):
            open(a.split("=", 1)[1], "wb").write(b"fake-engine-bytes")
        if a.startswith("--exportTimes=") and os.environ.get("FAKE_TRTEXEC_TIMES"):
            shutil.copy(os.environ["FAKE_TRTEXEC_TIMES"], a.split("=", 1)[1])
        if a.startswith("--exportProfile=") and os.environ.get("FAKE_TRTEXEC_PROFILE"):
            shutil.copy(os.environ["FAKE_TRTEXEC_PROFILE"], a.split("=", 1)[1])
sys.exit(rc)
""")
    script.chmod(script.stat().st_mode | stat.S_IEXEC | stat.S_IXGRP | stat.S_IXOTH)
    monkeypatch.setenv("PATH", str(bindir) + os.pathsep + os.environ.get("PATH", ""))
    argv_file = tmp_path / "trtexec-argv.txt"

    def configure(log_path, rc: int = 0, times=None, profile=None) -> Path:
        monkeypatch.setenv("FAKE_TRTEXEC_LOG", str(log_path))
        monkeypatch.setenv("FAKE_TRTEXEC_RC", str(rc))
        monkeypatch.setenv("FAKE_TRTEXEC_ARGV", str(argv_file))
        if times:
            monkeypatch.setenv("FAKE_TRTEXEC_TIMES", str(times))
        else:
            monkeypatch.delenv("FAKE_TRTEXEC_TIMES", raising=False)
        if profile:
            monkeypatch.setenv("FAKE_TRTEXEC_PROFILE", str(profile))
        return argv_file

    return configure
