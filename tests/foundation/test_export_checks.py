"""Issue 17, export: the parity check sees NaN/Inf, and negative tolerances are refused."""

from __future__ import annotations

import numpy as np
import pytest
from onnx import TensorProto, helper, numpy_helper

from edgekit.errors import InputError, ParityError
from edgekit.runtime.verify import assert_close, nonfinite_mismatch

torch = pytest.importorskip("torch")

from edgekit.exporting import _check_parity, export, parity  # noqa: E402


def _add_const(value: float):
    """ONNX ``y = x + c`` on [1, 4]."""
    c = numpy_helper.from_array(np.array([value], np.float32), "c")
    g = helper.make_graph([helper.make_node("Add", ["x", "c"], ["y"])], "add",
                          [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 4])],
                          [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 4])], [c])
    m = helper.make_model(g, opset_imports=[helper.make_opsetid("", 17)])
    m.ir_version = 8
    return m


class _AddConst(torch.nn.Module):
    def __init__(self, value: float):
        super().__init__()
        self.value = value

    def forward(self, x):
        return x + self.value


X = [np.arange(4, dtype=np.float32).reshape(1, 4)]


@pytest.mark.parametrize("onnx_value", [float("nan"), float("inf"), float("-inf")])
def test_parity_sees_nonfinite_onnx_output(onnx_value):
    max_abs, max_rel, _ = parity(_AddConst(0.0), _add_const(onnx_value), X)
    assert max_abs == float("inf") and max_rel == float("inf")
    with pytest.raises(ParityError, match="NaN/Inf"):
        _check_parity(_AddConst(0.0), _add_const(onnx_value), X, np.random.default_rng(0), [[1, 4]], False,
                      1e-4, 1e-3)


def test_parity_sees_nan_in_pytorch_only():
    with pytest.raises(ParityError):
        _check_parity(_AddConst(float("nan")), _add_const(0.0), X, np.random.default_rng(0), [[1, 4]], False,
                      1e-4, 1e-3)


def test_parity_agrees_when_both_sides_match_exactly():
    assert parity(_AddConst(float("inf")), _add_const(float("inf")), X)[:2] == (0.0, 0.0)
    assert parity(_AddConst(1.0), _add_const(1.0), X)[0] < 1e-6


def test_assert_close_sees_nan():
    ref = [np.ones((2, 3), np.float32)]
    bad = [ref[0].copy()]
    bad[0][1, 2] = np.nan
    with pytest.raises(ParityError, match="NaN/Inf at 1 positions"):
        assert_close(bad, ref)
    with pytest.raises(ParityError):
        assert_close(ref, bad)
    assert_close([bad[0].copy()], bad)  # the same NaN on both sides agrees
    assert nonfinite_mismatch(np.array([np.inf]), np.array([-np.inf]))[0] == 1


@pytest.mark.parametrize("kw", [{"atol": -1.0}, {"rtol": -0.5}, {"atol": float("nan")}])
def test_export_refuses_bad_tolerance(tmp_path, kw):
    out = tmp_path / "m.onnx"
    with pytest.raises(InputError, match="non-negative"):
        export("resnet18", out, **kw)
    assert not out.exists()


def test_cli_export_negative_atol_one_line_error(cli, tmp_path):
    out = tmp_path / "r.onnx"
    r = cli(["export", "resnet18", "-o", out, "--atol", "-1"])
    assert r.exit_code == 1
    assert "--atol must be a non-negative number" in r.output and "Traceback" not in r.output
    assert not out.exists() and not list(tmp_path.iterdir())
