"""The second-wave commands (estimate, eval, optimize, run, sweep, cluster, worker) the way a person
runs them: under a pseudo-terminal, with ``--json -`` piped, NO_COLOR, TERM=dumb and 40 columns.

One run per case (each variant of the renderer is already covered for the old commands in
test_cli_pty.py; here each new command meets at least one), so the file stays within a few seconds
per command. `sweep --cluster local` is left out: Ray's start costs more than the rest together.
"""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
from pathlib import Path
from typing import List, NamedTuple

import numpy as np
import pytest

pytestmark = pytest.mark.skipif(sys.platform == "win32", reason="needs a POSIX pseudo-terminal")

from pty_harness import colour_codes, run_in_pty  # noqa: E402  (tests/ is on sys.path)


def _classifier(path: Path) -> Path:
    """x[batch,3,8,8] -> Conv(8) Relu GAP Flatten Gemm(5): the smallest model eval/optimize can score."""
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    rng = np.random.default_rng(0)
    inits = [numpy_helper.from_array((0.3 * rng.standard_normal(s)).astype(np.float32), n)
             for n, s in (("w", (8, 3, 3, 3)), ("b", (8,)), ("fw", (5, 8)), ("fb", (5,)))]
    nodes = [helper.make_node("Conv", ["x", "w", "b"], ["c"], pads=[1, 1, 1, 1], name="conv"),
             helper.make_node("Relu", ["c"], ["r"], name="relu"),
             helper.make_node("GlobalAveragePool", ["r"], ["g"], name="gap"),
             helper.make_node("Flatten", ["g"], ["f"], name="flatten"),
             helper.make_node("Gemm", ["f", "fw", "fb"], ["logits"], transB=1, name="fc")]
    graph = helper.make_graph(nodes, "cls", [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["batch", 3, 8, 8])],
                              [helper.make_tensor_value_info("logits", TensorProto.FLOAT, ["batch", 5])], inits)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    onnx.save(model, str(path))
    return path


class Inputs(NamedTuple):
    model: Path
    data: Path  # 16 labelled samples (labels: the model's own answers)
    not_onnx: Path


@pytest.fixture(scope="module")
def inputs(tmp_path_factory) -> Inputs:
    import onnxruntime as ort

    d = tmp_path_factory.mktemp("pty_new")
    model = _classifier(d / "cls.onnx")
    x = np.random.default_rng(1).standard_normal((16, 3, 8, 8)).astype(np.float32)
    y = ort.InferenceSession(str(model), providers=["CPUExecutionProvider"]).run(None, {"x": x})[0].argmax(1)
    np.savez(d / "data.npz", x=x, y=y)
    (d / "notes.onnx").write_text("not a model\n")
    return Inputs(model, d / "data.npz", d / "notes.onnx")


def _strict_json(text: str):
    """Parse as a strict reader (jq, JavaScript) does: no Infinity / NaN."""
    def refuse(name):
        raise ValueError(f"{name} is not JSON")
    return json.loads(text, parse_constant=refuse)


def _tree(folder: Path) -> List[str]:
    return sorted(str(p.relative_to(folder)) for p in folder.rglob("*"))  # hidden temp files included


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _ok(r) -> str:
    assert "Traceback" not in r.plain and "Traceback" not in r.stdout, r.describe()
    assert r.returncode == 0 and "error:" not in r.plain, r.describe()
    return r.plain


def test_estimate_every_board_in_40_columns(inputs, tmp_path):
    plain = _ok(run_in_pty(["estimate", inputs.model, "--device", "all"], cwd=tmp_path, columns=40))
    assert "orin-nx" in plain and "estimate" in plain
    assert all(len(line) <= 40 for line in plain.splitlines() if line[:1] in "┏┌╭+"), plain


def test_eval_against_a_reference_json_is_strict(inputs, tmp_path):
    """An identical reference has SQNR = inf: `--json -` wrote the token Infinity, which jq rejects."""
    r = run_in_pty(["eval", inputs.model, "--data", inputs.data, "--reference", inputs.model, "--json", "-"],
                   cwd=tmp_path, stdout_to_pipe=True)
    _ok(r)
    data = _strict_json(r.stdout)
    assert data["samples"] == 16 and data["top1"] == 1.0 and data["agreement"] == 1.0, data
    assert list(data["sqnr_db"].values()) == [None], data  # not finite: null


def test_optimize_two_trials_json_on_a_pipe(inputs, tmp_path):
    """The search's progress stays on the terminal; stdout is the report alone."""
    out = tmp_path / "opt"
    r = run_in_pty(["optimize", inputs.model, "--data", inputs.data, "--latency-ms", "1000", "--trials", "2",
                    "--duration-s", "0.02", "--no-plot", "-o", out, "--json", "-"], cwd=tmp_path, stdout_to_pipe=True)
    _ok(r)
    data = _strict_json(r.stdout)
    assert data["status"] == "met" and len(data["candidates"]) >= 2, data
    assert (out / "model.onnx").is_file() and _strict_json((out / "report.json").read_text())


