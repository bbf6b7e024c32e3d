"""Supervised cross-entropy baselines: token-averaged cross-entropy on one sequence per example.

    L = -sum_b log p(y_b | x_b) / sum_b |y_b|

Averaging over all tokens in the batch (not per sequence) weights every token equally, as the
usual causal-LM loss does. ``SFTLoss`` is the "more steps" control of the paper's table: it keeps
training the initial student on the LABELED train split, so a distillation method has to beat
extra supervised steps, not just the initial student. ``SFTOracleLoss`` trains on the references
of the unlabeled distillation prompts instead: labels PLaD never sees, hence an oracle row.
"""

from __future__ import annotations

from torch import Tensor

from plad.checks import InputError
from plad.losses.base import CalibrationLoss, SequenceScores


class SFTLoss(CalibrationLoss):
    """Continued SFT on the labeled train split's (prompt, reference) rows."""

    kind = "baseline"
    order = 10
    inputs = ("reference",)
    data_source = "train_split"

    def compute(self, s: SequenceScores) -> tuple[Tensor, dict[str, Tensor]]:
        if s.logp.dim() != 2 or s.logp.shape[1] < 1:
            raise InputError(f"logp: expected shape [B, 1], got {list(s.logp.shape)}")
        nll = s.nll_first()
        return nll, {"nll": nll.detach(), "tokens": s.n_tokens[:, 0].sum().detach().float()}


class SFTOracleLoss(SFTLoss):
    """SFT on the references of the unlabeled prompts, read from the pair cache (an oracle)."""

    kind = "oracle"
    order = 100
    data_source = "pairs"
    needs_oracle_references = True
