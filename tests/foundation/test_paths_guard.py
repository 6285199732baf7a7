"""Issue 17, defects 5, 8, 12, 14, 15: every path a command touches is checked before any work.

The bad-input matrix runs the real CLI (``python -m edgekit``) in a subprocess over the writing
commands and the path classes of the issue, and asserts a non-zero exit, a one-line error (no
traceback), and a folder left exactly as it was (the input unchanged, nothing left behind).
"""

from __future__ import annotations

import errno
import hashlib
import os
import shutil
import signal
import stat
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import onnx
import pytest

from edgekit.errors import InputError
from edgekit.graph.io import atomic_output, external_data_files, save_model, sweep_stale_temps, temp_prefix
from edgekit.graph.paths import PathGuard

ROOT = Path(__file__).resolve().parents[2]
IS_ROOT = hasattr(os, "geteuid") and os.geteuid() == 0


def _env(home: Path) -> dict:
    env = dict(os.environ, PYTHONPATH=str(ROOT), OMP_NUM_THREADS="1", EDGEKIT_DEBUG="0", COLUMNS="200",
               HOME=str(home), NO_COLOR="1")
    env.pop("EDGEKIT_PROGRESS", None)
    return env


# root writes into read-only folders: without these capabilities it obeys the mode bits like anyone
_NO_DAC = ["setpriv", "--bounding-set=-dac_override,-dac_read_search,-fowner"]


def _run(args, cwd: Path, obey_modes: bool = False, umask=None, code=None) -> subprocess.CompletedProcess:
    """``python -m edgekit ARGS`` (or ``python -c CODE ARGS``) in ``cwd``."""
    head = [sys.executable, "-c", code, "edgekit"] if code else [sys.executable, "-m", "edgekit"]
    if obey_modes and IS_ROOT:
        head = _NO_DAC + head
    return subprocess.run(head + [str(a) for a in args], cwd=str(cwd), env=_env(cwd / "home"), capture_output=True,
                          text=True, timeout=300, preexec_fn=None if umask is None else (lambda: os.umask(umask)))


def _snapshot(folder: Path) -> dict:
    """Every entry below ``folder`` (hidden ones too) with its content hash, link target or kind."""
    out = {}
    for dirpath, dirnames, filenames in os.walk(folder):
        for name in dirnames + filenames:
            p = Path(dirpath) / name
            rel = p.relative_to(folder).as_posix()
            if p.is_symlink():
                out[rel] = "-> " + os.readlink(p)
            elif p.is_dir():
                out[rel] = "dir"
            else:
                out[rel] = hashlib.sha256(p.read_bytes()).hexdigest()
    return out


def _assert_one_line_error(r: subprocess.CompletedProcess, expect: str = "") -> str:
    text = r.stdout + r.stderr
    assert r.returncode not in (0, None), text
    assert "Traceback" not in text, text
    lines = [ln for ln in r.stderr.splitlines() if ln.strip()]
    errors = [ln for ln in lines if ln.startswith("error:")]
    assert len(errors) == 1, text
    assert all(ln.startswith(("error:", "hint:", "warning:")) for ln in lines), text
    assert expect.lower() in errors[0].lower(), text
    return errors[0]


@pytest.fixture
def work(make_tiny):
    """A folder the CLI runs in, with every kind of path the matrix needs."""
    tiny_conv_model = make_tiny
    d = Path(tempfile.mkdtemp(prefix="ek-paths-")).resolve()
    (d / "home").mkdir()
    onnx.save(tiny_conv_model(), str(d / "in.onnx"))
    save_model(tiny_conv_model(), d / "ext.onnx", external_data=True)
    (d / "in.onnx").with_name("m.calib").write_bytes((d / "in.onnx").read_bytes())
    (d / "m.ts").write_bytes(b"not really TorchScript; the guard refuses before reading it")
    (d / "calib.npy").write_bytes(b"\x93NUMPY placeholder")
    (d / "afile").write_text("a file where a folder should be\n")
    (d / "adir").mkdir()
    (d / "adir" / "keep.txt").write_text("x\n")
    (d / "sub").mkdir()
    (d / "sub" / "in.onnx").write_bytes((d / "in.onnx").read_bytes())
    (d / "ro").mkdir()
    os.chmod(d / "ro", 0o555)
    os.symlink("in.onnx", d / "link.onnx")
    os.symlink("m.ts", d / "link.ts")
    os.symlink("loop", d / "loop")
    yield d
    os.chmod(d / "ro", 0o755)
    shutil.rmtree(d, ignore_errors=True)


