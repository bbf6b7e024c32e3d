"""The report's statistics on hand-made numbers: the paired bootstrap against a slow explicit
implementation, its width against the normal approximation, stratification within seeds, shift
detection, pairing by example id, mean ± std and step curves."""

from __future__ import annotations

import math

import numpy as np
import pytest

from plad.report.stats import average_quality, mean_curve, mean_std, pair_by_id, paired_bootstrap


def _slow_bootstrap(diffs: list[np.ndarray], n_boot: int, seed: int, alpha: float) -> tuple[float, float, float]:
    """Explicit loops: draw each seed's index matrix (same RNG calls), sum every resample by hand,
    and take the percentiles with numpy's default linear interpolation written out."""
    rng = np.random.default_rng(seed)
    draws = [rng.integers(0, len(d), size=(n_boot, len(d))) for d in diffs]
    n = sum(len(d) for d in diffs)
    means = []
    for b in range(n_boot):
        total = 0.0
        for d, idx in zip(diffs, draws):
            for k in range(len(d)):
                total += float(d[idx[b, k]])
        means.append(total / n)
    means.sort()

    def quantile(p: float) -> float:
        h = (len(means) - 1) * p
        lo = math.floor(h)
        hi = min(lo + 1, len(means) - 1)
        return means[lo] + (h - lo) * (means[hi] - means[lo])

    pooled = sum(float(x) for d in diffs for x in d) / n
    return pooled, quantile(alpha / 2), quantile(1 - alpha / 2)


def test_paired_bootstrap_matches_slow_explicit_implementation():
    rng = np.random.default_rng(123)
    diffs = [rng.normal(0.02, 0.1, size=n) for n in (7, 12, 5)]
    res = paired_bootstrap(diffs, n_boot=300, seed=42, alpha=0.1)
    mean, low, high = _slow_bootstrap(diffs, 300, 42, 0.1)
    assert res["mean"] == pytest.approx(mean, abs=1e-12)
    assert res["low"] == pytest.approx(low, abs=1e-12) and res["high"] == pytest.approx(high, abs=1e-12)
    assert res["n"] == 24 and res["n_seeds"] == 3
    assert res["excludes_zero"] == (low > 0 or high < 0)
    assert paired_bootstrap(diffs, n_boot=300, seed=43, alpha=0.1)["low"] != res["low"]  # the seed matters


def test_paired_bootstrap_width_matches_normal_approximation():
    rng = np.random.default_rng(0)
    diffs = [rng.normal(0.0, s, size=n) for s, n in ((0.05, 200), (0.2, 300))]
    res = paired_bootstrap(diffs, n_boot=4000, seed=1)
    n = 500
    se = math.sqrt(sum(len(d) * d.var() for d in diffs)) / n  # stratified: within-seed variances only
    assert (res["high"] - res["low"]) / 2 == pytest.approx(1.96 * se, rel=0.08)


def test_paired_bootstrap_resamples_within_each_seed():
    """Seed A all +1 (10 texts), seed B all -1 (30 texts): every stratified resample keeps 10 and 30,
    so the pooled mean is exactly -0.5 each time (pooling the texts before resampling would not)."""
    res = paired_bootstrap([np.ones(10), -np.ones(30)], n_boot=500, seed=0)
    assert res["mean"] == res["low"] == res["high"] == pytest.approx(-0.5)
    assert res["excludes_zero"]


def test_known_shift_is_detected_and_zero_shift_is_not():
    rng = np.random.default_rng(7)
    base = [rng.uniform(0.5, 0.9, size=200) for _ in range(3)]
    shifted = [b + 0.03 + rng.normal(0, 0.05, size=b.size) for b in base]
    res = paired_bootstrap([s - b for s, b in zip(shifted, base)], n_boot=2000, seed=0)
    assert res["excludes_zero"] and 0.0 < res["low"] < 0.03 < res["high"]
    assert res["mean"] == pytest.approx(0.03, abs=0.006)
    noise = [rng.normal(0, 0.05, size=200) for _ in range(3)]
    zero = paired_bootstrap([x - x.mean() for x in noise], n_boot=2000, seed=0)
    assert zero["mean"] == pytest.approx(0.0, abs=1e-12)
    assert zero["low"] < 0 < zero["high"] and not zero["excludes_zero"]


def test_paired_bootstrap_edge_cases():
    assert paired_bootstrap([[], []])["n"] == 0 and not paired_bootstrap([])["excludes_zero"]
    with pytest.raises(ValueError, match="n_boot"):
        paired_bootstrap([[1.0]], n_boot=0)
    with pytest.raises(ValueError, match="alpha"):
        paired_bootstrap([[1.0]], alpha=1.5)


def test_pairing_by_id_and_averaging_duplicates():
    a = {1: ("x", 0.9), 0: ("w", 0.5)}
    b = {0: ("w", 0.25), 1: ("x", 0.4)}
    assert pair_by_id(a, b).tolist() == [0.25, 0.5]  # ordered by id, not by insertion
    assert pair_by_id(a, {0: ("w", 0.2)}) is None  # different texts: not paired
    assert pair_by_id(a, {0: ("other", 0.2), 1: ("x", 0.1)}) is None
    assert average_quality([a, {0: ("w", 0.7), 1: ("x", 0.5)}]) == {0: ("w", 0.6), 1: ("x", 0.7)}
    assert average_quality([a, b | {2: ("y", 1.0)}]) is None and average_quality([]) is None


def test_mean_std_and_mean_curve():
    s = mean_std([0.2, None, 0.4, float("nan")])
    assert s["mean"] == pytest.approx(0.3) and s["std"] == pytest.approx(math.sqrt(0.02)) and s["n"] == 2
    assert math.isnan(mean_std([0.5])["std"]) and mean_std([None]) is None
    steps, mean, n = mean_curve([[(0, 1.0), (10, 0.5)], [(0, 0.0), (5, 0.2), (10, 0.1), (10, 0.3)]])
    assert steps.tolist() == [0, 5, 10]
    assert mean.tolist() == pytest.approx([0.5, 0.2, 0.4]) and n.tolist() == [2, 1, 2]
