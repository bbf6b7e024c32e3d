"""SimPO (Meng et al. 2024): reference-free, length-normalised sigmoid loss with a target margin.

    L = -(1 - eps) * log sigmoid(beta * (mean_c - mean_r) - gamma)
        - eps * log sigmoid(-(beta * (mean_c - mean_r) - gamma))

mean_* = token-averaged log-likelihood. eps = 0 is the paper's loss; eps > 0 matches TRL's CPO
``loss_type="simpo"`` with ``label_smoothing``. Defaults follow the paper (beta 2, gamma/beta 0.5).
"""

from __future__ import annotations

import math

import torch.nn.functional as F
from torch import Tensor

from plad.checks import InputError, is_number, number
from plad.losses.base import CalibrationLoss, SequenceScores


class SimPOLoss(CalibrationLoss):
    kind = "baseline"
    order = 90
    inputs = ("chosen", "rejected")

    def __init__(
        self, beta: float = 2.0, gamma: float = 1.0, label_smoothing: float = 0.0, reg_weight: float = 0.0
    ) -> None:
        super().__init__(reg_weight)
        number(beta, "loss.beta", positive=True)
        if not math.isfinite(gamma) or gamma < 0:
            raise InputError(f"loss.gamma: expected a finite margin >= 0, got {gamma}")
        if not is_number(label_smoothing) or not 0.0 <= label_smoothing < 0.5:
            raise InputError(f"loss.label_smoothing: expected a value in [0, 0.5), got {label_smoothing}")
        self.beta, self.gamma, self.label_smoothing = float(beta), float(gamma), float(label_smoothing)

    def compute(self, s: SequenceScores) -> tuple[Tensor, dict[str, Tensor]]:
        chosen, rejected = s.pair("mean")
        logits = self.beta * (chosen - rejected) - self.gamma
        eps = self.label_smoothing
        per_example = -(1 - eps) * F.logsigmoid(logits) - eps * F.logsigmoid(-logits)
        return s.example_mean(per_example), {
            "margin_met": (logits > 0).float().mean().detach(),
            "chosen_score": chosen.detach().mean(),
            "rejected_score": rejected.detach().mean(),
        }