# ---- the matrix: command x path class ------------------------------------------------------------

_CMD = {
    "prune": lambda i, o: ["prune", i, "-o", o, "--ratio", "0.3"],
    "quantize": lambda i, o: ["quantize", i, "-o", o, "--calib", "synthetic", "--method", "minmax"],
    "deploy": lambda i, o: ["deploy", i, "--device", "orin", "-o", o],
    "build": lambda i, o: ["build", i, "--device", "orin", "-o", o],
    "export": lambda i, o: ["export", "m.ts" if i == "in.onnx" else i, "-o", o],
    "profile": lambda i, o: ["profile", i, "--duration-s", "0.05", "--iterations", "2", "--plot", o],
}

# (output, expected words in the error); "{ext}" is the command's output suffix
_OUTPUT_CLASSES = {
    "equals-input": ("{in}", "overwrite"),
    "symlink-to-input": ("link{in_suffix}", "overwrite"),
    "parent-is-a-file": ("afile/out{ext}", "not a folder"),
    "missing-folder": ("nope/out{ext}", "does not exist"),
    "output-is-a-folder": ("adir", ""),
    "symlink-loop": ("loop", "symlink loop"),
}
_EXT = {"prune": ".onnx", "quantize": ".onnx", "deploy": "", "build": ".engine", "export": ".onnx", "profile": ".png"}


def _cases():
    for cmd in _CMD:
        for cls in _OUTPUT_CLASSES:
            if cmd == "profile" and cls in ("equals-input", "symlink-to-input", "output-is-a-folder", "symlink-loop"):
                continue  # the plot wants a .png path: its own one-line error, covered by --json below
            yield cmd, cls


@pytest.mark.parametrize("cmd,cls", list(_cases()))
def test_bad_output_path(work, cmd, cls):
    out, expect = _OUTPUT_CLASSES[cls]
    src = "m.ts" if cmd == "export" else "in.onnx"
    out = out.format(ext=_EXT[cmd], in_suffix=Path(src).suffix, **{"in": src})
    before = _snapshot(work)
    r = _run(_CMD[cmd]("in.onnx", out), work)
    _assert_one_line_error(r, expect)
    assert _snapshot(work) == before


@pytest.mark.parametrize("cmd", ["prune", "quantize", "deploy", "build", "profile"])
def test_output_on_the_inputs_external_data(work, cmd):
    """`prune ext.onnx -o ext.onnx.data` wrote over the input's weights with exit 0 (defect 12)."""
    # a plot must end in .png: profile is checked through --json instead
    argv = ["profile", "ext.onnx", "--json", "ext.onnx.data"] if cmd == "profile" else _CMD[cmd]("ext.onnx", "ext.onnx.data")
    before = _snapshot(work)
    _assert_one_line_error(_run(argv, work), "external data")
    assert _snapshot(work) == before


