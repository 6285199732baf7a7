"""The calibration rules: which published figures are used, which are not and why."""

from __future__ import annotations

import json
from collections import Counter

import numpy as np

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
