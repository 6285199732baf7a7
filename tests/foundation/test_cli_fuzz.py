"""Hypothesis fuzz of `prune` and `quantize` options, run in-process with typer's CliRunner.

Whatever the options: exit 0 with a valid output, or exit 1/2 with a short error; never an
unhandled exception or a traceback; the inputs are byte-identical afterwards; the working folder
holds only the inputs plus, on success, the requested output (and its .calib for quantize).
"""

from __future__ import annotations

import hashlib
import tempfile
from pathlib import Path
from typing import Dict, List, Optional

import numpy as np
import onnx
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from onnx import TensorProto, helper, numpy_helper
from typer.testing import CliRunner

FUZZ = settings(max_examples=25, deadline=None, derandomize=True, suppress_health_check=[HealthCheck.too_slow], database=None)


def model_32() -> onnx.ModelProto:
    """Conv(3->32)+Relu+Conv(32->32)+Relu+GAP+Flatten+Gemm(32->5), dynamic batch: prunable and
    wide enough to quantize."""
    rng = np.random.default_rng(0)

    def init(name, *shape):
        return numpy_helper.from_array(rng.standard_normal(shape).astype(np.float32), name)

    inits = [init("w1", 32, 3, 3, 3), init("b1", 32), init("w2", 32, 32, 3, 3), init("b2", 32),
             init("fw", 5, 32), init("fb", 5)]
    nodes = [helper.make_node("Conv", ["x", "w1", "b1"], ["c1"], pads=[1, 1, 1, 1]),
             helper.make_node("Relu", ["c1"], ["r1"]),
             helper.make_node("Conv", ["r1", "w2", "b2"], ["c2"], pads=[1, 1, 1, 1]),
             helper.make_node("Relu", ["c2"], ["r2"]),
             helper.make_node("GlobalAveragePool", ["r2"], ["g"]),
             helper.make_node("Flatten", ["g"], ["f"]),
             helper.make_node("Gemm", ["f", "fw", "fb"], ["y"], transB=1)]
    graph = helper.make_graph(nodes, "fuzz32", [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["N", 3, 8, 8])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["N", 5])], inits)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    onnx.checker.check_model(model)
    return model


MODEL_BYTES = model_32().SerializeToString()


def digests(folder: Path) -> Dict[str, str]:
    """sha256 of every file under ``folder`` (relative path -> hex)."""
    return {str(p.relative_to(folder)): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(folder.rglob("*")) if p.is_file()}


def invoke(args: List[str]):
    from edgekit.cli.main import app

    return CliRunner().invoke(app, args, env={"EDGEKIT_DEBUG": "0", "COLUMNS": "120", "NO_COLOR": "1"})


def check_run(work: Path, args: List[str], inputs: Dict[str, str], outputs: List[Path]) -> int:
    """Run edgekit ARGS; assert the fuzz properties; return the exit code."""
    res = invoke(args)
    shown = res.output
    assert res.exception is None or isinstance(res.exception, SystemExit), (args, repr(res.exception), shown)
    assert "Traceback" not in shown, (args, shown)
    assert res.exit_code in (0, 1, 2), (args, res.exit_code, shown)
    after = digests(work)
    for name, digest in inputs.items():
        assert after.get(name) == digest, (args, f"input {name} changed", shown)
    produced = set(after) - set(inputs)
    if res.exit_code == 0:
        main = outputs[0]
        assert main.is_file(), (args, shown)
        onnx.checker.check_model(str(main))
        allowed = {str(p.relative_to(work)) for p in outputs}
        assert produced <= allowed, (args, produced - allowed, shown)
    else:
        errors = [ln for ln in shown.splitlines() if ln.strip()]
        assert len(shown) < 2000 and len(errors) <= 30, (args, shown)
        assert produced == set(), (args, f"left behind after a failure: {produced}", shown)
        if res.exit_code == 1:
            assert any(ln.startswith("error:") for ln in errors), (args, shown)
    return res.exit_code


# Option values as typed on a command line: plausible, edge and nonsense.
# (one_of picks a branch uniformly: the plausible branch is repeated so most runs do real work)
PLAUSIBLE = st.floats(0.05, 0.9).map(lambda v: f"{v:.3g}")
NUMBER = st.one_of(PLAUSIBLE, PLAUSIBLE, st.floats(-0.5, 1.5, allow_nan=False).map(lambda v: f"{v:.3g}"),
                   st.sampled_from(["0", "1", "0.999999", "-0", "1e9", "nan", "inf", "-inf", "abc", "", "0.5x"]))
