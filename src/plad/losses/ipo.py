"""IPO (Azar et al. 2023, eq. 17) as TRL's DPOTrainer defines it: log-ratios averaged over tokens.

    h = (log pi(y+) - log ref(y+)) / |y+| - (log pi(y-) - log ref(y-)) / |y-|
    L = (h - 1 / (2 * beta))^2

TRL normalises by completion length (confirmed with the IPO authors) so beta does not depend on
output length; ``score="sum"`` gives the unnormalised paper form.
"""

from __future__ import annotations

from torch import Tensor

from plad.checks import InputError, number
from plad.losses.base import CalibrationLoss, SequenceScores, check_score_mode


class IPOLoss(CalibrationLoss):
    kind = "baseline"
    order = 80
    inputs = ("chosen", "rejected")
    needs_reference = True

    def __init__(self, beta: float = 0.1, score: str = "mean", reg_weight: float = 0.0) -> None:
        super().__init__(reg_weight)
        number(beta, "loss.beta", positive=True)
        self.beta = float(beta)
        self.score = check_score_mode(score)

    def compute(self, s: SequenceScores) -> tuple[Tensor, dict[str, Tensor]]:
        assert s.ref_logp is not None  # checked in forward
        if s.logp.dim() != 2 or s.logp.shape[1] != 2:
            raise InputError(f"logp: expected shape [B, 2] (chosen, rejected), got {list(s.logp.shape)}")
        # The reference scored the same tokens, so one length normalises both log-likelihoods.
        log_ratio = s.logp - s.ref_logp
        if self.score == "mean":
            log_ratio = log_ratio / s.n_tokens.clamp(min=1)
        h = log_ratio[:, 0] - log_ratio[:, 1]
        per_example = (h - 1 / (2 * self.beta)) ** 2
        return s.example_mean(per_example), {
            "log_ratio_gap": h.detach().mean(),
            "log_ratio_chosen": log_ratio[:, 0].detach().mean(),
            "log_ratio_rejected": log_ratio[:, 1].detach().mean(),
        }
