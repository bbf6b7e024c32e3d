"""DistiLLM's skew KL (Ko et al. 2024): KL against a mixture of teacher and student, whose
gradient stays bounded where one of the two distributions is near zero. On y+ (the cached teacher
samples), with p = softmax(z_teacher), q = softmax(z_student):

    forward (alpha-SKL):  L_t = -sum_v p * log(alpha * p + (1 - alpha) * q)
                               = KL(p || alpha p + (1 - alpha) q) + H(p)
    reverse (alpha-SRKL): L_t = KL(q || (1 - alpha) p + alpha q)
    L = sum over target positions (labels != -100) / #target tokens

As the reference, the forward value is a cross-entropy: it includes the teacher's entropy H(p), a
constant for the student (the gradient is the skew KL's), so it does not reach 0 when q = p. The
mixture inside the reverse loss is not detached (DistiLLM-2's is, see ``dpkd``). Reference:
``skewed_forward_kl`` / ``skewed_reverse_kl`` (their ``lam`` = ``alpha``, default 0.1) in
jongwooko/distillm, distillm/losses.py @ d47e77ff9d27721783b32213be38c1204230cc0a (file last
changed in 17c0f98bc263b1861a02d5df578c84aea652ee65); tests/test_losses_neighbours.py transcribes
both. The log of the mixture is taken as a logsumexp of log-probabilities (same value, no log 0).

Not here: DistiLLM's adaptive off-policy approach (a replay buffer of student samples whose share
grows with the validation loss) needs student samples drawn during training, the on-policy data
option of issue 27 (item 1).
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import Tensor

from plad.checks import InputError, is_number
from plad.losses.base import SequenceScores
from plad.losses.white_box import WhiteBoxLoss

DIRECTIONS = ("forward", "reverse")


def log_mixture(log_a: Tensor, log_b: Tensor, weight_a: float) -> Tensor:
    """log(weight_a * a + (1 - weight_a) * b) from log a and log b (0 <= weight_a < 1)."""
    if weight_a == 0:
        return log_b
    return torch.logsumexp(torch.stack([log_a + math.log(weight_a), log_b + math.log1p(-weight_a)]), dim=0)


def xlogy_rows(p_log: Tensor, other_log: Tensor) -> Tensor:
    """[M] sum_v p * other per row, with p = exp(p_log) and 0 * anything = 0 (a -inf logit gives no
    nan; a nan logit still does)."""
    p = p_log.exp()
    return torch.where(p == 0, 0.0, p * other_log).sum(-1)


class SkewKLLoss(WhiteBoxLoss):
    kind = "baseline"
    order = 32  # with kd (30): the white-box token-level losses
    inputs = ("chosen",)
    needs_teacher = True
    name = "skew_kl"

    def __init__(
        self, alpha: float = 0.1, direction: str = "forward", vocab_size: int | None = None, reg_weight: float = 0.0
    ) -> None:
        super().__init__(vocab_size, reg_weight)
        if not is_number(alpha) or not 0.0 <= alpha < 1.0:
            raise InputError(f"loss.alpha: expected a value in [0, 1), got {alpha}")
        if direction not in DIRECTIONS:
            raise InputError(f"loss.direction: expected one of {list(DIRECTIONS)}, got {direction!r}")
        self.alpha, self.direction = float(alpha), direction

    def compute(self, s: SequenceScores) -> tuple[Tensor, dict[str, Tensor]]:
        student, teacher, mask = self.token_logits(s)
        log_q = F.log_softmax(student[mask], dim=-1)
        log_p = F.log_softmax(teacher[mask], dim=-1)
        if self.direction == "forward":  # cross-entropy of p against alpha p + (1 - alpha) q
            per_token = -xlogy_rows(log_p, log_mixture(log_p, log_q, self.alpha))
        else:  # KL(q || (1 - alpha) p + alpha q)
            per_token = xlogy_rows(log_q, log_q) - xlogy_rows(log_q, log_mixture(log_q, log_p, self.alpha))
        loss = s.token_mean(per_token.sum(), mask.sum())
        return loss, {"skew_kl": loss.detach(), "top1_agree": self.top1_agree(log_q, log_p)}
