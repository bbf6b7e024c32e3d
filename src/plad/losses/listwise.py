"""Listwise calibration over K candidates: teacher samples rank first, then higher task quality.

Candidate i is *better* than j when it is a teacher sample and j is not, or both come from the
same model and quality_i > quality_j (when quality is given). Ties are allowed, so the target is
a partial order; with scores s_i (optionally divided by ``temperature``):

* ``listmle`` (Xia et al. 2008, Plackett-Luce likelihood of the order; ties as in Breslow's
  partial likelihood): L = sum_i [ -s_i + log sum_{j not better than i} exp(s_j) ].
  Without ties this is exactly ListMLE (the last term is 0).
* ``softmax``: cross-entropy between softmax(s) and a target spreading its mass uniformly over
  the top-ranked candidates (those no other candidate beats).

Padding candidates (``mask`` False) are ignored; the loss is the mean over lists.
"""

from __future__ import annotations

import torch
from torch import Tensor

from plad.checks import InputError, number
from plad.losses.base import CalibrationLoss, SequenceScores, check_score_mode

METHODS = ("listmle", "softmax")


class ListwiseLoss(CalibrationLoss):
    kind = "plad"
    order = 60
    inputs = ("candidates",)

    def __init__(
        self, method: str = "listmle", score: str = "mean", temperature: float = 1.0, reg_weight: float = 0.0
    ) -> None:
        super().__init__(reg_weight)
        if method not in METHODS:
            raise InputError(f"loss.method: expected one of {METHODS}, got {method!r}")
        number(temperature, "loss.temperature", positive=True)
        self.method = method
        self.score = check_score_mode(score)
        self.temperature = float(temperature)

    def better(self, s: SequenceScores) -> Tensor:
        """[B, K, K] bool: better[b, i, j] = candidate i must out-rank candidate j."""
        batch, k = s.logp.shape
        if s.n_teacher is None and s.quality is None:
            raise InputError("n_teacher: listwise needs n_teacher or quality to order candidates, got neither")
        n_teacher = s.n_teacher if s.n_teacher is not None else torch.zeros(batch, dtype=torch.long)
        teacher = torch.arange(k, device=s.logp.device) < n_teacher.to(s.logp.device)[:, None]  # [B, K]
        better = teacher[:, :, None] & ~teacher[:, None, :]
        if s.quality is not None:
            same_source = teacher[:, :, None] == teacher[:, None, :]
            better |= same_source & (s.quality[:, :, None] > s.quality[:, None, :])
        valid = self.valid(s)
        return better & valid[:, :, None] & valid[:, None, :]

    @staticmethod
    def valid(s: SequenceScores) -> Tensor:
        return torch.ones_like(s.logp, dtype=torch.bool) if s.mask is None else s.mask.bool()

    def compute(self, s: SequenceScores) -> tuple[Tensor, dict[str, Tensor]]:
        valid = self.valid(s)
        better = self.better(s)
        # Padding scores may be garbage: zero them so no inf/nan reaches a reduction or gradient.
        scores = torch.where(valid, s.score(self.score), 0.0) / self.temperature
        if self.method == "listmle":
            eye = torch.eye(scores.shape[1], dtype=torch.bool, device=scores.device)
            # rivals[b, i, j]: j stays in the Plackett-Luce denominator when i is placed (j not better).
            rivals = (valid[:, None, :] & ~better.transpose(1, 2)) | eye
            log_denominator = scores[:, None, :].masked_fill(~rivals, float("-inf")).logsumexp(-1)
            per_list = torch.where(valid, log_denominator - scores, 0.0).sum(-1)
        else:
            top = valid & ~better.any(1)  # nobody beats them
            target = top.float() / top.float().sum(-1, keepdim=True).clamp(min=1)
            log_probs = scores.masked_fill(~valid, float("-inf")).log_softmax(-1).masked_fill(~valid, 0.0)
            per_list = -(target * log_probs).sum(-1)
        ordered = better.float()
        raw = scores.detach() * self.temperature
        gaps = raw[:, :, None] - raw[:, None, :]
        n_pairs = ordered.sum().clamp(min=1)
        return s.example_mean(per_list), {
            # Over pairs with a defined order: share ranked correctly, and mean score gap.
            "rank_acc": ((gaps > 0).float() * ordered).sum() / n_pairs,
            "margin": (gaps * ordered).sum() / n_pairs,
            "n_candidates": valid.float().sum(-1).mean(),
        }
