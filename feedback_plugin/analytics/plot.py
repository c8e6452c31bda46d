"""Plots: :func:`plot_positive_rate` draws a :class:`~.metrics.Metrics` with matplotlib.

matplotlib (in the ``analytics`` extra) is imported only when a plot is drawn.
"""

from __future__ import annotations

from typing import Any

from ..ratings import POSITIVE_MIN_SCORE
from .metrics import Metrics
from .tables import _EXTRA_HINT

__all__ = ["plot_positive_rate"]


def plot_positive_rate(metrics: Metrics, ax: Any = None, *, title: str | None = None) -> Any:
    """Draw each group's positive rate as a bar with its 95% Wilson interval; return the axes.

    Groups without rated turns get no bar, only their label and ``n=0``.
    Needs matplotlib (``pip install "feedback-plugin[analytics]"``).
    """
    try:
        import matplotlib.pyplot as plt
    except ImportError as exc:
        raise ImportError(f"plot_positive_rate() needs matplotlib: {_EXTRA_HINT}") from exc
    if ax is None:
        _fig, ax = plt.subplots(figsize=(max(6.0, 1.4 * len(metrics) + 3), 4.5))
    labels = [g.label for g in metrics]
    xs = list(range(len(labels)))
    shown = [(x, g, g.positive_rate) for x, g in enumerate(metrics) if g.positive_rate is not None]
    ax.bar(
        [x for x, _g, _rate in shown],
        [rate for _x, _g, rate in shown],
        yerr=[
            [rate - g.ci_low for _x, g, rate in shown],
            [g.ci_high - rate for _x, g, rate in shown],
        ],
        width=0.6,
        capsize=6,
        color="#4C72B0",
        edgecolor="black",
        linewidth=0.6,
    )
    for x, g in enumerate(metrics):
        text = f"{g.positive_rate:.0%}\nn={g.rated}" if g.rated else "n=0"
        y = g.ci_high + 0.02 if g.rated else 0.02
        ax.text(x, min(y, 1.0), text, ha="center", va="bottom", fontsize=9)
    ax.set_xticks(xs)
    ax.set_xticklabels(labels)
    ax.set_ylim(0, 1.15)
    ax.set_yticks([0, 0.25, 0.5, 0.75, 1.0])
    ax.set_yticklabels(["0%", "25%", "50%", "75%", "100%"])
    ax.set_ylabel(f"positive rate (score >= {POSITIVE_MIN_SCORE}), 95% CI")
    ax.set_xlabel(metrics.by or "group")
    ax.set_title(title or f"Positive rate by {metrics.by or 'group'}")
    ax.grid(axis="y", alpha=0.3)
    ax.set_axisbelow(True)
    return ax
