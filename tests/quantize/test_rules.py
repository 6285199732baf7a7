"""The QDQ rule checker on hand-built graphs: the good graph passes, each bad graph breaks exactly its rule."""

from __future__ import annotations

import numpy as np
import onnx
import onnxruntime as ort
import pytest

from edgekit.quantize.rules import RULES, check_qdq, inspect_qdq

from qdq_graphs import make_float_model, make_model

BAD_RULES = ["compute-inputs", "activation-symmetric", "weight-per-channel", "bias-float", "qdq-placement",
             "residual-add", "concat-scales"]


def _errors(model):
    return [v for v in check_qdq(model) if v.severity == "error"]


def test_good_graph_is_valid_onnx_and_clean():
    m = make_model()
    onnx.checker.check_model(m)
    ort.InferenceSession(m.SerializeToString(), providers=["CPUExecutionProvider"]).run(
        None, {"x": np.zeros((1, 16, 8, 8), np.float32)})
    assert check_qdq(m) == []


@pytest.mark.parametrize("rule", BAD_RULES)
def test_each_bad_graph_breaks_its_rule(rule):
    m = make_model(bad=rule)
    onnx.checker.check_model(m)
    errs = _errors(m)
    assert errs, f"{rule}: checker found nothing"
    assert {v.rule for v in errs} == {rule}, [v.to_dict() for v in errs]


def test_opset_rule():
    m = make_model(opset=12)
    assert "opset" in {v.rule for v in _errors(m)}


def test_thin_conv_is_a_warning_not_an_error():
    m = make_model(thin=True)
    vs = check_qdq(m)
    assert [v.rule for v in vs] == ["thin-conv"] and vs[0].severity == "warning"
    assert inspect_qdq(m).ok


def test_float_model_reports_no_qdq():
    vs = check_qdq(make_float_model())
    assert [v.rule for v in vs] == ["no-qdq"]


def test_every_rule_is_tested():
    tested = set(BAD_RULES) | {"opset", "thin-conv", "no-qdq"}
    assert tested == set(RULES)


def test_custom_domain_op_is_reported_skipped():
    m = make_model()
    n = onnx.helper.make_node("Mystery", ["y"], ["z"], name="mystery", domain="com.example")
    m.graph.node.append(n)
    rep = inspect_qdq(m)
    assert [s["node"] for s in rep.skipped] == ["mystery"]
    assert rep.ok
