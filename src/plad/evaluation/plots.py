"""PNG figures of one evaluation run: metric bars, win rates with intervals, calibration scatter.

Headless (Agg) so they render on clusters; each function writes one file and returns its path.
"""
from __future__ import annotations

from pathlib import Path
from typing import Any, Sequence

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402


def _save(fig: Any, path: Path) -> Path:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return path


def metric_bars(systems: dict[str, dict[str, float]], metrics: Sequence[str], path: Path,
                main_metric: str | None = None) -> Path:
    """One panel per metric, one bar per system; the main metric comes first."""
    metrics = list(dict.fromkeys([m for m in [main_metric, *metrics] if m]))
    names = list(systems)
    fig, axes = plt.subplots(1, max(len(metrics), 1), figsize=(3.2 * max(len(metrics), 1), 3.2), squeeze=False)
    colors = plt.cm.tab10(np.arange(len(names)) % 10)
    for ax, m in zip(axes[0], metrics):
        values = [systems[n].get(m, np.nan) for n in names]
        ax.bar(range(len(names)), values, color=colors)
        ax.set_xticks(range(len(names)), names, rotation=30, ha="right", fontsize=8)
        ax.set_title(m + (" (main)" if m == main_metric else ""), fontsize=9)
    return _save(fig, path)


def win_rate_bars(win_rates: dict[str, dict[str, float]], path: Path) -> Path:
    """Win rate of the main system against each other one, whiskers = bootstrap interval."""
    names = list(win_rates)
    rates = np.array([win_rates[n]["rate"] for n in names], dtype=float)
    err = np.array([[r - win_rates[n]["low"], win_rates[n]["high"] - r] for n, r in zip(names, rates)]).T
    fig, ax = plt.subplots(figsize=(1.2 * len(names) + 2.5, 3.2))
    ax.bar(range(len(names)), rates, yerr=err.reshape(2, -1), capsize=4, color="tab:blue")
    ax.axhline(0.5, color="gray", linestyle="--", linewidth=1)
    ax.set_xticks(range(len(names)), names, rotation=20, ha="right", fontsize=8)
    ax.set_ylim(0, 1)
    ax.set_ylabel("win rate (95% CI)")
    return _save(fig, path)


def calibration_scatter(points: dict[str, dict[str, list[list[float]]]],
                        summaries: dict[str, dict[str, float]], path: Path) -> Path:
    """Score vs quality, one panel per system (side by side, shared axes), colored by prompt."""
    names = list(points)
    fig, axes = plt.subplots(1, max(len(names), 1), figsize=(3.6 * max(len(names), 1), 3.4),
                             squeeze=False, sharey=True)
    for ax, name in zip(axes[0], names):
        for j, (s, q) in enumerate(zip(points[name]["scores"], points[name]["qualities"])):
            ax.scatter(s, q, s=10, alpha=0.7, color=plt.cm.tab20(j % 20))
        summ = summaries.get(name, {})
        ax.set_title(f"{name}\nspearman={summ.get('spearman', np.nan):.2f} "
                     f"rank_acc={summ.get('rank_acc', np.nan):.2f}", fontsize=9)
        ax.set_xlabel("mean log-likelihood")
    axes[0][0].set_ylabel("quality")
    return _save(fig, path)
