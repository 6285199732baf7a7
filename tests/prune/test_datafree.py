"""Data-free obspa without BatchNorm: image priors, their choice by the network, the reliability line."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper

from edgekit.prune import prune
from edgekit.prune.obspa import ObspaStats
from edgekit.prune.obspa import priors as P


def _classifier(rng, norm=None, c=12, size=12, classes=6):
    """conv -> relu -> conv -> relu -> global pool -> flatten -> gemm: a no-BN classifier, with an
    optional (mean, std) normalisation (Sub, Div) at the input."""
    nodes, inits, src = [], [], "x"
    if norm is not None:
        nodes += [helper.make_node("Sub", ["x", "mu"], ["xs"]), helper.make_node("Div", ["xs", "sd"], ["xn"])]
        inits += [numpy_helper.from_array(np.full((1, 1, 1, 1), norm[0], np.float32), "mu"),
                  numpy_helper.from_array(np.full((1, 1, 1, 1), norm[1], np.float32), "sd")]
        src = "xn"
    nodes += [helper.make_node("Conv", [src, "w1", "b1"], ["c1"], pads=[1, 1, 1, 1], name="conv1"),
              helper.make_node("Relu", ["c1"], ["r1"]),
              helper.make_node("Conv", ["r1", "w2", "b2"], ["c2"], pads=[1, 1, 1, 1], name="conv2"),
              helper.make_node("Relu", ["c2"], ["r2"]),
              helper.make_node("GlobalAveragePool", ["r2"], ["g"]),
              helper.make_node("Flatten", ["g"], ["f"]),
              helper.make_node("Gemm", ["f", "w3", "b3"], ["y"], transB=1, name="fc")]
    inits += [numpy_helper.from_array((rng.standard_normal((c, 1, 3, 3)) / 3).astype(np.float32), "w1"),
              numpy_helper.from_array((0.1 * rng.standard_normal(c)).astype(np.float32), "b1"),
              numpy_helper.from_array((rng.standard_normal((c, c, 3, 3)) / 10).astype(np.float32), "w2"),
              numpy_helper.from_array((0.1 * rng.standard_normal(c)).astype(np.float32), "b2"),
              numpy_helper.from_array((3 * rng.standard_normal((classes, c))).astype(np.float32), "w3"),
              numpy_helper.from_array(np.zeros(classes, np.float32), "b3")]
    x = helper.make_tensor_value_info("x", TensorProto.FLOAT, ["N", 1, size, size])
    y = helper.make_tensor_value_info("y", TensorProto.FLOAT, ["N", classes])
    g = helper.make_graph(nodes, "cls", [x], [y], inits)
    return helper.make_model(g, opset_imports=[helper.make_opsetid("", 17)], ir_version=8)


def test_input_normalisation_is_read_from_the_graph():
    rng = np.random.default_rng(0)
    mean, std = P.input_normalisation(_classifier(rng, norm=(0.3, 0.25)), "x", 1)
    assert np.allclose(mean, 0.3) and np.allclose(std, 0.25)
    assert P.input_normalisation(_classifier(rng), "x", 1) is None  # the input goes into a Conv first
    # raw -> normalised -> raw is the identity
    z = rng.standard_normal((4, 1, 3, 3)).astype(np.float32)
    back = (P.denormalise(z, (mean, std)) - 0.3) / 0.25
    assert np.allclose(back, z, atol=1e-5)


@pytest.mark.parametrize("kind", P.PRIORS)
def test_priors_are_standardised_image_sets(kind):
    x = P.prior_images(kind, np.random.default_rng(1), (6, 3, 16, 16))
    assert x.shape == (6, 3, 16, 16) and x.dtype == np.float32 and np.isfinite(x).all()
    assert abs(float(x.mean())) < 1e-3 and abs(float(x.std()) - 1) < 1e-3
    # images, not white noise: neighbouring pixels are correlated
    a, b = x[..., :, :-1].ravel(), x[..., :, 1:].ravel()
    assert np.corrcoef(a, b)[0, 1] > 0.3


def test_strokes_lie_on_a_flat_background():
    for kind, bg in (("strokes", np.min), ("strokes-dark", np.max)):
        x = P.prior_images(kind, np.random.default_rng(2), (8, 1, 24, 24))
        for img in x:
            assert np.mean(np.isclose(img, bg(img))) > 0.5  # most pixels are the background


def test_network_score_prefers_confident_diverse_outputs():
    rng = np.random.default_rng(3)
    labels = rng.integers(0, 10, 200)
    confident = np.eye(10)[labels] * 10 + rng.standard_normal((200, 10))
    one_class = np.tile(np.eye(10)[0] * 10, (200, 1)) + rng.standard_normal((200, 10))
    unsure = 0.01 * rng.standard_normal((200, 10))
    s = [P.network_score(z) for z in (confident, one_class, unsure)]
    assert s[0] > 0.8 and s[0] > 3 * s[1] and s[0] > 3 * s[2]
    assert P.network_score(rng.standard_normal((4, 10, 3))) == 0.0  # not class scores


def test_class_balanced_spans_the_classes_most_confident_first():
    rng = np.random.default_rng(4)
    z = rng.standard_normal((300, 5)) * 3
    idx = P.class_balanced(z, 10)
    assert len(set(idx.tolist())) == 10
    assert set(z[idx].argmax(1).tolist()) == set(range(5))
    first = idx[0]
    same = np.flatnonzero(z.argmax(1) == z[first].argmax())
    p = np.exp(z - z.max(1, keepdims=True))
    p /= p.sum(1, keepdims=True)
    assert p[first].max() >= p[same].max(1).max() - 1e-12


def test_choose_inputs_needs_class_scores():
    def run4d(x):
        return np.zeros((len(x), 3, 2, 2))
    assert P.choose_inputs(run4d, (1, 8, 8), 8, 4, None, 1, np.random.default_rng(0)) is None


def test_no_bn_classifier_gets_prior_inputs_in_the_graphs_input_range():
    model = _classifier(np.random.default_rng(5), norm=(0.3, 0.25))
    st = ObspaStats(model)
    assert st.chosen is not None and st.chosen.prior in P.PRIORS
    x = st.chosen.x
    assert x.shape[1:] == (1, 12, 12) and len(st.chosen.check) > 0
    z = (x - 0.3) / 0.25  # the graph's own normalisation undoes the mapping: standardised overall
    assert abs(float(z.mean())) < 0.5 and 0.5 < float(z.std()) < 1.5
    notes, _ = st.report_lines()
    assert any(st.chosen.prior in n and "normalisation at the graph input" in n for n in notes)


@pytest.mark.parametrize("crit", ["obspa", "obspa-seq"])
def test_reliability_line_without_data_and_none_with_calib(crit):
    model = _classifier(np.random.default_rng(6))
    _, rep = prune(model, ratio=0.5, criterion=crit)
    lines = [w for w in rep.warnings if "reliability" in w]
    assert len(lines) == 1 and "--calib" in lines[0] and "%" in lines[0]
    pct = int(lines[0].split("agrees with the original on ")[1].split("%")[0])
    assert 0 <= pct <= 100
    calib = np.random.default_rng(7).standard_normal((32, 1, 12, 12)).astype(np.float32)
    _, rep_c = prune(model, ratio=0.5, criterion=crit, calib=calib)
    assert not any("reliability" in w for w in rep_c.warnings + rep_c.notes)


def test_cli_prints_the_reliability_line(tmp_path):
    """As a person runs it, piped: JSON only on stdout with --json -, and the rich output."""
    src, out = tmp_path / "cls.onnx", tmp_path / "out.onnx"
    onnx.save(_classifier(np.random.default_rng(8)), str(src))
    env = {**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parents[2]), "COLUMNS": "200"}
    base = [sys.executable, "-m", "edgekit", "prune", str(src), "-o", str(out), "--ratio", "0.5",
            "--criterion", "obspa"]
    r = subprocess.run(base + ["--json", "-"], capture_output=True, text=True, env=env, timeout=120)
    assert r.returncode == 0, r.stderr
    d = json.loads(r.stdout)
    assert any("reliability" in w and "--calib" in w for w in d["warnings"])
    onnx.checker.check_model(onnx.load(str(out)))
    r2 = subprocess.run(base, capture_output=True, text=True, env=env, timeout=120)
    assert r2.returncode == 0 and "reliability" in r2.stdout + r2.stderr


def test_bn_mismatch_is_zero_on_the_running_statistics_and_grows_away_from_them():
    rng = np.random.default_rng(9)
    rm, rv = rng.standard_normal(4), rng.uniform(0.5, 2.0, 4)
    v = rng.standard_normal((400, 4, 6, 6))
    v = (v - v.mean((0, 2, 3), keepdims=True)) / v.std((0, 2, 3), keepdims=True)
    exact = v * np.sqrt(rv)[None, :, None, None] + rm[None, :, None, None]
    assert P.bn_mismatch([exact], [(rm, rv)]) < 1e-9
    shifted = P.bn_mismatch([exact + 1.0], [(rm, rv)])
    wider = P.bn_mismatch([exact * 3.0], [(rm, rv)])
    assert shifted > 0.1 and wider > 0.1
    assert P.bn_mismatch([exact + 2.0], [(rm, rv)]) > shifted
