"""Quality-aware ranking loss: the required margin grows with the task-quality gap of the pair.

    L = max(0, beta * (R(y+) - R(y-)) - s(y+|x) + s(y-|x)),   R = task quality in [0, 1]

A pair whose student output is *better* than the teacher's (negative gap) only asks that the
student not prefer y+ by more than beta * |gap|, so noisy pseudo-preferences are softened.
"""

from __future__ import annotations

import torch
from torch import Tensor

from plad.checks import InputError
from plad.losses.base import CalibrationLoss, SequenceScores, check_score_mode


class MarginLoss(CalibrationLoss):
    kind = "plad"
    order = 50
    inputs = ("chosen", "rejected")
    needs_quality = True

    def __init__(self, beta: float = 1.0, score: str = "mean", reg_weight: float = 0.0) -> None:
        super().__init__(reg_weight)
        if beta < 0:
            raise InputError(f"loss.beta: expected a margin scale >= 0, got {beta}")
        self.beta = float(beta)
        self.score = check_score_mode(score)

    def compute(self, s: SequenceScores) -> tuple[Tensor, dict[str, Tensor]]:
        chosen, rejected = s.pair(self.score)
        assert s.quality is not None  # checked in forward
        gap = (s.quality[:, 0] - s.quality[:, 1]).to(chosen.dtype)
        per_example = torch.relu(self.beta * gap - chosen + rejected)
        return s.example_mean(per_example), {
            "hinge_active": (per_example > 0).float().mean(),
            "quality_gap": gap.detach().mean(),
            "chosen_score": chosen.detach().mean(),
            "rejected_score": rejected.detach().mean(),
        }
