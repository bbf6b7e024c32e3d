"""What the token-level white-box losses (kd, gkd, skew_kl, taid, dpkd) share: the teacher's and
the student's distributions over ONE vocabulary at the same target positions.

A subclass
sets ``name`` (its config name, for the one-line errors) and implements ``compute`` on
``token_logits(s)``. Like kd, ``check_compatible`` lets ``DistillModule`` refuse a teacher whose
tokenizer differs before any training; ``plad.stages.preflight.check_white_box`` refuses it from
the config even earlier (it reads ``needs_teacher``).
"""

from __future__ import annotations

from typing import Any, ClassVar

import torch
from torch import Tensor

from plad.checks import InputError
from plad.losses.base import CalibrationLoss, SequenceScores
from plad.models.logprobs import IGNORE_INDEX


def at_least_float32(x: Tensor) -> Tensor:
    """bf16/fp16 logits in float32 for the softmaxes; float64 stays float64."""
    return x.to(torch.promote_types(x.dtype, torch.float32))


class WhiteBoxLoss(CalibrationLoss):
    """Base of the losses that read ``logits`` / ``teacher_logits`` / ``labels`` ([N, L, V], [N, L])."""

    kind = "baseline"
    inputs = ("chosen",)
    needs_teacher = True
    name: ClassVar[str] = "white_box"  # the loss's config name, in error messages: loss=<name>

    def __init__(self, vocab_size: int | None = None, reg_weight: float = 0.0) -> None:
        super().__init__(reg_weight)
        if vocab_size is not None and vocab_size < 1:
            raise InputError(f"loss.vocab_size: expected a positive int or null, got {vocab_size}")
        self.vocab_size = vocab_size

    @classmethod
    def check_compatible(cls, teacher_tok: Any, student_tok: Any) -> int:
        """Raise (one line) unless both tokenizers map the same strings to the same ids; return the vocab size."""
        teacher_vocab, student_vocab = teacher_tok.get_vocab(), student_tok.get_vocab()
        if teacher_vocab != student_vocab:
            only_t = len(teacher_vocab.keys() - student_vocab.keys())
            only_s = len(student_vocab.keys() - teacher_vocab.keys())
            raise InputError(
                f"loss={cls.name} needs teacher and student to share a tokenizer: vocabularies differ "
                f"(teacher {len(teacher_vocab)}, student {len(student_vocab)} tokens; {only_t} only in "
                f"teacher, {only_s} only in student); use a black-box loss (seqkd, ranking, ...) instead"
            )
        return len(student_vocab)

    def token_logits(self, s: SequenceScores) -> tuple[Tensor, Tensor, Tensor]:
        """(student [N, L, V], teacher [N, L, V] detached, mask [N, L] = labels != -100), checked,
        cut to ``vocab_size`` and in at least float32."""
        student, teacher, labels = s.logits, s.teacher_logits, s.labels
        assert student is not None and teacher is not None and labels is not None  # checked in forward
        if self.vocab_size is not None:
            student, teacher = student[..., : self.vocab_size], teacher[..., : self.vocab_size]
        if student.shape[-1] != teacher.shape[-1]:
            raise InputError(
                f"loss={self.name} needs teacher and student to share a tokenizer: logits have vocab sizes "
                f"{teacher.shape[-1]} (teacher) and {student.shape[-1]} (student); set loss.vocab_size "
                "if only the embedding padding differs"
            )
        if student.shape[:-1] != teacher.shape[:-1] or student.shape[:-1] != labels.shape:
            raise InputError(
                f"teacher_logits: expected the student's [N, L] = {list(labels.shape)} "
                f"positions, got student {list(student.shape[:-1])}, teacher {list(teacher.shape[:-1])}"
            )
        return at_least_float32(student), at_least_float32(teacher.detach()), labels != IGNORE_INDEX

    @staticmethod
    def top1_agree(student: Tensor, teacher: Tensor) -> Tensor:
        """Share of positions ([M, V] rows) where student and teacher put their mode on the same token."""
        agree = (student.argmax(-1) == teacher.argmax(-1)).float()
        return agree.mean() if agree.numel() else torch.zeros((), device=student.device)
