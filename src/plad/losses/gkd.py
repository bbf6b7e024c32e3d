"""GKD (Agarwal et al. 2024, eq. 1): generalised Jensen-Shannon divergence between the teacher's
and the student's token distributions, here on the cached teacher samples y+ (off-policy).

With p = softmax(z_teacher / T), q = softmax(z_student / T) and m = beta * p + (1 - beta) * q:

    JSD_beta = beta * KL(p || m) + (1 - beta) * KL(q || m)        (0 < beta < 1)
    beta = 0: KL(p || q) (forward KL, = kd at T = 1);   beta = 1: KL(q || p) (reverse KL)
    L = sum over target positions (labels != -100) / #target tokens

exactly as TRL computes it, special cases at 0 and 1 included (no T^2 factor; TRL's GKDTrainer
calls it with T = 1): ``GKDTrainer.generalized_jsd_loss`` in huggingface/trl,
trl/experimental/gkd/gkd_trainer.py @ f2cd57710ae345ea6428ae95363267fcf38a3dc8 (file last changed
in 707a7172e44425758570f274963c52aee80da858). tests/test_losses_neighbours.py transcribes it and
also calls TRL's own function when trl is installed.

Why: GKD is the generalised-divergence baseline the PLaD comparison needs next to kd (beta = 0).
TRL's on-policy share ``lmbda`` (the fraction of batches whose sequences the current student
samples) is a property of the data, not of this loss: it belongs to the on-policy data option
(issue 27, item 1). Until then every sequence is a cached teacher sample, i.e. lmbda = 0.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor

from plad.checks import number, share
from plad.losses.base import SequenceScores
from plad.losses.white_box import WhiteBoxLoss


def generalized_jsd(student: Tensor, teacher: Tensor, beta: float) -> Tensor:
    """[M] JSD_beta per position from [M, V] student and teacher log-probabilities (TRL's formula)."""
    if beta == 0:
        return F.kl_div(student, teacher, reduction="none", log_target=True).sum(-1)
    if beta == 1:
        return F.kl_div(teacher, student, reduction="none", log_target=True).sum(-1)
    b = torch.tensor(beta, dtype=student.dtype, device=student.device)
    mixture = torch.logsumexp(torch.stack([student + torch.log1p(-b), teacher + torch.log(b)]), dim=0)
    kl_teacher = F.kl_div(mixture, teacher, reduction="none", log_target=True).sum(-1)
    kl_student = F.kl_div(mixture, student, reduction="none", log_target=True).sum(-1)
    return b * kl_teacher + (1 - b) * kl_student


class GKDLoss(WhiteBoxLoss):
    kind = "baseline"
    order = 31  # with kd (30): the white-box token-level losses
    inputs = ("chosen",)
    needs_teacher = True
    name = "gkd"

    def __init__(
        self, beta: float = 0.5, temperature: float = 1.0, vocab_size: int | None = None, reg_weight: float = 0.0
    ) -> None:
        super().__init__(vocab_size, reg_weight)
        self.beta = share(beta, "loss.beta")
        self.temperature = float(number(temperature, "loss.temperature", positive=True))

    def compute(self, s: SequenceScores) -> tuple[Tensor, dict[str, Tensor]]:
        student, teacher, mask = self.token_logits(s)
        t = self.temperature
        log_q = F.log_softmax(student[mask] / t, dim=-1)
        log_p = F.log_softmax(teacher[mask] / t, dim=-1)
        jsd = generalized_jsd(log_q, log_p, self.beta)
        loss = s.token_mean(jsd.sum(), mask.sum())
        return loss, {"jsd": loss.detach(), "top1_agree": self.top1_agree(log_q, log_p)}
