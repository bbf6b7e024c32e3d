"""The input every calibration loss and baseline consumes, and their common base class.

A batch holds, per example, K sequences scored by the student in one concatenated forward pass
(see ``plad.models.logprobs``). Which K sequences a loss needs is declared by ``inputs``:
``("chosen", "rejected")`` for pairwise losses (index 0 = y+, the teacher's sample; index 1 = y-,
the student's), ``("candidates",)`` for listwise ones (teacher samples first), ``("reference",)``
or ``("chosen",)`` for the cross-entropy baselines. The data module serves exactly those columns.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, ClassVar

from torch import Tensor, nn

from plad.checks import InputError

SCORE_MODES = ("mean", "sum")
LOSS_KINDS = ("plad", "baseline", "oracle")  # CalibrationLoss.kind


def check_score_mode(score: str) -> str:
    """Validate a loss's ``score`` hyper-parameter at construction time, not at the first batch."""
    if score not in SCORE_MODES:
        raise InputError(f"loss.score: expected 'mean' or 'sum', got {score!r}")
    return score


@dataclass
class SequenceScores:
    logp: Tensor  # [B, K] summed log-likelihood of each sequence under the student
    n_tokens: Tensor  # [B, K] number of scored tokens (EOS included)
    ref_logp: Tensor | None = None  # [B, K] same under the reference (initial student), precomputed
    quality: Tensor | None = None  # [B, K] task quality scores (higher is better), when available
    mask: Tensor | None = None  # [B, K] bool, False for padding candidates (listwise, ragged K)
    n_teacher: Tensor | None = None  # [B] number of leading teacher samples among the candidates
    logits: Tensor | None = None  # [B*K, L, V] student logits (white-box KD only)
    teacher_logits: Tensor | None = None  # [B*K, L, V] teacher logits aligned with ``logits``
    labels: Tensor | None = None  # [B*K, L] targets aligned with ``logits`` (-100 = ignored)
    # Size of the GLOBAL batch (all ranks, all accumulation micro-batches) that one optimizer step
    # averages over: examples, and target tokens of the first sequences. Set by the training module;
    # None = this batch alone. Every loss divides sums by these, so 2 ranks x batch b, batch 2b and
    # b x 2 accumulation steps give the same gradient (the module scales by the world size).
    global_examples: Tensor | None = None
    global_first_tokens: Tensor | None = None
    # Training progress: optimizer steps done / max_steps, set by the training module (in training
    # and validation); None outside it. Read by losses with a schedule (taid, dpkd's gradual_beta).
    progress: float | None = None

    def score(self, mode: str = "mean") -> Tensor:
        """Sequence score s(y|x): the summed or length-normalised log-likelihood."""
        if mode == "sum":
            return self.logp
        if mode == "mean":
            return self.logp / self.n_tokens.clamp(min=1)
        raise InputError(f"score: expected 'mean' or 'sum', got {mode!r}")

    def pair(self, mode: str = "mean") -> tuple[Tensor, Tensor]:
        """(s(y+|x), s(y-|x)) for pairwise losses, which need exactly two sequences per example."""
        if self.logp.dim() != 2 or self.logp.shape[1] != 2:
            raise InputError(f"logp: expected shape [B, 2] (chosen, rejected), got {list(self.logp.shape)}")
        scores = self.score(mode)
        return scores[:, 0], scores[:, 1]

    def example_mean(self, per_example: Tensor) -> Tensor:
        """Mean of a per-example loss over the global batch (this batch's share of it)."""
        if self.global_examples is None:
            return per_example.mean()
        return per_example.sum() / self.global_examples.clamp(min=1)

    def token_mean(self, total: Tensor, local_tokens: Tensor) -> Tensor:
        """``total`` (a sum over first-sequence target tokens) per target token of the global batch."""
        n = self.global_first_tokens if self.global_first_tokens is not None else local_tokens
        return total / n.clamp(min=1)

    def nll_first(self) -> Tensor:
        """Token-level cross-entropy on the first sequence (y+), averaged over its tokens."""
        return self.token_mean(-self.logp[:, 0].sum(), self.n_tokens[:, 0].sum())


class CalibrationLoss(nn.Module):
    """Maps ``SequenceScores`` to ``(loss, metrics)``; subclasses implement ``compute``.

    ``reg_weight`` adds reg_weight * cross-entropy on y+ to keep the student fluent.
    """

    inputs: ClassVar[tuple[str, ...]] = ("chosen", "rejected")
    needs_reference: ClassVar[bool] = False  # reads ``ref_logp``
    needs_quality: ClassVar[bool] = False  # reads ``quality``
    needs_teacher: ClassVar[bool] = False  # reads ``teacher_logits`` (white-box)
    # Where training data comes from: "pairs" (the pair cache of the unlabeled prompts) or
    # "train_split" (the labeled train split's (prompt, reference) rows, e.g. continued SFT).
    data_source: ClassVar[str] = "pairs"
    # Trains on references of the unlabeled prompts (an oracle): needs pairs.oracle_references=true.
    needs_oracle_references: ClassVar[bool] = False
    # How plad.report shows the loss's runs, read from the saved ``loss._target_``: "plad" rows are
    # compared against every "baseline" row (paired bootstrap on the same texts); "oracle" rows
    # (trained on labels PLaD never sees) are shown, never compared. ``order`` places the rows in
    # a table, lowest first (ties: by config name, so ranking_no_reg follows ranking). A loss that
    # declares neither is a baseline listed after the built-in losses.
    kind: ClassVar[str] = "baseline"
    order: ClassVar[int] = 1000

    def __init_subclass__(cls, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        if cls.kind not in LOSS_KINDS:  # a typo would silently drop the loss from the comparisons
            raise TypeError(f"{cls.__name__}.kind: expected one of {', '.join(LOSS_KINDS)}, got {cls.kind!r}")

    def __init__(self, reg_weight: float = 0.0) -> None:
        super().__init__()
        if reg_weight < 0:
            raise InputError(f"loss.reg_weight: expected a value >= 0, got {reg_weight}")
        self.reg_weight = reg_weight

    def compute(self, s: SequenceScores) -> tuple[Tensor, dict[str, Tensor]]:
        raise NotImplementedError

    def check_inputs(self, s: SequenceScores) -> None:
        """Fail early, naming the missing field, when a batch lacks what this loss declares it reads."""
        needed = {
            "ref_logp": self.needs_reference,
            "quality": self.needs_quality,
            "teacher_logits": self.needs_teacher,
            "logits": self.needs_teacher,
            "labels": self.needs_teacher,
        }
        for field, needs in needed.items():
            if needs and getattr(s, field) is None:
                raise InputError(f"{field}: {type(self).__name__} needs it in SequenceScores, got None")

    def forward(self, s: SequenceScores) -> tuple[Tensor, dict[str, Tensor]]:
        self.check_inputs(s)
        loss, metrics = self.compute(s)
        if self.reg_weight > 0:
            reg = s.nll_first()
            metrics = {**metrics, "reg_nll": reg.detach()}
            loss = loss + self.reg_weight * reg
        if s.logp.shape[1] >= 2:
            m = s.score("mean")
            metrics.setdefault("rank_acc", (m[:, 0] > m[:, 1]).float().mean())
            metrics.setdefault("margin", (m[:, 0] - m[:, 1]).mean().detach())
        return loss, metrics
