"""Supervised fine-tuning baseline: token-averaged cross-entropy on the gold references.

    L = -sum_b log p(y_b | x_b) / sum_b |y_b|

Averaging over all tokens in the batch (not per sequence) weights every token equally, as the
usual causal-LM loss does.
"""
from __future__ import annotations

from torch import Tensor

from plad.losses.base import CalibrationLoss, SequenceScores


class SFTLoss(CalibrationLoss):
    inputs = ("reference",)

    def compute(self, s: SequenceScores) -> tuple[Tensor, dict[str, Tensor]]:
        if s.logp.dim() != 2 or s.logp.shape[1] < 1:
            raise ValueError(f"logp: expected shape [B, 1], got {list(s.logp.shape)}")
        nll = s.nll_first()
        return nll, {"nll": nll.detach(), "tokens": s.n_tokens[:, 0].sum().detach().float()}
