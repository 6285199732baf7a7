"""Latency distribution plots (matplotlib, optional extra `plot`)."""

from __future__ import annotations

from pathlib import Path
from typing import Sequence

from edgekit.errors import DependencyMissingError, InputError
from edgekit.graph.io import atomic_output
from edgekit.stats import LatencyReport


def plot_latency(reports: Sequence[LatencyReport], path: Path) -> Path:
    """Histogram of per-query latency per model (left) and the models side by side (right)."""
    path = Path(path)
    if path.suffix.lower() not in (".png", ".svg", ".pdf"):
        raise InputError(f"--plot wants a .png, .svg or .pdf path, got {path.name}")
    try:
        import matplotlib  # lazy: matplotlib is optional (extra `plot`)

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt  # lazy: as above
    except ImportError as exc:
        raise DependencyMissingError("plot", "draw latency plots") from exc
    fig, (ax1, ax2) = plt.subplots(1, 2, figsize=(12, 4.5))
    labels = [Path(r.model).name for r in reports]
    for r, label in zip(reports, labels):
        _, _, bars = ax1.hist(r.times_ms, bins=min(60, max(10, len(r.times_ms) // 5)), alpha=0.6,
                              label=f"{label}: median {r.latency.median:.2f} ms")
        color = bars[0].get_facecolor()[:3] if len(bars) else None  # the p99 line in its histogram's colour
        ax1.axvline(r.latency.p99, linestyle=":", linewidth=1.2, color=color,
                    label=f"{label}: p99 {r.latency.p99:.2f} ms")
    ax1.set_xlabel("latency per query (ms)")
    ax1.set_ylabel("queries")
    ax1.set_title("Latency distribution (dotted: p99)")
    ax1.legend(fontsize=8)
    ax2.boxplot([r.times_ms for r in reports], whis=(1, 99), showfliers=False)
    ax2.set_xticks(range(1, len(labels) + 1))
    ax2.set_xticklabels(labels, rotation=15, fontsize=8)
    ax2.set_ylabel("latency (ms), whiskers p1-p99")
    dev = reports[0].device
    ax2.set_title(f"Side by side on {dev} ({reports[0].backend})")
    fig.tight_layout()
    with atomic_output(path, suffix=path.suffix) as tmp:
        fig.savefig(tmp, dpi=110, format=path.suffix.lstrip(".").lower())
    plt.close(fig)
    return path