@pytest.mark.parametrize("argv,expect", [
    (["quantize", "m.calib", "-o", "m.onnx", "--calib", "synthetic"], "calibration cache"),
    (["quantize", "in.onnx", "-o", "calib.npy", "--calib", "calib.npy"], "overwrite"),
    (["quantize", "in.onnx", "-o", "q.onnx", "--calib", "synthetic", "--json", "q.calib"], "same path"),
    (["deploy", "in.onnx", "-o", "in.onnx", "--force", "--device", "orin"], "overwrite"),
    (["deploy", "sub/in.onnx", "-o", "sub", "--force", "--device", "orin"], "replace"),
    (["deploy", "in.onnx", "-o", "b", "--device", "orin", "--json", "b/r.json"], "inside"),
    (["build", "in.onnx", "--device", "orin", "-o", "x.engine", "--timing-cache", "in.onnx"], "timing cache"),
    (["build", "in.onnx", "--device", "orin", "-o", "x.engine", "--json", "x.engine.json"], "manifest"),
    (["prune", "in.onnx", "-o", "p.onnx", "--ratio", "0.3", "--json", "p.onnx"], "same path"),
    (["export", "m.ts", "-o", "m.ts"], "overwrite"),
])
def test_side_outputs_and_overlaps(work, argv, expect):
    before = _snapshot(work)
    _assert_one_line_error(_run(argv, work), expect)
    assert _snapshot(work) == before


_JSON_CMDS = {
    "prune": ["prune", "in.onnx", "-o", "p.onnx", "--ratio", "0.3"],
    "quantize": ["quantize", "in.onnx", "-o", "q.onnx", "--calib", "synthetic"],
    "deploy": ["deploy", "in.onnx", "--device", "orin", "-o", "bundle"],
    "profile": ["profile", "in.onnx", "--duration-s", "0.05", "--iterations", "2"],
    "inspect-qdq": ["inspect", "qdq", "in.onnx"],
    "inspect-sparsity": ["inspect", "sparsity", "in.onnx"],
    "devices": ["devices"],
    "doctor": ["doctor"],
}


_JSON_TARGETS = [("nope/r.json", "does not exist"), ("afile/r.json", "not a folder"), ("adir", "folder"),
                 ("in.onnx", "overwrite")]


@pytest.mark.parametrize("cmd,target,expect", [(c, t, e) for c in _JSON_CMDS for t, e in _JSON_TARGETS
                                               if not (t == "in.onnx" and c in ("devices", "doctor"))])
def test_bad_json_path_fails_before_any_output(work, cmd, target, expect):
    """`prune ... --json nope/r.json` wrote the model, then failed (defect 14)."""
    before = _snapshot(work)
    _assert_one_line_error(_run(_JSON_CMDS[cmd] + ["--json", target], work), expect)
    assert _snapshot(work) == before


@pytest.mark.parametrize("cmd", ["prune", "quantize", "deploy", "build", "profile", "inspect-qdq"])
def test_symlink_loop_as_input(work, cmd):
    argv = {"prune": ["prune", "loop", "-o", "p.onnx", "--ratio", "0.3"],
            "quantize": ["quantize", "loop", "-o", "q.onnx", "--calib", "synthetic"],
            "deploy": ["deploy", "loop", "--device", "orin", "-o", "bundle"],
            "build": ["build", "loop", "--device", "orin", "--dry-run"],
            "profile": ["profile", "loop"],
            "inspect-qdq": ["inspect", "qdq", "loop"]}[cmd]
    before = _snapshot(work)
    _assert_one_line_error(_run(argv, work), "symlink loop")
    assert _snapshot(work) == before


@pytest.mark.parametrize("argv", [
    ["prune", "in.onnx", "-o", "ro/p.onnx", "--ratio", "0.3"],
    ["quantize", "in.onnx", "-o", "ro/q.onnx", "--calib", "synthetic"],
    ["deploy", "in.onnx", "--device", "orin", "-o", "ro/bundle"],
    ["build", "in.onnx", "--device", "orin", "-o", "ro/x.engine"],
    ["export", "m.ts", "-o", "ro/m.onnx"],
    ["profile", "in.onnx", "--duration-s", "0.05", "--iterations", "2", "--plot", "ro/x.png"],
    ["prune", "in.onnx", "-o", "p.onnx", "--ratio", "0.3", "--json", "ro/r.json"],
    ["devices", "--json", "ro/d.json"],
], ids=lambda a: "-".join(a[:1] + [x for x in a if x.startswith("ro/")]))
def test_read_only_folder(work, argv):
    """A folder the user cannot write: refused before the work."""
    if IS_ROOT and not shutil.which("setpriv"):
        pytest.skip("root writes into read-only folders and setpriv is missing to drop that power")
    before = _snapshot(work)
    r = _run(argv, work, obey_modes=True)
    _assert_one_line_error(r, "permission denied")
    assert _snapshot(work) == before


