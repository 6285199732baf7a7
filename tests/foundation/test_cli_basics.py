import subprocess
import sys


def test_help_does_not_import_heavy_modules():
    code = ("import sys; from edgekit.cli.main import app; "
            "from typer.testing import CliRunner; r = CliRunner().invoke(app, ['--help']); "
            "assert r.exit_code == 0, r.output; "
            "heavy = [m for m in ('torch', 'tensorrt', 'pycuda', 'onnxruntime', 'onnx', 'matplotlib') if m in sys.modules]; "
            "print(','.join(heavy))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == ""


def test_every_command_has_help_and_json(cli):
    from edgekit.cli.main import COMMANDS

    r = cli(["--help"])
    assert r.exit_code == 0
    for name in COMMANDS:
        assert name in r.output
        h = cli([name, "--help"])
        assert h.exit_code == 0, (name, h.output)
        if name != "inspect":
            assert "--json" in h.output, name


def test_python_dash_m_and_version():
    out = subprocess.run([sys.executable, "-m", "edgekit", "--version"], capture_output=True, text=True)
    assert out.returncode == 0 and out.stdout.startswith("edgekit ")


def test_doctor_json(cli):
    r = cli(["doctor", "--json", "-"])
    d = r.json()
    names = {c["name"] for c in d["checks"]}
    assert {"onnx", "onnxruntime", "torch", "tensorrt (Python API)", "trtexec", "pycuda", "CUDA device",
            "Jetson board"} <= names
    assert r.exit_code == (0 if d["ok"] else 1)
    ort = next(c for c in d["checks"] if c["name"] == "onnxruntime providers")
    assert "CPUExecutionProvider" in ort["detail"]


def test_doctor_sees_a_board_from_fixture_root(tmp_path):
    from edgekit.doctor import run_doctor

    from fixtures import recorded

    rel = recorded("detect") / "nv_tegra_release-R36.4.0.txt"
    model = recorded("detect") / "model-agx-orin-devkit.txt"
    (tmp_path / "etc").mkdir()
    (tmp_path / "etc" / "nv_tegra_release").write_bytes(open(rel, "rb").read())
    (tmp_path / "proc" / "device-tree").mkdir(parents=True)
    (tmp_path / "proc" / "device-tree" / "model").write_bytes(open(model, "rb").read())
    rep = run_doctor(root=str(tmp_path))
    assert rep.board is not None and rep.board["l4t"].startswith("36.4")
    board = next(c for c in rep.checks if c.name == "Jetson board")
    assert board.ok and "36.4" in board.detail
