"""White-box token-level KD (Hinton et al. 2015): forward KL from the teacher on y+ tokens.

    L = T^2 * sum_t KL(softmax(z_teacher_t / T) || softmax(z_student_t / T)) / #tokens

over positions with labels != -100. It compares distributions over one vocabulary, so teacher and
student must share a tokenizer; ``check_compatible`` lets the pipeline fail before any training.
Models with one tokenizer often pad their embedding matrices to different widths: set
``vocab_size`` (e.g. the value ``check_compatible`` returns) to compare only the real tokens.
"""

from __future__ import annotations

from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor

from plad.checks import InputError
from plad.losses.base import CalibrationLoss, SequenceScores
from plad.models.logprobs import IGNORE_INDEX


class KDLoss(CalibrationLoss):
    kind = "baseline"
    order = 30
    inputs = ("chosen",)
    needs_teacher = True

    def __init__(self, temperature: float = 1.0, vocab_size: int | None = None, reg_weight: float = 0.0) -> None:
        super().__init__(reg_weight)
        if temperature <= 0:
            raise InputError(f"loss.temperature: expected a value > 0, got {temperature}")
        if vocab_size is not None and vocab_size < 1:
            raise InputError(f"loss.vocab_size: expected a positive int or null, got {vocab_size}")
        self.temperature = float(temperature)
        self.vocab_size = vocab_size

    @staticmethod
    def check_compatible(teacher_tok: Any, student_tok: Any) -> int:
        """Raise unless both tokenizers map the same strings to the same ids; return the vocab size."""
        teacher_vocab, student_vocab = teacher_tok.get_vocab(), student_tok.get_vocab()
        if teacher_vocab != student_vocab:
            only_t = len(teacher_vocab.keys() - student_vocab.keys())
            only_s = len(student_vocab.keys() - teacher_vocab.keys())
            raise InputError(
                "loss=kd needs teacher and student to share a tokenizer: vocabularies differ "
                f"(teacher {len(teacher_vocab)}, student {len(student_vocab)} tokens; {only_t} only in "
                f"teacher, {only_s} only in student); use a black-box loss (seqkd, ranking, ...) instead"
            )
        return len(student_vocab)

    def compute(self, s: SequenceScores) -> tuple[Tensor, dict[str, Tensor]]:
        student, teacher, labels = s.logits, s.teacher_logits, s.labels
        assert student is not None and teacher is not None and labels is not None  # checked in forward
        if self.vocab_size is not None:
            student, teacher = student[..., : self.vocab_size], teacher[..., : self.vocab_size]
        if student.shape[-1] != teacher.shape[-1]:
            raise InputError(
                "loss=kd needs teacher and student to share a tokenizer: logits have vocab sizes "
                f"{teacher.shape[-1]} (teacher) and {student.shape[-1]} (student); set loss.vocab_size "
                "if only the embedding padding differs"
            )
        if student.shape[:-1] != teacher.shape[:-1] or student.shape[:-1] != labels.shape:
            raise InputError(
                f"teacher_logits: expected the student's [N, L] = {list(labels.shape)} "
                f"positions, got student {list(student.shape[:-1])}, teacher {list(teacher.shape[:-1])}"
            )
        mask = labels != IGNORE_INDEX
        t = self.temperature
        log_p_student = F.log_softmax(student[mask].float() / t, dim=-1)
        log_p_teacher = F.log_softmax(teacher[mask].float().detach() / t, dim=-1)
        p_teacher = log_p_teacher.exp()
        # where(): a teacher probability of exactly 0 (e.g. a -inf logit) contributes 0, not nan.
        kl = torch.where(p_teacher > 0, p_teacher * (log_p_teacher - log_p_student), 0.0).sum(-1)
        loss = s.token_mean(kl.sum(), mask.sum()) * t**2
        agree = (student[mask].argmax(-1) == teacher[mask].argmax(-1)).float()
        return loss, {
            "kl": loss.detach(),
            "top1_agree": agree.mean() if agree.numel() else torch.zeros(()),
        }
