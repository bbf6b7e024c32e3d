"""DistiLLM-2's contrastive distillation (Ko et al. 2025) on the existing pairs: y+ = the teacher's
sample (chosen), y- = the student's (rejected). White-box: it needs the teacher's token
distributions on BOTH sequences of a pair (DistillModule computes them for every sequence of the
batch), hence one tokenizer, like kd. With p = softmax(z_teacher), q = softmax(z_student) and
mean_y = average over the target tokens of sequence y:

``loss_type: distillm_v2`` (DistiLLM-2's objective, the default): pull q up where the teacher is
likely on y+ (skew KL) and down where the student alone is likely on y- (skew reverse KL),

    L = (2 - w) * mean_{y+} KL(p || a1 p + (1 - a1) q) + w * mean_{y-} KL(q || (1 - a2) p + a2 sg(q))

with a1 = ``alpha_chosen``, a2 = ``alpha_rejected`` (0.1 both), sg = no gradient, and w = 1, or
with ``gradual_beta`` w = 1 + 0.5 * min(1, 2 * progress) (progress = step / max_steps).

``loss_type: dpkd`` (DPKD, Li et al. 2024, as DistiLLM-2's trainer has it): DPO with the teacher as
the reference, on token-averaged log-likelihoods,

    L = -log sigmoid(beta * ((mean log q(y+) - mean log q(y-)) - (mean log p(y+) - mean log p(y-))))

Both are averaged over pairs. Reference: ``DistiLLMTrainer.kd_loss`` and ``get_batch_logps`` in
jongwooko/distillm-2, src/distillm_trainer.py @ fe4cf9bfbb4f83219dd1d69219800164b59685fa (file last
changed in 25bf280a440eafe5bd4676294e45cb8770a223fe); tests/test_losses_neighbours.py transcribes
them. Not here: the reference's adaptive alpha (``update_alpha``), which its trainer hard-codes off.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor

from plad.checks import InputError, number
from plad.losses.base import SequenceScores
from plad.losses.skew_kl import log_mixture, xlogy_rows
from plad.losses.white_box import WhiteBoxLoss

LOSS_TYPES = ("distillm_v2", "dpkd")


class DPKDLoss(WhiteBoxLoss):
    kind = "baseline"
    order = 34  # with kd (30): the white-box losses (this one contrasts y+ with y-)
    inputs = ("chosen", "rejected")
    needs_teacher = True
    name = "dpkd"

    def __init__(
        self,
        loss_type: str = "distillm_v2",
        alpha_chosen: float = 0.1,
        alpha_rejected: float = 0.1,
        gradual_beta: bool = False,
        beta: float = 0.1,
        vocab_size: int | None = None,
        reg_weight: float = 0.0,
    ) -> None:
        super().__init__(vocab_size, reg_weight)
        if loss_type not in LOSS_TYPES:
            raise InputError(f"loss.loss_type: expected one of {list(LOSS_TYPES)}, got {loss_type!r}")
        for field, value in (("alpha_chosen", alpha_chosen), ("alpha_rejected", alpha_rejected)):
            if not 0.0 < value < 1.0:
                raise InputError(f"loss.{field}: expected a value in (0, 1), got {value}")
        if not isinstance(gradual_beta, bool):
            raise InputError(f"loss.gradual_beta: expected true or false, got {gradual_beta!r}")
        number(beta, "loss.beta", positive=True)
        self.loss_type, self.gradual_beta = loss_type, gradual_beta
        self.alpha_chosen, self.alpha_rejected, self.beta = float(alpha_chosen), float(alpha_rejected), float(beta)

    def weight_rejected(self, progress: float | None) -> float:
        """w of distillm_v2: 1, or with ``gradual_beta`` 1 -> 1.5 over the first half of training."""
        if not self.gradual_beta or progress is None:
            return 1.0
        return 1.0 + 0.5 * min(1.0, 2 * progress)

    def compute(self, s: SequenceScores) -> tuple[Tensor, dict[str, Tensor]]:
        if s.logp.dim() != 2 or s.logp.shape[1] != 2:
            raise InputError(f"logp: expected shape [B, 2] (chosen, rejected), got {list(s.logp.shape)}")
        student, teacher, mask = self.token_logits(s)
        B, L = s.logp.shape[0], mask.shape[-1]
        log_q = F.log_softmax(student, dim=-1).view(B, 2, L, -1)
        log_p = F.log_softmax(teacher, dim=-1).view(B, 2, L, -1)
        mask = mask.view(B, 2, L)
        n = mask.sum(-1).clamp(min=1)  # [B, 2]

        def seq_mean(per_token: Tensor, k: int) -> Tensor:  # [B, L] -> [B] over sequence k's targets
            return torch.where(mask[:, k], per_token, 0.0).sum(-1) / n[:, k]

        if self.loss_type == "dpkd":
            assert s.labels is not None  # checked in forward
            labels = torch.where(mask, s.labels.view(B, 2, L), 0).unsqueeze(-1)  # any index where ignored
            # [B, 2] token-averaged log-likelihoods of (y+, y-) under the student and the teacher
            mean_q = torch.where(mask, log_q.gather(-1, labels).squeeze(-1), 0.0).sum(-1) / n
            mean_p = torch.where(mask, log_p.gather(-1, labels).squeeze(-1), 0.0).sum(-1) / n
            logits = (mean_q[:, 0] - mean_q[:, 1]) - (mean_p[:, 0] - mean_p[:, 1])
            per_example = -F.logsigmoid(self.beta * logits)
            return s.example_mean(per_example), {
                "dpkd_logits": logits.detach().mean(),
                "reward_acc": (logits > 0).float().mean().detach(),
            }
        # distillm_v2: skew KL on y+ (k = 0), skew reverse KL on y- (k = 1) with the student's share detached
        p_c, q_c, p_r, q_r = log_p[:, 0], log_q[:, 0], log_p[:, 1], log_q[:, 1]
        kl_chosen = xlogy_rows(p_c, p_c) - xlogy_rows(p_c, log_mixture(p_c, q_c, self.alpha_chosen))
        kl_rejected = xlogy_rows(q_r, q_r) - xlogy_rows(q_r, log_mixture(q_r.detach(), p_r, self.alpha_rejected))
        chosen, rejected = seq_mean(kl_chosen, 0), seq_mean(kl_rejected, 1)
        w = self.weight_rejected(s.progress)
        per_example = (2 - w) * chosen + w * rejected
        return s.example_mean(per_example), {
            "skl_chosen": chosen.detach().mean(),
            "srkl_rejected": rejected.detach().mean(),
        }
