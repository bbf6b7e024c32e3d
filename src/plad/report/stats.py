"""Statistics of the multirun report: mean ± std over seeds, the paired bootstrap of per-example
quality differences (pooled over seeds, resampled within each seed), and step curves averaged
over seeds. Pure numpy, no file access, so each piece is testable on hand-made numbers."""

from __future__ import annotations

import math
from collections import defaultdict
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

from plad.checks import InputError


def mean_std(values: Sequence[float | None]) -> dict[str, float] | None:
    """Mean and sample std (ddof=1; NaN for one value) of the non-missing values; None if none."""
    xs = np.array([v for v in values if v is not None and math.isfinite(float(v))], dtype=float)
    if xs.size == 0:
        return None
    return {"mean": float(xs.mean()), "std": float(xs.std(ddof=1)) if xs.size > 1 else float("nan"), "n": int(xs.size)}


def paired_bootstrap(
    diffs: Sequence[Sequence[float]], n_boot: int = 2000, seed: int = 0, alpha: float = 0.05
) -> dict[str, Any]:
    """Mean of paired per-example differences pooled over seeds, with a percentile-bootstrap CI.

    ``diffs[s]`` holds seed s's differences (A − B on the same test texts). Each resample draws
    every seed's examples with replacement within that seed (a stratified bootstrap), so the
    between-seed structure is kept and every seed contributes its own number of examples.
    """
    if n_boot < 1:
        raise InputError(f"n_boot: expected a positive number of resamples, got {n_boot}")
    if not 0 < alpha < 1:
        raise InputError(f"alpha: expected a level in (0, 1), got {alpha}")
    groups = [np.asarray(d, dtype=float) for d in diffs if len(d)]
    n = sum(g.size for g in groups)
    if n == 0:
        return {
            "mean": float("nan"),
            "low": float("nan"),
            "high": float("nan"),
            "n": 0,
            "n_seeds": 0,
            "excludes_zero": False,
        }
    rng = np.random.default_rng(seed)
    totals = np.zeros(n_boot)
    for g in groups:
        totals += g[rng.integers(0, g.size, size=(n_boot, g.size))].sum(axis=1)
    low, high = np.quantile(totals / n, [alpha / 2, 1 - alpha / 2])
    return {
        "mean": float(np.concatenate(groups).mean()),
        "low": float(low),
        "high": float(high),
        "n": int(n),
        "n_seeds": len(groups),
        "excludes_zero": bool(low > 0 or high < 0),
    }


def pair_by_id(a: Mapping[Any, tuple[str, float]], b: Mapping[Any, tuple[str, float]]) -> np.ndarray | None:
    """Per-example differences a − b over the same test texts (id -> (prompt, quality)).

    None when the two sides did not evaluate the same texts (different ids or prompts): such a
    seed cannot be paired and the caller reports it instead of guessing.
    """
    if set(a) != set(b) or any(a[i][0] != b[i][0] for i in a):
        return None
    ids = sorted(a, key=str)
    return np.array([a[i][1] - b[i][1] for i in ids], dtype=float)


def average_quality(runs: Sequence[Mapping[Any, tuple[str, float]]]) -> dict[Any, tuple[str, float]] | None:
    """Per-example quality averaged over duplicate jobs of one seed; None if they evaluated different texts."""
    if not runs:
        return None
    first = runs[0]
    if any(set(r) != set(first) or any(r[i][0] != first[i][0] for i in first) for r in runs[1:]):
        return None
    return {i: (first[i][0], float(np.mean([r[i][1] for r in runs]))) for i in first}


def mean_curve(curves: Sequence[Sequence[tuple[float, float]]]) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(steps, mean, n) over seeds: each seed's (step, value) points, averaged at each step where
    at least one seed logged a value (a seed logging the same step twice counts its last value)."""
    by_step: dict[float, list[float]] = defaultdict(list)
    for curve in curves:
        for step, value in dict(curve).items():
            by_step[step].append(value)
    steps = np.array(sorted(by_step), dtype=float)
    return (
        steps,
        np.array([np.mean(by_step[s]) for s in steps], dtype=float),
        np.array([len(by_step[s]) for s in steps], dtype=int),
    )