SMALL = st.integers(1, 40).map(str)
COUNT = st.one_of(SMALL, SMALL, st.integers(-3, 70).map(str), st.sampled_from(["1e9", "0", "x", "2.5", "999999999999"]))
NAME = st.text(st.sampled_from("aZ09 _-.üé'\"$#%&()[]{};,=+@!~"), min_size=1, max_size=12)
SUFFIX = st.sampled_from([".onnx", ".onnx", "", ".ONNX", ".data", ".calib"])
FOLDER = st.sampled_from(["", "", "", "", "missing/", "missing/deeper/", "in.onnx/"])


def out_path(work: Path, folder: str, name: str, suffix: str) -> Path:
    name = name.strip("/") or "o"
    if name in (".", ".."):
        name = "o"
    return work / folder / (name + suffix)


ONE_GOAL = st.tuples(st.sampled_from(["--ratio", "--flops-target"]), NUMBER).map(list)
# mostly one pruning goal; sometimes none or two (both refused with one line)
GOALS = st.one_of(ONE_GOAL, ONE_GOAL, ONE_GOAL, st.just([]),
                  st.tuples(ONE_GOAL, ONE_GOAL).map(lambda t: t[0] + t[1]))


@FUZZ
@given(goals=GOALS, round_to=st.one_of(st.none(), COUNT), min_channels=st.one_of(st.none(), COUNT),
       folder=FOLDER, name=NAME, suffix=SUFFIX, same_as_input=st.sampled_from([False] * 6 + [True]))
def test_prune_options_fuzz(goals: List[str], round_to: Optional[str],
                            min_channels: Optional[str], folder: str, name: str, suffix: str,
                            same_as_input: bool):
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        src = work / "in.onnx"
        src.write_bytes(MODEL_BYTES)
        out = src if same_as_input else out_path(work, folder, name, suffix)
        args = ["prune", str(src), "-o", str(out), *goals]
        for flag, value in (("--round-to", round_to),
                            ("--min-channels", min_channels)):
            if value is not None:
                args += [flag, value]
        code = check_run(work, args, digests(work), [out])
        if same_as_input:
            assert code != 0


CALIBS = ["synthetic", "good.npy", "wrong_shape.npy", "named.npz", "missing.npy", "empty_dir", "notes.txt"]


def make_calibs(work: Path) -> None:
    rng = np.random.default_rng(1)
    np.save(work / "good.npy", rng.standard_normal((12, 3, 8, 8)).astype(np.float32))
    np.save(work / "wrong_shape.npy", rng.standard_normal((12, 5, 7)).astype(np.float32))
    np.savez(work / "named.npz", not_an_input=rng.standard_normal((12, 3, 8, 8)).astype(np.float32))
    (work / "empty_dir").mkdir()
    (work / "notes.txt").write_text("not calibration data\n")


@FUZZ
@given(samples=st.one_of(st.none(), COUNT), calib=st.sampled_from(["synthetic", "good.npy"] * 2 + CALIBS),
       target=st.sampled_from(["tensorrt", "tensorrt", "cpu"]), method=st.sampled_from([None, "minmax", "entropy"]),
       folder=FOLDER, name=NAME, suffix=SUFFIX)
def test_quantize_options_fuzz(samples: Optional[str], calib: str, target: str, method: Optional[str],
                               folder: str, name: str, suffix: str):
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        src = work / "in.onnx"
        src.write_bytes(MODEL_BYTES)
        make_calibs(work)
        out = out_path(work, folder, name, suffix)
        args = ["quantize", str(src), "-o", str(out), "--calib", calib if calib == "synthetic" else str(work / calib),
                "--target", target]
        if samples is not None:
            args += ["--samples", samples]
        if method is not None:
            args += ["--method", method]
        side = out.with_name(out.stem + ".calib") if out.suffix else out.with_name(out.name + ".calib")
        check_run(work, args, digests(work), [out, side])


def test_quantize_huge_samples_synthetic_is_one_line_error():
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        src = work / "in.onnx"
        src.write_bytes(MODEL_BYTES)
        out = work / "q.onnx"
        check_run(work, ["quantize", str(src), "-o", str(out), "--calib", "synthetic", "--samples", "999999999999"],
                  digests(work), [out, work / "q.calib"])
