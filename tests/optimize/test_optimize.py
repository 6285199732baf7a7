"""edgekit optimize on CPU: the pick meets the budget and is the most accurate that does, the INT8
gate holds, the recipe replays the same model, a rerun resumes the journal (also after Ctrl-C),
an unreachable budget exits 3 with the best candidate written, bad data fails before the search."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time

import numpy as np
import pytest

from edgekit.graph.io import load_model
from edgekit.optimize.evaluate import evaluate, prepare
from edgekit.optimize.search import JOURNAL, OptimizeSettings, optimize
from tests.optimize.helpers import FAST, REPO, edgekit


def _search(files, out, *extra):
    return edgekit(["optimize", files["model"], "--data", files["test"], "--calib", files["calib"], "-o", out,
                    *FAST, *extra])


@pytest.fixture(scope="module")
def searched(digits_files, tmp_path_factory):
    out = tmp_path_factory.mktemp("opt")
    r = _search(digits_files, out, "--speedup", "1.3", "--trials", "3", "--json", "-")
    return r, out


def test_pick_meets_budget_and_is_most_accurate(searched):
    r, out = searched
    assert r.returncode in (0, 3), r.stderr
    d = json.loads(r.stdout)
    report = json.loads((out / "report.json").read_text())
    assert report["status"] == d["status"] and report["pick"] == d["pick"]
    assert {"model.onnx", "recipe.json", "report.json", "pareto.png", JOURNAL} <= {p.name for p in out.iterdir()}
    assert d["baseline"]["accuracy"] > 0.9
    ok = [c for c in d["candidates"] + [d["baseline"]] if c["status"] == "ok"]
    assert all(c["latency"]["kind"] == "measured" and c["latency"]["median_ms"] > 0 for c in ok)
    within = [c for c in ok if c["latency"]["median_ms"] <= d["budget_ms"]]
    if d["status"] == "met":
        assert d["pick"]["latency"]["median_ms"] <= d["budget_ms"]
        assert d["pick"]["accuracy"] == max(c["accuracy"] for c in within)
        assert 100 * (d["baseline"]["accuracy"] - d["pick"]["accuracy"]) <= 1.0 + 1e-9
    else:
        assert not within or d["status"] == "over-drop"


def test_int8_gate(searched):
    """An INT8 candidate stays eligible only when faster than the float one of the same pruning."""
    d = json.loads(searched[0].stdout)
    by_trial = {}
    for c in d["candidates"]:
        by_trial.setdefault(c["trial"], {})[c["recipe"]["precision"]] = c
    pairs = [v for v in by_trial.values() if "fp32" in v and "int8" in v]
    assert pairs
    for v in pairs:
        faster = v["int8"]["latency"]["median_ms"] < v["fp32"]["latency"]["median_ms"]
        assert (v["int8"]["status"] == "ok") == faster
        assert (v["int8"]["status"] == "gated") == (not faster)


def test_recipe_replays_the_pick(searched, digits_files, tmp_path):
    d = json.loads(searched[0].stdout)
    _, out = searched
    r = edgekit(["optimize", digits_files["model"], "--recipe", out / "recipe.json", "-o", tmp_path / "replay",
                 "--json", "-"])
    assert r.returncode == 0, r.stderr
    m = load_model(digits_files["model"])
    data = prepare(m, digits_files["test"])
    replayed = evaluate(load_model(tmp_path / "replay" / "model.onnx"), data).top1
    chosen = evaluate(load_model(out / "model.onnx"), data).top1
    assert replayed == chosen == pytest.approx(d["pick"]["accuracy"])


def test_rerun_resumes_the_journal(searched, digits_files):
    r0, out = searched
    before = json.loads(r0.stdout)
    r = _search(digits_files, out, "--speedup", "1.3", "--trials", "4", "--no-plot", "--json", "-")
    assert r.returncode in (0, 3), r.stderr
    d = json.loads(r.stdout)
    assert d["resumed_trials"] == 3 and d["study"] == before["study"]
    old = {(c["trial"], c["recipe"]["precision"]) for c in before["candidates"]}
    assert old <= {(c["trial"], c["recipe"]["precision"]) for c in d["candidates"]}
    assert d["baseline"] == before["baseline"]  # the budget hangs on the journal's baseline, not a new timing


def test_unreachable_budget_exits_3_with_best_candidate(digits_files, tmp_path):
    r = _search(digits_files, tmp_path, "--latency-ms", "0.0001", "--trials", "1", "--no-plot")
    assert r.returncode == 3, r.stderr
    assert "OVER-BUDGET" in r.stderr and "Traceback" not in r.stderr
    report = json.loads((tmp_path / "report.json").read_text())
    assert report["status"] == "over-budget" and report["pick"] is not None and "x the budget" in report["advice"]
    fastest = min(c["latency"]["median_ms"] for c in report["candidates"] + [report["baseline"]] if c["status"] == "ok")
    assert report["pick"]["latency"]["median_ms"] == fastest
    assert json.loads((tmp_path / "recipe.json").read_text())["status"] == "over-budget"
    assert (tmp_path / "model.onnx").is_file()


@pytest.mark.parametrize("labels, message", [("big", "outside the model"), ("short", "labels")])
def test_bad_labels_fail_before_the_search(digits_files, tmp_path, labels, message):
    with np.load(digits_files["test"]) as z:
        x, y = z["x"][:40], z["y"][:40]
    y = y + 10 if labels == "big" else y[:-3]
    np.savez(tmp_path / "bad.npz", x=x, y=y)
    out = tmp_path / "out"
    r = edgekit(["optimize", digits_files["model"], "--data", tmp_path / "bad.npz", "--speedup", "2", "-o", out])
    assert r.returncode == 1 and message in r.stderr and "Traceback" not in r.stderr
    assert not (out / JOURNAL).exists()  # nothing searched, nothing written


def test_bad_shape_fails_before_the_search(digits_files, tmp_path):
    np.savez(tmp_path / "bad.npz", x=np.zeros((8, 3, 16, 16), np.float32), y=np.zeros(8, np.int64))
    r = edgekit(["optimize", digits_files["model"], "--data", tmp_path / "bad.npz", "--speedup", "2",
                 "-o", tmp_path / "out"])
    assert r.returncode == 1 and "shape" in r.stderr and not (tmp_path / "out" / JOURNAL).exists()


def test_interrupt_leaves_a_resumable_journal(digits_files, tmp_path):
    """Ctrl-C after the first trial: no model written, the finished trial kept, a rerun resumes it."""
    m = load_model(digits_files["model"])
    data = prepare(m, digits_files["test"])
    calib = prepare(m, digits_files["calib"]).calibration(128)
    settings = OptimizeSettings(speedup=1.3, trials=2, batch=16, duration_s=0.1, levels=(0.5,), calib_samples=128)

    def ctrl_c(**kw):
        if kw.get("advance"):
            raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        optimize(m, settings, data, calib, tmp_path, progress=ctrl_c)
    assert (tmp_path / JOURNAL).stat().st_size > 0 and not (tmp_path / "model.onnx").exists()
    res = optimize(m, settings, data, calib, tmp_path)
    assert res.resumed_trials == 1 and res.pick is not None


def test_sigint_in_a_running_cli(digits_files, tmp_path):
    env = dict(os.environ, EDGEKIT_DEBUG="0", OMP_NUM_THREADS="1", PYTHONPATH=str(REPO))
    args = [sys.executable, "-m", "edgekit", "optimize", digits_files["model"], "--data", digits_files["test"],
            "--calib", digits_files["calib"], "--speedup", "1.3", "--trials", "30", "-o", tmp_path, *FAST]
    proc = subprocess.Popen(list(map(str, args)), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env)
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline and b'"state":1' not in _read(tmp_path / JOURNAL):
        time.sleep(0.2)  # wait for a finished trial in the journal
    proc.send_signal(signal.SIGINT)
    _, err = proc.communicate(timeout=60)
    assert proc.returncode == 130, err
    assert "rerun the same command to resume" in err and "Traceback" not in err
    assert not (tmp_path / "model.onnx").exists() and not list(tmp_path.glob("*.tmp"))


def _read(path):
    try:
        return path.read_bytes()
    except OSError:
        return b""