# ---- OSErrors of the atomic writer -------------------------------------------------------------

_FULL_DISK = """
import errno, os, sys
_replace = os.replace
def full(src, dst, *a, **k):
    if ".ek-" in os.fspath(src):
        raise OSError(errno.ENOSPC, "No space left on device")
    return _replace(src, dst, *a, **k)
os.replace = full
sys.argv = sys.argv[1:]
from edgekit.cli.main import run
run()
"""


@pytest.mark.parametrize("argv", [["prune", "in.onnx", "-o", "p.onnx", "--ratio", "0.3"],
                                  ["devices", "--json", "d.json"]])
def test_full_disk_is_one_line(work, argv):
    before = _snapshot(work)
    r = _run(argv, work, code=_FULL_DISK)
    _assert_one_line_error(r, "no space left")
    assert _snapshot(work) == before


@pytest.mark.parametrize("err", [errno.ENOSPC, errno.EROFS, errno.EACCES, errno.EISDIR])
def test_atomic_output_turns_oserror_into_input_error(tmp_path, err):
    dest = tmp_path / "out.bin"
    with pytest.raises(InputError) as ei:
        with atomic_output(dest) as tmp:
            tmp.write_text("half")
            raise OSError(err, os.strerror(err))
    assert os.strerror(err) in ei.value.message and str(dest) in ei.value.message
    assert list(tmp_path.iterdir()) == []


def test_atomic_output_refuses_a_folder_at_the_destination(tmp_path):
    (tmp_path / "d").mkdir()
    with pytest.raises(InputError, match="is a folder"):
        with atomic_output(tmp_path / "d"):
            raise AssertionError("the block must not run")
    assert [p.name for p in tmp_path.iterdir()] == ["d"]


def test_external_data_save_works_from_the_output_folder(tmp_path, make_tiny, monkeypatch):
    """onnx tested the temporary data file's name against the current folder and refused it."""
    monkeypatch.chdir(tmp_path)
    save_model(make_tiny(), "m.onnx", external_data=True)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["m.onnx", "m.onnx.data"]
    assert external_data_files(tmp_path / "m.onnx") == [tmp_path / "m.onnx.data"]


# ---- permissions (defect 8) ----------------------------------------------------------------------

@pytest.mark.parametrize("umask,mode", [(0o022, 0o644), (0o077, 0o600), (0o002, 0o664)])
def test_outputs_follow_the_umask(work, umask, mode):
    r = _run(["prune", "in.onnx", "-o", "p.onnx", "--ratio", "0.3", "--json", "r.json"], work, umask=umask)
    assert r.returncode == 0, r.stdout + r.stderr
    for name in ("p.onnx", "r.json"):
        assert stat.S_IMODE(os.stat(work / name).st_mode) == mode, name


def test_external_data_files_follow_the_umask(tmp_path, make_tiny):
    old = os.umask(0o022)
    try:
        save_model(make_tiny(), tmp_path / "m.onnx", external_data=True)
    finally:
        os.umask(old)
    assert {p.name: stat.S_IMODE(p.stat().st_mode) for p in tmp_path.iterdir()} == \
        {"m.onnx": 0o644, "m.onnx.data": 0o644}


# ---- stale temporary files after SIGKILL (defect 15) -------------------------------------------

_SLOW_WRITER = """
import sys, time
from edgekit.graph.io import atomic_output
with atomic_output(sys.argv[1]) as tmp:
    tmp.write_bytes(b"partial" * 1000)
    print("writing", flush=True)
    time.sleep(600)
"""


