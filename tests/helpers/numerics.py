"""Tolerances for comparing floats that the same math produced along different paths: other batch
shapes or padding, other BLAS kernels (the CPU's instruction set), other thread or process counts.

Exact equality, or a fixed absolute bound such as 1e-5, makes a test depend on the machine: a
summed log-probability near -90 has a float32 spacing of 7.6e-6, so 1e-5 is about one rounding
unit. The bounds here follow from the dtype, the magnitude and the number of summed terms, and
stay far below what a real defect changes (one token more or less moves a summed log-probability
by a whole token's log-probability, about a nat; a wrong reference or a per-rank normalisation
moves weights by a sizeable share of what training moved them).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import torch
from torch import Tensor

Number = float | int


def _tensor(x: Tensor | Sequence[Number] | Number) -> Tensor:
    return torch.as_tensor(x, dtype=torch.float64)


# Per-token scale: a token's log-probability is a logit minus a log-sum-exp, each of about this size
# (the models tested here keep |logits| well below it), so each term carries a rounding error of
# about eps * LOGIT_SCALE whatever its own value (cancellation when log p is close to 0).
LOGIT_SCALE = 16.0


def sum_tolerance(
    values: Tensor | Sequence[Number] | Number,
    n_terms: Tensor | Sequence[Number] | Number,
    dtype: torch.dtype = torch.float32,
    logit_scale: float = LOGIT_SCALE,
) -> Tensor:
    """Bound on |a - b| for two ``dtype`` computations of a summed log-probability of ``n_terms``
    tokens along different paths (batch shape, padding, kernels).

    Reordering a float sum of n terms of one sign (log-probabilities are <= 0) changes it by at most
    γ_n·|Σ x_i| with γ_n ≈ n·u, u = eps/2 the unit roundoff (Higham, Accuracy and Stability of
    Numerical Algorithms, §4.2). Each term differs too, by about eps·(|x_t| + logit_scale) (it comes
    out of a matmul and a log-softmax whose kernels differ). Together, rounded up:
    n · eps · (|value| + logit_scale)."""
    eps = torch.finfo(dtype).eps
    return _tensor(n_terms).clamp(min=1) * eps * (_tensor(values).abs() + logit_scale)


def _excess(actual, expected, n_terms, dtype) -> tuple[Tensor, Tensor, Tensor, Tensor]:
    a, e = _tensor(actual), _tensor(expected)
    tol = sum_tolerance(torch.maximum(a.abs(), e.abs()), n_terms, dtype)
    a, e, tol = torch.broadcast_tensors(a, e, tol)
    return ((a - e).abs() - tol).flatten(), a.flatten(), e.flatten(), tol.flatten()


def sums_close(
    actual: Tensor | Sequence[Number] | Number,
    expected: Tensor | Sequence[Number] | Number,
    n_terms: Tensor | Sequence[Number] | Number,
    dtype: torch.dtype = torch.float32,
) -> bool:
    """Every element of ``actual`` within ``sum_tolerance`` of ``expected``."""
    return bool((_excess(actual, expected, n_terms, dtype)[0] <= 0).all())


def assert_sums_close(
    actual: Tensor | Sequence[Number] | Number,
    expected: Tensor | Sequence[Number] | Number,
    n_terms: Tensor | Sequence[Number] | Number,
    dtype: torch.dtype = torch.float32,
    what: str = "summed log-probabilities",
) -> None:
    """``sums_close``, failing with the worst element and its bound."""
    excess, a, e, tol = _excess(actual, expected, n_terms, dtype)
    if excess.numel() and float(excess.max()) > 0:
        i = int(excess.argmax())
        raise AssertionError(
            f"{what}: element {i} differs by {float((a[i] - e[i]).abs()):.3g} > bound "
            f"{float(tol[i]):.3g} ({float(a[i])!r} vs {float(e[i])!r})"
        )


def assert_means_close(
    actual: Tensor | Sequence[Number] | Number,
    expected: Tensor | Sequence[Number] | Number,
    n_terms: Tensor | Sequence[Number] | Number,
    dtype: torch.dtype = torch.float32,
) -> None:
    """Mean (length-normalised) log-probabilities: their sums within ``sum_tolerance``."""
    n = _tensor(n_terms).clamp(min=1)
    assert_sums_close(_tensor(actual) * n, _tensor(expected) * n, n, dtype, what="mean log-probabilities x length")


def max_weight_diff(a: Mapping[str, Tensor], b: Mapping[str, Tensor]) -> float:
    """Largest elementwise difference between two state dicts of the same model."""
    assert a.keys() == b.keys(), sorted(set(a) ^ set(b))
    return max(float((a[k].double() - b[k].double()).abs().max()) for k in a)


def weight_tolerance(movement: float, share: float = 0.01) -> float:
    """Bound on the elementwise difference of two trainings that do the same math along different
    reduction orders (ranks, micro-batches, batch shapes), given ``movement``: how far training can
    move a weight (AdamW moves each by about lr per step, so Σ over the trained stages of steps × lr).

    Rounding in the reduced gradients perturbs each update by a small share of lr (measured here:
    3.6e-6 after 6 steps at lr 1e-3, 0.06% of 6e-3); a real mismatch such as a loss normalised per
    rank instead of over the global batch moves weights by a large share of it (4.5e-3, 75%)."""
    return share * movement


def floats_close(a: float, b: float, rtol: float = 1e-5) -> bool:
    """Relative comparison for derived metrics (scale-free: the same bound for a rate and a log-likelihood)."""
    return abs(a - b) <= rtol * max(1.0, abs(a), abs(b))
