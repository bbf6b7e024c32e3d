"""PLaD's ranking calibration loss: the teacher's output must out-score the student's by a margin.

    L = max(0, beta - s(y+|x) + s(y-|x)),   s = mean (default) or summed token log-likelihood

Equivalence with TRL's hinge (CPO/DPO ``loss_type="hinge"``, ``relu(1 - b * (s+ - s-))`` on summed
log-likelihoods): hinge_b = b * ranking(beta=1/b, score="sum"); with b = 1 they are identical.

``rejected_grad=False`` is an ablation: s(y-|x) enters the hinge as a constant, so the loss only
raises y+ where the hinge is active (a sample-weighted NLL on y+) and never lowers the student's own
samples; it separates what PLaD's signal does through y- from what it does through y+.
"""

from __future__ import annotations

import torch
from torch import Tensor

from plad.checks import InputError
from plad.losses.base import CalibrationLoss, SequenceScores, check_score_mode


class RankingLoss(CalibrationLoss):
    kind = "plad"
    order = 40
    inputs = ("chosen", "rejected")

    def __init__(
        self, beta: float = 1.0, score: str = "mean", reg_weight: float = 0.0, rejected_grad: bool = True
    ) -> None:
        super().__init__(reg_weight)
        if beta < 0:
            raise InputError(f"loss.beta: expected a margin >= 0, got {beta}")
        if not isinstance(rejected_grad, bool):
            raise InputError(f"loss.rejected_grad: expected true or false, got {rejected_grad!r}")
        self.beta = float(beta)
        self.score = check_score_mode(score)
        self.rejected_grad = rejected_grad

    def compute(self, s: SequenceScores) -> tuple[Tensor, dict[str, Tensor]]:
        chosen, rejected = s.pair(self.score)
        if not self.rejected_grad:
            rejected = rejected.detach()
        per_example = torch.relu(self.beta - chosen + rejected)
        return s.example_mean(per_example), {
            "hinge_active": (per_example > 0).float().mean(),
            "chosen_score": chosen.detach().mean(),
            "rejected_score": rejected.detach().mean(),
        }