def test_temp_files_of_a_killed_process_are_swept(work):
    p = subprocess.Popen([sys.executable, "-c", _SLOW_WRITER, str(work / "p.onnx")], env=_env(work / "home"),
                         stdout=subprocess.PIPE, text=True)
    try:
        assert p.stdout.readline().strip() == "writing"
        left = [n for n in os.listdir(work) if n.startswith(".p.onnx.")]
        assert len(left) == 1  # the live writer's temp file
        assert sweep_stale_temps(work) == [] and os.listdir(work).count(left[0]) == 1  # alive: kept
    finally:
        p.send_signal(signal.SIGKILL)
        p.wait()
    assert left[0] in os.listdir(work) and not (work / "p.onnx").exists()  # nothing at the output itself
    r = _run(["prune", "in.onnx", "-o", "p.onnx", "--ratio", "0.3"], work)
    assert r.returncode == 0, r.stdout + r.stderr
    assert not [n for n in os.listdir(work) if n.startswith(".")]
    onnx.checker.check_model(onnx.load(str(work / "p.onnx")))


def test_sweep_keeps_live_and_foreign_files(tmp_path):
    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()
    time.sleep(0.05)
    mine = tmp_path / (temp_prefix(tmp_path / "a.onnx") + "abcdefgh.tmp")
    stale = tmp_path / (temp_prefix(tmp_path / "a.onnx").replace(f"-{os.getpid()}.", f"-{dead.pid}.") + "abcdefgh.tmp")
    stale_dir = tmp_path / (temp_prefix(tmp_path / "bundle").replace(f"-{os.getpid()}.", f"-{dead.pid}.") + "xyz12345.tmp")
    host = temp_prefix("a").split("-")[1]
    other_host = tmp_path / f".a.onnx.ek-{'ffffff' if host != 'ffffff' else '000000'}-{dead.pid}.abcdefgh.tmp"
    user = tmp_path / ".a.onnx.notes.tmp"
    for f in (mine, stale, other_host, user):
        f.write_text("x")
    stale_dir.mkdir()
    (stale_dir / "model.onnx").write_text("x")
    removed = sweep_stale_temps(tmp_path)
    assert sorted(removed) == sorted([stale, stale_dir])
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted(p.name for p in (mine, other_host, user))


# ---- the guard itself ----------------------------------------------------------------------------

def test_guard_lists_external_data_and_refuses_folders(tmp_path, make_tiny):
    save_model(make_tiny(), tmp_path / "m.onnx", external_data=True)
    g = PathGuard().read_model(tmp_path / "m.onnx")
    assert [r.real for r in g.reads] == [(tmp_path / "m.onnx").resolve(), (tmp_path / "m.onnx.data").resolve()]
    (tmp_path / "imgs").mkdir()
    with pytest.raises(InputError, match="inside"):
        PathGuard().read(tmp_path / "imgs", "calibration data").write(tmp_path / "imgs" / "o.onnx").check()
    with pytest.raises(InputError, match="replace"):
        PathGuard().read(tmp_path / "m.onnx").write(tmp_path, "bundle", folder=True).check()
    os.link(tmp_path / "m.onnx", tmp_path / "hard.onnx")
    with pytest.raises(InputError, match="overwrite"):
        PathGuard().read(tmp_path / "m.onnx").write(tmp_path / "hard.onnx").check()
    PathGuard().read_model(tmp_path / "m.onnx").write_model(tmp_path / "n.onnx").write_json("-").check()
    PathGuard().write(tmp_path / "cache" / "deep" / "t.cache", "timing cache", make_parents=True).check()


def test_a_good_run_still_works_and_leaves_only_its_outputs(work):
    before = _snapshot(work)
    r = _run(["prune", "in.onnx", "-o", "p.onnx", "--ratio", "0.3", "--json", "r.json"], work)
    assert r.returncode == 0, r.stdout + r.stderr
    after = _snapshot(work)
    assert {k: v for k, v in after.items() if k not in ("p.onnx", "r.json")} == before
