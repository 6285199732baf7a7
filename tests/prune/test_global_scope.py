"""Global scope: magnitude scores are normalised per group; comparable scores (obspa) are not."""

from types import SimpleNamespace

import numpy as np

from edgekit.prune.selection import decide as _decide


def _groups():
    return [SimpleNamespace(id=0, size=10, segments=[]), SimpleNamespace(id=1, size=10, segments=[])]


def test_global_normalised_scores_prune_both_groups_alike():
    scores = {0: np.arange(1, 11, dtype=float), 1: np.arange(1, 11, dtype=float) * 100}
    keeps = _decide(_groups(), scores, 0.3, "global", 1, 1, normalize=True)
    # same shape of scores in both groups: after per-group normalisation both lose the same count
    assert keeps[0].sum() == keeps[1].sum() == 7
    assert not keeps[0][:3].any() and keeps[0][3:].all()


def test_global_comparable_scores_take_from_the_cheap_group_first():
    scores = {0: np.arange(1, 11, dtype=float), 1: np.arange(1, 11, dtype=float) * 100}
    keeps = _decide(_groups(), scores, 0.3, "global", 1, 1, normalize=False)
    # 6 of 20 channels go, all from group 0 whose errors are 100x smaller
    assert keeps[1].all()
    assert keeps[0].sum() == 4
    # the per-group floor (keep >= 10 %) still holds when the threshold would empty group 0
    keeps = _decide(_groups(), scores, 0.5, "global", 1, 1, normalize=False)
    assert keeps[0].sum() == 1 and keeps[0][-1] and keeps[1].all()
