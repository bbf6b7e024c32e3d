"""PNG figures: one evaluation run's metric bars, win rates and calibration scatter; the multirun
report's intervals (differences with their CI) and step curves.

Headless (Agg) so they render on clusters; each function writes one file and returns its path.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402


def _save(fig: Any, path: Path) -> Path:
    """Rendered in memory, then written whole (``atomic_write``): a killed run leaves no half PNG."""
    import io

    from plad.cache import atomic_write

    fig.tight_layout()
    buf = io.BytesIO()
    fig.savefig(buf, dpi=100, format="png")
    plt.close(fig)
    return atomic_write(path, buf.getvalue())


def metric_bars(
    systems: dict[str, dict[str, float]], metrics: Sequence[str], path: Path, main_metric: str | None = None
) -> Path:
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


def calibration_scatter(
    points: dict[str, dict[str, list[list[float]]]], summaries: dict[str, dict[str, float]], path: Path
) -> Path:
    """Score vs quality, one panel per system (side by side, shared axes), colored by prompt."""
    names = list(points)
    fig, axes = plt.subplots(1, max(len(names), 1), figsize=(3.6 * max(len(names), 1), 3.4), squeeze=False, sharey=True)
    for ax, name in zip(axes[0], names):
        for j, (s, q) in enumerate(zip(points[name]["scores"], points[name]["qualities"])):
            ax.scatter(s, q, s=10, alpha=0.7, color=plt.cm.tab20(j % 20))
        summ = summaries.get(name, {})
        ax.set_title(
            f"{name}\nspearman={summ.get('spearman', np.nan):.2f} rank_acc={summ.get('rank_acc', np.nan):.2f}",
            fontsize=9,
        )
        ax.set_xlabel("mean log-likelihood")
    axes[0][0].set_ylabel("quality")
    return _save(fig, path)


def interval_chart(
    items: dict[str, tuple[float, float, float]],
    path: Path,
    ylabel: str,
    title: str = "",
    zero_line: bool = True,
    reference: float | None = None,
) -> Path:
    """One point per method with its interval (center, low, high), on an axis fitted to the data.

    Used for differences to a reference (a 0 line marks "no change"; green/red: the interval
    excludes 0 upwards/downwards): bars starting at 0 on a 0.72-vs-0.75 axis would hide what
    matters. With ``reference`` (e.g. the initial student's value) a dashed line marks it instead
    and points are not colored by sign.
    """
    names = list(items)
    center = np.array([items[n][0] for n in names], dtype=float)
    low = np.array([items[n][1] for n in names], dtype=float)
    high = np.array([items[n][2] for n in names], dtype=float)
    colors = [
        "tab:blue" if not zero_line else "tab:green" if lo > 0 else "tab:red" if hi < 0 else "tab:gray"
        for lo, hi in zip(low, high)
    ]
    fig, ax = plt.subplots(figsize=(0.9 * len(names) + 2.5, 3.6))
    for i, (c, lo, hi, color) in enumerate(zip(center, low, high, colors)):
        ax.errorbar(
            [i],
            [c],
            yerr=[[max(c - lo, 0.0)], [max(hi - c, 0.0)]] if np.isfinite([lo, hi]).all() else None,
            fmt="o",
            color=color,
            capsize=4,
        )
    if zero_line:
        ax.axhline(0.0, color="black", linewidth=1)
    if reference is not None and np.isfinite(reference):
        ax.axhline(reference, color="gray", linestyle="--", linewidth=1)
    ax.set_xticks(range(len(names)), names, rotation=30, ha="right", fontsize=8)
    ax.set_ylabel(ylabel, fontsize=9)
    ax.set_title(title, fontsize=9)
    ax.grid(axis="y", alpha=0.3)
    return _save(fig, path)


def step_curves(curves: dict[str, dict[str, tuple[Any, Any, Any]]], path: Path, title: str = "") -> Path:
    """One panel per logged column (e.g. train/hinge_active, val/rank_acc), one line per method:
    the mean over seeds at each step (``curves[column][method] = (steps, mean, n_seeds)``)."""
    columns = list(curves)
    fig, axes = plt.subplots(1, max(len(columns), 1), figsize=(4.5 * max(len(columns), 1), 3.4), squeeze=False)
    for ax, col in zip(axes[0], columns):
        for name, (steps, mean, n) in curves[col].items():
            marker = "o" if len(steps) <= 20 else None
            ax.plot(steps, mean, marker=marker, markersize=3, label=f"{name} ({int(np.max(n))} seeds)")
        ax.set_title(f"{title} {col}".strip(), fontsize=9)
        ax.set_xlabel("step")
        ax.legend(fontsize=7)
        ax.grid(alpha=0.3)
    return _save(fig, path)
