"""N:M masks follow TensorRT's layout; the checker tells it apart from a flattened-CRS mask."""

from __future__ import annotations

import numpy as np
import pytest

from edgekit.errors import InputError
from edgekit.sparsity import nm_mask, nm_violations

torch = pytest.importorskip("torch")
nn = torch.nn


def _crs_flat_mask(w: np.ndarray, n: int = 2, m: int = 4) -> np.ndarray:
    """The common mistake: groups of m along the flattened C*R*S axis of each filter."""
    k = w.shape[0]
    flat = np.abs(w.reshape(k, -1, m))
    order = np.argsort(-flat, axis=-1, kind="stable")
    keep = np.zeros_like(flat, dtype=bool)
    np.put_along_axis(keep, order[..., :n], True, axis=-1)
    return keep.reshape(w.shape)


def test_conv_mask_groups_run_over_input_channels_at_each_tap():
    rng = np.random.default_rng(0)
    w = rng.normal(size=(6, 8, 3, 3)).astype(np.float32)
    keep = nm_mask(w, 2, 4, axis=1)
    assert keep.shape == w.shape
    for k in range(6):
        for r in range(3):
            for s in range(3):
                for j in range(0, 8, 4):
                    grp = np.abs(w[k, j:j + 4, r, s])
                    kept = keep[k, j:j + 4, r, s]
                    assert kept.sum() == 2
                    # the two kept are the two largest magnitudes of that run of 4 channels
                    assert set(np.flatnonzero(kept)) == set(np.argsort(-grp, kind="stable")[:2])


def test_flattened_crs_mask_is_detected_as_not_compliant():
    rng = np.random.default_rng(1)
    w = rng.normal(size=(8, 8, 3, 3)).astype(np.float32)
    bad = w * _crs_flat_mask(w)
    assert (bad == 0).mean() == pytest.approx(0.5)        # same density as a real 2:4 mask ...
    groups, violations = nm_violations(bad != 0, 2, 4, axis=1)
    assert groups == 8 * 2 * 3 * 3
    assert violations > 0                                   # ... but not TensorRT's pattern
    good = w * nm_mask(w, 2, 4, axis=1)
    assert nm_violations(good != 0, 2, 4, axis=1)[1] == 0


def test_torch_checker_flags_crs_mask_and_accepts_nm_mask():
    from edgekit.sparsity import apply_nm, check_nm

    torch.manual_seed(0)
    model = nn.Sequential(nn.Conv2d(8, 8, 3), nn.ReLU(), nn.Flatten(), nn.Linear(8 * 4 * 4, 12))
    with torch.no_grad():
        w = model[0].weight.numpy()
        model[0].weight.copy_(torch.from_numpy(w * _crs_flat_mask(w)))
    rep = check_nm(model)
    assert rep.layer("0").status == "violates" and rep.layer("0").bad_groups > 0
    assert not rep.compliant
    masks, report = apply_nm(model)
    assert {layer.name for layer in report.ok} == {"0", "3"}
    rep = check_nm(model)
    assert rep.compliant and rep.layer("0").bad_groups == 0
    # Linear: groups along in_features (axis 1 of [out, in])
    lw = model[3].weight.detach().numpy()
    assert ((lw.reshape(12, -1, 4) != 0).sum(-1) <= 2).all()
    assert (lw == 0).mean() == pytest.approx(0.5)


def test_layers_where_nm_does_not_apply_are_reported_skipped_and_untouched():
    from edgekit.sparsity import apply_nm

    torch.manual_seed(0)
    model = nn.Sequential(
        nn.Conv2d(3, 8, 3),                        # C=3 not a multiple of 4
        nn.Conv2d(8, 8, 3, groups=8),              # depthwise
        nn.Conv2d(8, 16, 1, groups=2),             # grouped
        nn.Conv2d(8, 8, 1),                        # fine
        nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(8, 6),
    )
    before = {k: v.clone() for k, v in model.state_dict().items()}
    _, report = apply_nm(model)
    status = {layer.name: (layer.status, layer.reason) for layer in report.layers}
    assert status["0"][0] == "skipped" and "C=3" in status["0"][1]
    assert status["1"][0] == "skipped" and "depthwise" in status["1"][1]
    assert status["2"][0] == "skipped" and "grouped" in status["2"][1]
    assert status["3"][0] == "ok" and status["6"][0] == "ok"
    after = model.state_dict()
    for name in ("0", "1", "2"):
        assert torch.equal(before[f"{name}.weight"], after[f"{name}.weight"])
    assert not torch.equal(before["3.weight"], after["3.weight"])


def test_nm_mask_rejects_bad_axis_and_bad_pattern():
    with pytest.raises(InputError):
        nm_mask(np.ones((4, 6, 1, 1)), 2, 4, axis=1)
    with pytest.raises(InputError):
        nm_mask(np.ones((4, 8)), 5, 4, axis=1)


def test_other_nm_patterns_keep_n_of_m():
    rng = np.random.default_rng(2)
    w = rng.normal(size=(5, 16)).astype(np.float32)
    keep = nm_mask(w, 1, 8, axis=1)
    assert (keep.reshape(5, 2, 8).sum(-1) == 1).all()
