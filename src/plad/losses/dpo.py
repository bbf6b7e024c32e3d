"""DPO (sigmoid) against the initial student as reference, with optional conservative smoothing.

    h = (log pi(y+) - log ref(y+)) - (log pi(y-) - log ref(y-))      (summed log-likelihoods)
    L = -(1 - eps) * log sigmoid(beta * h) - eps * log sigmoid(-beta * h)

eps = label_smoothing is cDPO's probability that a pair is flipped (TRL's CPO ``sigmoid``; TRL's
DPOTrainer ``sigmoid`` has no smoothing and equals eps = 0). ``ref_logp`` is precomputed once.
"""

from __future__ import annotations

import torch.nn.functional as F
from torch import Tensor

from plad.checks import InputError, is_number, number
from plad.losses.base import CalibrationLoss, SequenceScores


class DPOLoss(CalibrationLoss):
    kind = "baseline"
    order = 70
    inputs = ("chosen", "rejected")
    needs_reference = True

    def __init__(self, beta: float = 0.1, label_smoothing: float = 0.0, reg_weight: float = 0.0) -> None:
        super().__init__(reg_weight)
        number(beta, "loss.beta", positive=True)
        if not is_number(label_smoothing) or not 0.0 <= label_smoothing < 0.5:
            raise InputError(f"loss.label_smoothing: expected a value in [0, 0.5), got {label_smoothing}")
        self.beta = float(beta)
        self.label_smoothing = float(label_smoothing)

    def compute(self, s: SequenceScores) -> tuple[Tensor, dict[str, Tensor]]:
        chosen, rejected = s.pair("sum")
        assert s.ref_logp is not None  # checked in forward
        reward_chosen = self.beta * (chosen - s.ref_logp[:, 0])
        reward_rejected = self.beta * (rejected - s.ref_logp[:, 1])
        logits = reward_chosen - reward_rejected
        eps = self.label_smoothing
        per_example = -(1 - eps) * F.logsigmoid(logits) - eps * F.logsigmoid(-logits)
        return s.example_mean(per_example), {
            "reward_chosen": reward_chosen.detach().mean(),
            "reward_rejected": reward_rejected.detach().mean(),
            "reward_acc": (logits > 0).float().mean().detach(),
        }
