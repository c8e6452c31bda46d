"""Plots: :func:`plot_positive_rate` draws a :class:`~.metrics.Metrics` with matplotlib.

matplotlib (in the ``analytics`` extra) is imported only when a plot is drawn.
"""

from __future__ import annotations

from typing import Any, Literal

from ..errors import InvalidArgumentError
from ..ratings import POSITIVE_MIN_SCORE
from .metrics import Metrics
from .tables import _EXTRA_HINT

__all__ = ["plot_positive_rate"]


def plot_positive_rate(
    metrics: Metrics,
    ax: Any = None,
    *,
    title: str | None = None,
    level: Literal["turns", "sessions"] = "turns",
) -> Any:
    """Draw each group's positive rate as a bar with its 95% Wilson interval; return the axes.

    ``level="turns"``: the share of rated turns that are positive;
    ``"sessions"``: the share of sessions rated as a whole that are
    positive. Groups with nothing rated get no bar, only their label and
    ``n=0``. Needs matplotlib (``pip install "feedback-plugin[analytics]"``).
    """
    if level not in ("turns", "sessions"):
        raise InvalidArgumentError(f"level must be 'turns' or 'sessions', got {level!r}")
    try:
        import matplotlib.pyplot as plt
    except ImportError as exc:
        raise ImportError(f"plot_positive_rate() needs matplotlib: {_EXTRA_HINT}") from exc
    if ax is None:
        _fig, ax = plt.subplots(figsize=(max(6.0, 1.4 * len(metrics) + 3), 4.5))
    labels = [g.label for g in metrics]
    xs = list(range(len(labels)))
    # (rate, ci_low, ci_high, n) of each group at the level asked
    figures = [
        (g.positive_rate, g.ci_low, g.ci_high, g.rated)
        if level == "turns"
        else (g.session_positive_rate, g.session_ci_low, g.session_ci_high, g.rated_sessions)
        for g in metrics
    ]
    shown = [(x, f) for x, f in enumerate(figures) if f[0] is not None]
    ax.bar(
        [x for x, _f in shown],
        [f[0] for _x, f in shown],
        yerr=[
            [f[0] - f[1] for _x, f in shown],  # type: ignore[operator]
            [f[2] - f[0] for _x, f in shown],  # type: ignore[operator]
        ],
        width=0.6,
        capsize=6,
        color="#4C72B0",
        edgecolor="black",
        linewidth=0.6,
    )
    for x, (rate, _low, high, n) in enumerate(figures):
        text = f"{rate:.0%}\nn={n}" if n else "n=0"
        y = high + 0.02 if n else 0.02
        ax.text(x, min(y, 1.0), text, ha="center", va="bottom", fontsize=9)
    ax.set_xticks(xs)
    ax.set_xticklabels(labels)
    ax.set_ylim(0, 1.15)
    ax.set_yticks([0, 0.25, 0.5, 0.75, 1.0])
    ax.set_yticklabels(["0%", "25%", "50%", "75%", "100%"])
    what = "rated sessions" if level == "sessions" else "rated turns"
    ax.set_ylabel(f"positive (score >= {POSITIVE_MIN_SCORE}) of {what}, 95% CI")
    ax.set_xlabel(metrics.by or "group")
    default = "Session positive rate" if level == "sessions" else "Positive rate"
    ax.set_title(title or f"{default} by {metrics.by or 'group'}")
    ax.grid(axis="y", alpha=0.3)
    ax.set_axisbelow(True)
    return ax
