"""edgekit eval and the data checks behind it: scores agree with a direct computation, bad data is
one clear error, and the CLI works piped, with --json - and in a terminal."""

from __future__ import annotations

import json

import numpy as np
import pytest

from edgekit.errors import InputError, ShapeError
from edgekit.graph.io import load_model
from edgekit.optimize.data import LabelledData, check_data, load_data
from edgekit.optimize.evaluate import evaluate, predict, prepare, topk
from tests.optimize.helpers import edgekit
from tests.pty_harness import run_in_pty


def test_scores_match_a_direct_computation(digits_files):
    m = load_model(digits_files["model"])
    data = prepare(m, digits_files["test"])
    logits = predict(m, data)["logits"]
    rep = evaluate(m, data, reference=m)
    assert rep.top1 == pytest.approx(float(np.mean(logits.argmax(1) == data.labels)))
    assert rep.top1 <= rep.top5 <= 1.0
    assert rep.top1 > 0.9  # a trained model on real digits, not random weights
    assert rep.agreement == 1.0 and rep.sqnr_db["logits"] == float("inf")  # itself as the reference


def test_topk_property():
    rng = np.random.default_rng(0)
    logits = rng.standard_normal((200, 10))
    labels = rng.integers(0, 10, 200)
    accs = [topk(logits, labels, k) for k in (1, 3, 5, 10)]
    assert accs == sorted(accs) and accs[-1] == 1.0
    assert accs[0] == pytest.approx(float(np.mean(logits.argmax(1) == labels)))


def test_npz_named_arrays_and_labels(tmp_path, digits_files):
    m = load_model(digits_files["model"])
    with np.load(digits_files["test"]) as z:
        x, y = z["x"][:20], z["y"][:20]
    np.savez(tmp_path / "named.npz", images=x, labels=y)
    d = prepare(m, tmp_path / "named.npz")
    assert d.num_samples == 20 and np.array_equal(d.labels, y)
    onehot = np.eye(10, dtype=np.float32)[y]
    np.savez(tmp_path / "onehot.npz", x=x, y=onehot)
    assert np.array_equal(prepare(m, tmp_path / "onehot.npz").labels, y)


@pytest.mark.parametrize("bad, message", [
    (lambda x, y: dict(x=x[:, :, :8], y=y), "shape"),
    (lambda x, y: dict(x=x.astype(np.int32), y=y), "int32"),
    (lambda x, y: dict(x=x, y=y + 5), "outside the model's 10 outputs"),
    (lambda x, y: dict(x=x, y=y[:-1]), "labels"),
    (lambda x, y: dict(x=x, y=y + 0.5), "not class indices"),
])
def test_bad_data_is_one_clear_error(tmp_path, digits_files, bad, message):
    m = load_model(digits_files["model"])
    with np.load(digits_files["test"]) as z:
        x, y = z["x"][:30], z["y"][:30]
    np.savez(tmp_path / "bad.npz", **bad(x, y))
    with pytest.raises(ShapeError, match=message):
        prepare(m, tmp_path / "bad.npz")


def test_missing_and_unknown_sources(tmp_path):
    with pytest.raises(InputError, match="no such data"):
        load_data(tmp_path / "nope.npz", ["images"])
    (tmp_path / "a.txt").write_text("x")
    with pytest.raises(InputError, match="unsupported"):
        load_data(tmp_path / "a.txt", ["images"])
    np.savez(tmp_path / "z.npz", foo=np.zeros((2, 3)))
    with pytest.raises(InputError, match="no array for model input"):
        load_data(tmp_path / "z.npz", ["images"])


def test_image_folder_per_class(tmp_path, digits_files):
    Image = pytest.importorskip("PIL.Image")
    rng = np.random.default_rng(0)
    for cls in ("cat", "dog"):
        (tmp_path / "imgs" / cls).mkdir(parents=True)
        for i in range(3):
            Image.fromarray(rng.integers(0, 255, (20, 20), dtype=np.uint8)).save(tmp_path / "imgs" / cls / f"{i}.png")
    m = load_model(digits_files["model"])
    d = prepare(m, tmp_path / "imgs")
    assert d.classes == ["cat", "dog"] and list(d.labels) == [0, 0, 0, 1, 1, 1]
    assert d.arrays["images"].shape == (6, 1, 16, 16) and d.arrays["images"].dtype == np.float32


def test_label_count_checked_against_samples():
    d = LabelledData({"images": np.zeros((4, 1, 16, 16), np.float32)}, np.array([0, 1, 2]), "mem")

    class Spec:
        name, dtype, shape = "images", "float32", ("batch", 1, 16, 16)

    with pytest.raises(ShapeError, match="4 samples but 3 labels"):
        check_data(d, [Spec()], 10)


def test_cli_json_piped(digits_files):
    r = edgekit(["eval", digits_files["model"], "--data", digits_files["test"], "--reference", digits_files["model"],
                 "--json", "-"])
    assert r.returncode == 0, r.stderr
    d = json.loads(r.stdout)
    assert d["samples"] == 450 and 0.9 < d["top1"] <= d["top5"] and d["agreement"] == 1.0


def test_cli_bad_data_exit_1_no_traceback(tmp_path, digits_files):
    np.savez(tmp_path / "bad.npz", x=np.zeros((4, 1, 8, 8), np.float32), y=np.zeros(4, np.int64))
    r = edgekit(["eval", digits_files["model"], "--data", tmp_path / "bad.npz"])
    assert r.returncode == 1
    assert "error:" in r.stderr and "Traceback" not in r.stderr and "shape" in r.stderr


def test_cli_in_a_terminal(digits_files):
    r = run_in_pty(["eval", digits_files["model"], "--data", digits_files["unlabelled"], "--reference",
                    digits_files["model"]], columns=80)
    assert r.returncode == 0, r.describe()
    text = " ".join(r.plain.split())  # rich folds long lines at 80 columns
    assert "top-1 agreement 100.00%" in " ".join(text.replace("│", " ").split()) and "top-5" not in text
    assert "Traceback" not in text