def test_run_a_pipeline_on_a_dumb_terminal(inputs, tmp_path):
    (tmp_path / "p.toml").write_text(f'device = "orin-nx"\n[[step]]\ncommand = "inspect"\n'
                                     f'args = ["sparsity", "{inputs.model}"]\n')
    r = run_in_pty(["run", tmp_path / "p.toml"], cwd=tmp_path, term="dumb")
    plain = _ok(r)
    assert "inspect sparsity" in plain and "--device orin-nx" in plain and " ok " in plain, plain
    assert colour_codes(r.terminal) == [] and "\x1b[2K" not in r.terminal, r.describe()


def test_worker_dry_run_without_colour(tmp_path):
    plain = _ok(run_in_pty(["worker", "--address", "127.0.0.1:6379", "--device", "orin-nx", "--dry-run"],
                           cwd=tmp_path, env={"NO_COLOR": "1"}))
    assert "ray start" in plain and "edgekit-device:orin-nx" in plain, plain


def test_cluster_status_without_a_head_is_one_quick_line(tmp_path):
    """ray.init retried a missing head for minutes (printing its own log lines); now a probe fails fast."""
    address = f"127.0.0.1:{_free_port()}"
    r = run_in_pty(["cluster", "status", "--address", address, "--json", "-"], cwd=tmp_path, stdout_to_pipe=True,
                   timeout=60)
    assert r.returncode == 1 and r.seconds < 30 and "Traceback" not in r.plain, r.describe()
    lines = [line for line in r.plain.splitlines() if line.strip()]
    assert lines[0].startswith("error: cannot reach the Ray cluster at " + address), r.describe()
    assert len(lines) <= 2 and _strict_json(r.stdout)["error"] == "InputError", r.describe()


BAD = {
    "missing-file": (lambda i, w: ["estimate", w / "nope.onnx", "--device", "orin-nx"], "no such file"),
    "not-onnx": (lambda i, w: ["eval", i.not_onnx, "--data", i.data], "not a readable ONNX model"),
    "unknown-device": (lambda i, w: ["estimate", i.model, "--device", "orin-nxx"], "did you mean"),
    # before: a traceback from mkdir after the Ray cluster had started
    "unwritable-out": (lambda i, w: ["sweep", i.model, "--devices", "cpu", "--cluster", "local",
                                     "-o", w / "afile" / "sweep"], "is a file, not a folder"),
}


@pytest.mark.parametrize("case", list(BAD))
def test_bad_input_is_one_line_and_leaves_nothing(inputs, tmp_path, case):
    args, says = BAD[case]
    (tmp_path / "afile").write_text("x")
    before, model_bytes = _tree(tmp_path), inputs.model.read_bytes()
    r = run_in_pty([str(a) for a in args(inputs, tmp_path)], cwd=tmp_path, env={"NO_COLOR": "1"})
    errors = [line for line in r.plain.splitlines() if line.startswith("error:")]
    assert r.returncode == 1 and "Traceback" not in r.plain, r.describe()
    assert len(errors) == 1 and says in errors[0], r.describe()
    assert _tree(tmp_path) == before and inputs.model.read_bytes() == model_bytes, r.describe()


def test_new_commands_help_imports_nothing_heavy():
    """`edgekit CMD --help` for the new commands stays instant: no torch / ray / optuna / plotting."""
    code = ("import sys; from typer.testing import CliRunner; from edgekit.cli.main import app; "
            "codes = [CliRunner().invoke(app, [c, '--help']).exit_code for c in "
            "('estimate', 'eval', 'optimize', 'run', 'sweep', 'cluster', 'worker')]; "
            "heavy = [m for m in ('torch', 'ray', 'optuna', 'matplotlib', 'sklearn', 'onnxruntime', 'onnx') "
            "if m in sys.modules]; print(codes, heavy)")
    env = dict(os.environ, PYTHONPATH=str(Path(__file__).resolve().parents[2]))
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True, env=env)
    assert out.stdout.split("] ", 1) == ["[0, 0, 0, 0, 0, 0, 0", "[]\n"], out.stdout


def test_run_names_a_missing_pipeline_as_missing(tmp_path):
    """It said 'is not valid TOML: [Errno 2] ...' for a file that is not there."""
    from edgekit.cli.run import _load
    from edgekit.errors import InputError

    with pytest.raises(InputError, match="cannot read pipeline .*No such file"):
        _load(tmp_path / "nothere.toml")
