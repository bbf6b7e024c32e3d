"""TAID (Shing et al. 2025): distil towards a target that moves from the student to the teacher over
training, so the student is never asked to jump straight to a far-away teacher. On y+ (the cached
teacher samples), with t the interpolation time:

    p_t = softmax((1 - t) * sg(z_student) + t * z_teacher)     (logits interpolated; sg = no gradient)
    L   = -sum over target positions of sum_v p_t * log softmax(z_student) / #target tokens

(a cross-entropy, as the reference: KL(p_t || q) + H(p_t), same gradient). After each training
batch, t follows TAID's adaptive schedule: with the batch's loss l and the previous batch's l',

    momentum <- beta * momentum + (1 - beta) * (l' - l) / (l' + 1e-15)
    t <- min(t_end, max(t_start + (t_end - t_start) * progress, t + alpha * sigmoid(momentum) * (1 - t)))

(``adaptive: false``: t is the linear schedule alone); the first batch only records l. ``progress``
= optimizer steps done / max_steps comes in ``SequenceScores.progress`` (set by DistillModule).
t, l' and momentum are buffers, so a checkpoint resumes the schedule. Reference: class ``TAID``
(``compute_loss``, ``update_t``) in SakanaAI/TAID, src/distil_losses/taid.py, and ``forward_kl``
in src/distil_losses/fkl.py @ a0628922c16169d1fca10ddf61849e0693289cf8 (both last changed in
12c78335af20c6fce034569e0736a4b4f8d5a2fd); tests/test_losses_neighbours.py transcribes them.

Two deliberate differences: t moves only in training mode with a progress given (the reference
also moves it on validation batches, so how often one validates would change the schedule), and
not on a non-finite loss (that batch is skipped). Under accumulation t moves once per micro-batch,
as the reference's once per forward; under DDP the buffers follow rank 0 (DDP broadcasts them).
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import Tensor

from plad.checks import InputError, is_number, share
from plad.losses.base import SequenceScores
from plad.losses.white_box import WhiteBoxLoss


class TAIDLoss(WhiteBoxLoss):
    kind = "baseline"
    order = 33  # with kd (30): the white-box token-level losses
    inputs = ("chosen",)
    needs_teacher = True
    name = "taid"

    def __init__(
        self,
        t_start: float = 0.4,
        t_end: float = 1.0,
        alpha: float = 5e-4,
        beta: float = 0.99,
        adaptive: bool = True,
        vocab_size: int | None = None,
        reg_weight: float = 0.0,
    ) -> None:
        super().__init__(vocab_size, reg_weight)
        if not is_number(t_start) or not 0.0 <= t_start < 1.0:
            raise InputError(f"loss.t_start: expected a value in [0, 1), got {t_start}")
        if not is_number(t_end) or not t_start <= t_end <= 1.0:
            raise InputError(f"loss.t_end: expected a value in [t_start, 1] = [{t_start}, 1], got {t_end}")
        self.alpha, self.beta = share(alpha, "loss.alpha"), share(beta, "loss.beta")
        if not isinstance(adaptive, bool):
            raise InputError(f"loss.adaptive: expected true or false, got {adaptive!r}")
        self.t_start, self.t_end = float(t_start), float(t_end)
        self.adaptive = adaptive
        self.register_buffer("t", torch.tensor(self.t_start, dtype=torch.float32))
        self.register_buffer("prev_loss", torch.tensor(math.inf, dtype=torch.float32))
        self.register_buffer("momentum", torch.zeros((), dtype=torch.float32))

    @torch.no_grad()
    def update_t(self, loss: Tensor, progress: float) -> Tensor | None:
        """Move t after a training batch whose (token-mean) loss is ``loss``; returns the adaptive step."""
        loss = loss.detach().to(self.prev_loss)
        if torch.isinf(self.prev_loss):
            self.prev_loss.copy_(loss)
            return None
        relative_change = (self.prev_loss - loss) / (self.prev_loss + 1e-15)
        self.momentum.copy_(self.beta * self.momentum + (1 - self.beta) * relative_change)
        delta_t = self.alpha * torch.sigmoid(self.momentum) * (1 - self.t)
        t_target = self.t_start + (self.t_end - self.t_start) * progress
        if self.adaptive:
            self.t.copy_(torch.clamp(torch.clamp(self.t + delta_t, min=t_target), max=self.t_end))
        else:
            self.t.fill_(t_target)
        self.prev_loss.copy_(loss)
        return delta_t

    def compute(self, s: SequenceScores) -> tuple[Tensor, dict[str, Tensor]]:
        student, teacher, mask = self.token_logits(s)
        z_q, z_p = student[mask], teacher[mask]
        t = self.t.to(z_q.dtype)
        target = F.softmax((1 - t) * z_q.detach() + t * z_p, dim=-1)
        log_q = F.log_softmax(z_q, dim=-1)
        per_token = -torch.where(target == 0, 0.0, target * log_q).sum(-1)  # 0 log 0 = 0; nan stays nan
        total, n = per_token.sum(), mask.sum()
        loss = s.token_mean(total, n)
        metrics = {"taid_t": self.t.detach().clone(), "cross_entropy": loss.detach()}
        if self.training and s.progress is not None:
            local = total.detach() / n.clamp(min=1)  # this batch's mean, whatever the global batch
            if torch.isfinite(local):
                delta_t = self.update_t(local, s.progress)
                metrics["delta_t"] = delta_t if delta_t is not None else torch.zeros_like(self.t)
        return loss, metrics
