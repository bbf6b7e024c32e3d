"""White-box token-level KD (Hinton et al. 2015): forward KL from the teacher on y+ tokens.

    L = T^2 * sum_t KL(softmax(z_teacher_t / T) || softmax(z_student_t / T)) / #tokens

over positions with labels != -100. It compares distributions over one vocabulary, so teacher and
student must share a tokenizer; ``check_compatible`` lets the pipeline fail before any training.
Models with one tokenizer often pad their embedding matrices to different widths: set
``vocab_size`` (e.g. the value ``check_compatible`` returns) to compare only the real tokens. The
tokenizer check, the vocabulary cut and the shape checks are ``WhiteBoxLoss``'s, shared with gkd,
skew_kl, taid and dpkd.
"""

from __future__ import annotations

import torch
from torch import Tensor

from plad.checks import number
from plad.losses.base import SequenceScores
from plad.losses.white_box import WhiteBoxLoss


class KDLoss(WhiteBoxLoss):
    order = 30
    name = "kd"

    def __init__(self, temperature: float = 1.0, vocab_size: int | None = None, reg_weight: float = 0.0) -> None:
        super().__init__(vocab_size, reg_weight)
        self.temperature = float(number(temperature, "loss.temperature", positive=True))

    def compute(self, s: SequenceScores) -> tuple[Tensor, dict[str, Tensor]]:
        student, teacher, mask = self.token_logits(s)
        t = self.temperature
        log_p_student = torch.log_softmax(student[mask] / t, dim=-1)
        log_p_teacher = torch.log_softmax(teacher[mask] / t, dim=-1)
        p_teacher = log_p_teacher.exp()
        # where(): a teacher probability of exactly 0 (e.g. a -inf logit) contributes 0, not nan.
        kl = torch.where(p_teacher > 0, p_teacher * (log_p_teacher - log_p_student), 0.0).sum(-1)
        loss = s.token_mean(kl.sum(), mask.sum()) * t**2
        return loss, {"kl": loss.detach(), "top1_agree": self.top1_agree(student[mask], teacher[mask])}
