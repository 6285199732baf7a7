"""The Pareto plot of a search: every candidate's latency against its accuracy, the budget line, the
Pareto front and the pick marked. matplotlib is imported only here (the plot extra)."""

from __future__ import annotations

from pathlib import Path
from typing import List, Optional

from edgekit.errors import DependencyMissingError
from edgekit.graph.io import atomic_output


def pareto_front(points: List[tuple]) -> List[tuple]:
    """The (latency, accuracy) points no other point beats on both, sorted by latency."""
    front, best = [], float("-inf")
    for lat, acc in sorted(points, key=lambda p: (p[0], -p[1])):
        if acc > best:
            front.append((lat, acc))
            best = acc
    return front


def pareto_plot(result, dest) -> Path:
    """Write the plot of ``result`` (an OptimizeResult) to ``dest`` (PNG/SVG/PDF by suffix), atomically."""
    try:
        import matplotlib  # lazy: the plot extra

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt  # lazy: the plot extra
    except ImportError:
        raise DependencyMissingError("plot", "draw the Pareto plot (matplotlib)") from None
    dest = Path(dest)
    fig, ax = plt.subplots(figsize=(7, 4.5))
    styles = {"ok": ("o", None), "gated": ("x", "grey"), "stopped": (".", "lightgrey")}
    for status, (marker, colour) in styles.items():
        for prec in ("fp32", "fp16", "int8"):
            pts = [(c.latency.median_ms, 100 * c.accuracy) for c in result.candidates
                   if c.status == status and c.recipe.precision == prec and c.latency and c.accuracy is not None]
            if pts:
                ax.scatter(*zip(*pts), marker=marker, color=colour, alpha=0.8, label=f"{prec} ({status})")
    ok = [(c.latency.median_ms, 100 * c.accuracy) for c in result.candidates
          if c.status == "ok" and c.latency and c.accuracy is not None]
    front = pareto_front(ok)
    if front:
        ax.step(*zip(*front), where="post", color="tab:green", lw=1, label="Pareto front")
    b = result.baseline
    ax.scatter([b.latency.median_ms], [100 * (b.accuracy or 0)], marker="s", color="black", label="input model")
    ax.axvline(result.budget_ms, color="tab:red", ls="--", label=f"budget {result.budget_ms:.3g} ms")
    pick: Optional[object] = result.pick
    if pick is not None:
        ax.scatter([pick.latency.median_ms], [100 * pick.accuracy], s=180, facecolors="none", edgecolors="tab:red",
                   lw=2, label="pick" + ("" if result.status == "met" else f" ({result.status})"))
    ax.set_xlabel(f"latency, ms ({result.latency_kind} on {result.device})")
    ax.set_ylabel("top-1 %" if result.metric == "top1" else "top-1 agreement with the input %")
    ax.set_title("edgekit optimize: every candidate")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=7, loc="lower right")
    fig.tight_layout()
    with atomic_output(dest, suffix=dest.suffix) as tmp:
        fig.savefig(str(tmp))
    plt.close(fig)
    return dest
