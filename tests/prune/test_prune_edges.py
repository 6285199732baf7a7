"""Settings and models the pruner must refuse or report instead of a silent no-op (issue 17,
defect 13): ``--round-to`` / ``--min-channels`` beyond every group, errors that name the CLI
flags, a prune that removes nothing, a node input that nothing provides."""

from __future__ import annotations

import hashlib

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper

from edgekit.errors import InputError
from edgekit.prune import prune
from edgekit.runtime.verify import check


def _net(*widths: int):
    """x[1,3,8,8] -> (Conv(c) -> Relu) per width -> Conv(4) -> y: one prunable group per width
    (16 channels when none is given)."""
    widths = widths or (16,)
    rng = np.random.default_rng(0)
    inits, nodes, cur, c_in = [], [], "x", 3
    for i, c in enumerate(widths):
        inits += [numpy_helper.from_array(rng.standard_normal((c, c_in, 3, 3)).astype(np.float32), f"w{i}"),
                  numpy_helper.from_array(rng.standard_normal(c).astype(np.float32), f"b{i}")]
        nodes += [helper.make_node("Conv", [cur, f"w{i}", f"b{i}"], [f"h{i}"], name=f"conv{i}", pads=[1, 1, 1, 1]),
                  helper.make_node("Relu", [f"h{i}"], [f"r{i}"], name=f"relu{i}")]
        cur, c_in = f"r{i}", c
    inits.append(numpy_helper.from_array(rng.standard_normal((4, c_in, 1, 1)).astype(np.float32), "wout"))
    nodes.append(helper.make_node("Conv", [cur, "wout"], ["y"], name="conv_out"))
    g = helper.make_graph(nodes, "net", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 3, 8, 8])],
                          [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 4, 8, 8])], inits)
    return helper.make_model(g, opset_imports=[helper.make_opsetid("", 17)])


@pytest.mark.parametrize("kwargs, flag", [
    (dict(ratio=0.3, round_to=10**9), "--round-to"),
    (dict(ratio=0.3, min_channels=10**9), "--min-channels"),
    (dict(ratio=0.3, min_channels=16), "--min-channels"),
    (dict(ratio=0.3, round_to=0), "--round-to"),
    (dict(ratio=0.3, round_to=1e9), "--round-to"),
    (dict(ratio=0.3, min_channels=2.5), "--min-channels"),
    (dict(ratio=1.5), "--ratio"),
    (dict(ratio=float("nan")), "--ratio"),
    (dict(flops_target=0.0), "--flops-target"),
    (dict(params_target=2.0), "--params-target"),
    (dict(), "--ratio, --flops-target, --params-target"),
    (dict(ratio=0.3, flops_target=0.5), "--ratio, --flops-target, --params-target"),
])
def test_bad_settings_refused_naming_the_flag(kwargs, flag):
    with pytest.raises(InputError) as err:
        prune(_net(), **kwargs)
    msg = str(err.value)
    assert flag in msg and "\n" not in msg
    assert not any(py in msg for py in ("round_to", "min_channels", "flops_target", "params_target"))


def test_round_to_within_the_largest_group_is_accepted():
    pruned, report = prune(_net(16), ratio=0.5, round_to=16)
    assert report.params_after == report.params_before  # 8 kept, rounded up to 16
    assert any("nothing was removed" in w and "--round-to 16" in w for w in report.warnings)
    pruned, report = prune(_net(16), ratio=0.5, round_to=8)
    assert report.params_after < report.params_before and not report.warnings


def test_nothing_removed_is_a_warning():
    # 16 channels, ratio 0.1: 15 kept, rounded up to 16 by --round-to 8
    _, report = prune(_net(16), ratio=0.1, round_to=8)
    assert report.params_after == report.params_before
    assert any("nothing was removed" in w and "--round-to 8" in w for w in report.warnings)
    # the ratio alone too small for the group: 16 * 0.05 < 1 channel
    _, report = prune(_net(16), ratio=0.05)
    assert any("nothing was removed" in w and "ratio is too small" in w for w in report.warnings)
    # --ratio 0 asks for no change: no warning
    _, report = prune(_net(16), ratio=0.0)
    assert not report.warnings


def test_groups_smaller_than_round_to_are_noted():
    _, report = prune(_net(16, 16), ratio=0.5, round_to=8)
    assert not any("--round-to" in n for n in report.notes)
    _, report = prune(_net(16, 6), ratio=0.5, round_to=8)
    assert [g["channels_after"] for g in report.groups] == [8, 3]  # the 6-channel group: unrounded
    assert any("--round-to 8: 1 group(s)" in n for n in report.notes)


def _missing_initializer():
    m = _net()
    del m.graph.initializer[1]  # b0: conv0 still reads it
    return m


def test_missing_initializer_refused():
    m = _missing_initializer()
    with pytest.raises(onnx.checker.ValidationError):
        onnx.checker.check_model(m, full_check=True)  # the model itself is broken
    with pytest.raises(InputError, match="'b0'.*no node, initializer or graph input") as err:
        prune(m, ratio=0.5)
    assert "\n" not in str(err.value)


def test_missing_initializer_cli(cli, tmp_path):
    src, out = tmp_path / "m.onnx", tmp_path / "out.onnx"
    onnx.save(_missing_initializer(), str(src))
    before = hashlib.sha256(src.read_bytes()).hexdigest()
    r = cli(["prune", src, "-o", out, "--ratio", "0.5"])
    assert r.exit_code == 1, r.output
    assert "Traceback" not in r.output and "'b0'" in r.output
    assert not out.exists()
    assert hashlib.sha256(src.read_bytes()).hexdigest() == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["m.onnx"]


def test_round_to_cli_names_the_flag(cli, tmp_path):
    src, out = tmp_path / "m.onnx", tmp_path / "out.onnx"
    onnx.save(_net(), str(src))
    r = cli(["prune", src, "-o", out, "--ratio", "0.3", "--round-to", "1000000000"])
    assert r.exit_code == 1 and "--round-to 1000000000" in r.output and "Traceback" not in r.output
    assert not out.exists()


def test_valid_settings_still_prune():
    pruned, report = prune(_net(16), ratio=0.5, min_channels=4)
    assert report.params_after < report.params_before and not report.warnings
    check(pruned)
