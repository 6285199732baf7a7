"""The calibration rules: which published figures are used, which are not and why."""

from __future__ import annotations

import json
from collections import Counter

import numpy as np
import pytest

from edgekit.devices import get_profile
from edgekit.estimate import calibrate
from edgekit.estimate.costmodel import Params
from edgekit.models.figures import FIGURE_MODELS


def test_rows_are_used_or_excluded_by_class_with_a_reason():
    figs, excluded = calibrate.load_figures()
    total = sum(1 for line in calibrate.FIGURES.read_text().splitlines() if line.strip())
    assert len(figs) + sum(excluded.values()) == total
    assert all(reason for reason in excluded)
    for f in figs:
        assert get_profile(f.device).name == f.device and f.model in FIGURE_MODELS
        assert f.latency_ms > 0 and f.batch in (1, 8) and f.precision in ("fp16", "int8")
    rows = [json.loads(line) for line in calibrate.FIGURES.read_text().splitlines() if line.strip()]
    used = {f.id for f in figs}
    for r in rows:
        if r["metric"] == "throughput" and r["source_id"] == "mlperf_inference":
            assert r["id"] not in used              # Offline = GPU + DLA aggregate
        if r["source_id"] == "nvidia_jetson_benchmarks":
            assert r["id"] not in used
    # one MLPerf run counted once: no p90 beside its mean
    assert not any(r["id"] in used and r["metric"] == "latency_p90" for r in rows)


def test_group_weights_count_architectures_not_rows():
    figs, _ = calibrate.load_figures()
    fcn = [f for f in figs if f.model == "FCN-ResNet18"]
    assert len({f.input_shape for f in fcn}) > 5          # segNet resolutions kept apart
    ds = calibrate.Dataset(figs, None, None, [], np.zeros(len(figs), int), np.zeros(len(figs)), np.zeros(len(figs)))
    w = calibrate._weights(ds, np.arange(len(figs)))
    groups = Counter((f.group, f.device, f.source) for f in figs)
    for key, n in groups.items():
        sel = [i for i, f in enumerate(figs) if (f.group, f.device, f.source) == key]
        assert abs(float(np.sum(w[sel] ** 2)) - 1.0) < 1e-9, (key, n)


def test_shipped_bands_cover_every_used_figure_once():
    figs, _ = calibrate.load_figures()
    p = Params.load()
    keys = Counter(f"{f.device}/{f.precision}" for f in figs)
    for key, n in keys.items():
        assert p.bands[key]["n"] == n
    assert p.bands["all/all"]["n"] == len(figs)


@pytest.mark.slow
def test_lomo_end_to_end_on_the_small_models(tmp_path):
    """Export (random weights, stripped), fuse, fit, hold each architecture out: the held-out
    FP16 figures of six small CNNs land within the shipped FP16 band's spirit (median <= 2x it)."""
    cheap = {"ResNet18", "ResNet34", "MobileNetV3-small", "MobileNetV3-large", "MixNet-s", "MixNet-m"}
    figs = [f for f in calibrate.load_figures()[0] if f.model in cheap]
    ds = calibrate.build_dataset(figs, cache=tmp_path)
    stored = list((tmp_path / "estimate" / "models").glob("*.onnx"))
    assert len(stored) == len(cheap) and all(p.stat().st_size < 2_000_000 for p in stored)  # weights stripped
    errors = calibrate.lomo(ds)["model"]
    band = Params.load().bands["all/fp16"]
    assert np.median(np.abs(errors)) * 100 <= 2 * band["median_abs_pct"]
    fitted = calibrate.predict(ds, calibrate.fit(ds)) / np.array([f.latency_ms for f in figs]) - 1
    assert np.median(np.abs(fitted)) <= 1.2 * np.median(np.abs(errors)) + 0.01   # held out is the harder test
