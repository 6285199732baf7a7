"""How far to trust a data-free prune of a graph without BatchNorm: one line for the prune report.

With neither BN statistics nor real data, obspa's statistics come from image-prior inputs the
network itself chose (:mod:`edgekit.prune.obspa.priors`). Whether they stood in for the data
cannot be known without data, but two things can be measured: how often the pruned model agrees
with the original on held-out inputs of the same prior (the pruning's own damage, on the inputs
it was fitted for), and how data-like the network found those inputs (:func:`network_score`,
1 = confident and spread over all classes). The line says both, what loss they suggest, and that
``--calib`` with a few unlabelled inputs removes the guesswork.
"""

from __future__ import annotations

from typing import Optional

import numpy as np

from edgekit.prune.apply import apply
from edgekit.prune.obspa.batch import with_dynamic_batch
from edgekit.prune.obspa.measure import session


def _logits(model, name: str, x: np.ndarray) -> np.ndarray:
    sess = session(with_dynamic_batch(model))
    out = sess.get_outputs()[0].name
    return np.concatenate([sess.run([out], {name: x[i:i + 16]})[0] for i in range(0, len(x), 16)])


def agreement(reference: np.ndarray, pruned, name: str, x: np.ndarray) -> Optional[float]:
    """Fraction of ``x`` on which ``pruned`` gives the top-1 class of the ``reference`` logits (the
    original's on ``x``); None when it cannot run on it or the output is not a class-score matrix."""
    try:
        b = _logits(pruned, name, x)
    except Exception:
        return None
    a = np.asarray(reference)
    if a.ndim != 2 or a.shape != b.shape:
        return None
    return float((a.argmax(1) == b.argmax(1)).mean())


def expected_loss(agree: float) -> float:
    """Points of accuracy a user should expect to lose, from the disagreement on the held-out
    synthetic inputs: a third of it. Those inputs sit nearer the class boundaries than real data,
    so a pruned model flips more of them: on the digits models of bench/prune_datafree.py
    --recipes the real loss was 0.03-0.3 times the synthetic disagreement (obspa and obspa-seq,
    BN folded). A rough guide, not a bound."""
    return 100.0 * (1.0 - agree) / 3.0


def reliability_line(dg, keeps, ctx, st) -> Optional[str]:
    """The report line for a data-free prune of a graph without BN whose synthetic inputs were
    chosen by the network (None otherwise, or when the check cannot run)."""
    chosen = st.chosen
    if ctx.calib is not None or chosen is None or st.has_bn or not len(chosen.check):
        return None
    name = next(iter(st.inputs))
    try:
        pruned = apply(dg, keeps, ctx.updates, ctx.new_biases)
    except Exception:
        return None
    agree = agreement(chosen.check_logits, pruned, name, chosen.check)
    if agree is None:
        return None
    loss = expected_loss(agree)
    return (f"obspa reliability (no data; BatchNorm folded or absent): the pruned model agrees with the original on "
            f"{agree:.0%} of {len(chosen.check)} held-out synthetic '{chosen.prior}' inputs (how data-like the "
            f"network finds them: {chosen.score:.2f} of 1); a rough estimate: {loss:.0f} point(s) of accuracy "
            "lost, more if your data looks unlike them; --calib with 32-256 unlabelled inputs makes it reliable")
