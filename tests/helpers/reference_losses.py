"""The reference implementations of the neighbouring distillation losses, transcribed from their
repositories (code copied as it is; the only edits are marked ``# EDIT``): what
tests/test_losses_neighbours.py compares plad's modules with, on fixed tensors.

- TRL:         huggingface/trl @ f2cd57710ae345ea6428ae95363267fcf38a3dc8,
               trl/experimental/gkd/gkd_trainer.py, GKDTrainer.generalized_jsd_loss
- DistiLLM:    jongwooko/distillm @ d47e77ff9d27721783b32213be38c1204230cc0a,
               distillm/losses.py, skewed_forward_kl / skewed_reverse_kl
- TAID:        SakanaAI/TAID @ a0628922c16169d1fca10ddf61849e0693289cf8,
               src/distil_losses/fkl.py forward_kl, src/distil_losses/taid.py TAID
- DistiLLM-2:  jongwooko/distillm-2 @ fe4cf9bfbb4f83219dd1d69219800164b59685fa,
               src/distillm_trainer.py, DistiLLMTrainer.get_batch_logps / kd_loss
"""
# The references' own style (bare except, Optional) is kept:
# ruff: noqa: E722, UP045

from __future__ import annotations

import math
from typing import Optional

import torch
import torch.nn.functional as F
from torch import nn


# --------------------------------------------------------------------------- TRL GKD
def generalized_jsd_loss(
    student_logits,
    teacher_logits,
    labels=None,
    beta=0.5,
    temperature=1.0,
    reduction="batchmean",
    num_items_in_batch=None,
):
    # Apply temperature scaling
    student_logits = student_logits / temperature
    teacher_logits = teacher_logits / temperature

    # Compute log probabilities for student and probabilities for teacher
    student_log_probs = F.log_softmax(student_logits, dim=-1)
    teacher_log_probs = F.log_softmax(teacher_logits, dim=-1)

    if beta == 0:
        jsd = F.kl_div(student_log_probs, teacher_log_probs, reduction="none", log_target=True)
    elif beta == 1:
        jsd = F.kl_div(teacher_log_probs, student_log_probs, reduction="none", log_target=True)
    else:
        # Compute the log of the mixture distribution
        # log(a + b) = log(exp(log(a)) + exp(log(b))) -> for mixture
        beta = torch.tensor(beta, dtype=student_log_probs.dtype, device=student_log_probs.device)
        mixture_log_probs = torch.logsumexp(
            torch.stack([student_log_probs + torch.log1p(-beta), teacher_log_probs + torch.log(beta)]),
            dim=0,
        )

        # Compute KL divergences using F.kl_div
        # PyTorch differs from the standard mathematical definition, so the order of the probability distributions is swapped compared to that defined in the paper.
        kl_teacher = F.kl_div(mixture_log_probs, teacher_log_probs, reduction="none", log_target=True)
        kl_student = F.kl_div(mixture_log_probs, student_log_probs, reduction="none", log_target=True)

        # Compute the Generalized Jensen-Shannon Divergence
        jsd = beta * kl_teacher + (1 - beta) * kl_student

    # Masking
    if labels is not None:
        mask = labels != -100
        jsd = jsd[mask]

    # Apply reduction
    if num_items_in_batch is not None:
        # Normalize by the global number of valid tokens for gradient-accumulation-correct loss (see issue #4719).
        jsd_sum = jsd.sum()
        if isinstance(num_items_in_batch, torch.Tensor):
            num_items_in_batch = num_items_in_batch.to(jsd_sum.device)
        return jsd_sum / num_items_in_batch
    if reduction == "batchmean":
        # clamp_min(1) avoids 0/0 -> nan when a sample has no unmasked positions
        # (e.g. completion fully truncated). jsd[mask] is empty -> jsd.sum() == 0,
        # so 0/1 == 0 with a valid grad path.
        denom = mask.sum().clamp_min(1) if labels is not None else max(jsd.size(0), 1)
        return jsd.sum() / denom
    elif reduction == "sum":
        return jsd.sum()
    elif reduction == "mean":
        return jsd.mean()
    else:
        return jsd


# --------------------------------------------------------------------------- DistiLLM
def skewed_forward_kl(logits, teacher_logits, no_model_batch, lam=0.1):
    teacher_probs = F.softmax(teacher_logits, dim=-1, dtype=torch.float32)
    student_probs = F.softmax(logits, dim=-1, dtype=torch.float32)
    mixed_probs = lam * teacher_probs + (1 - lam) * student_probs
    mixed_logprobs = torch.log(mixed_probs)

    mask = (no_model_batch["label"] != -100).int()
    inf_mask = torch.isinf(logits) | torch.isinf(teacher_logits)

    prod_probs = torch.masked_fill(teacher_probs * mixed_logprobs, inf_mask, 0)
    x = torch.sum(prod_probs, dim=-1).view(-1)
    distil_loss = -torch.sum(x * mask.view(-1), dim=0) / torch.sum(mask.view(-1), dim=0)
    return distil_loss


def skewed_reverse_kl(logits, teacher_logits, no_model_batch, lam=0.1):
    teacher_probs = F.softmax(teacher_logits, dim=-1, dtype=torch.float32)
    student_probs = F.softmax(logits, dim=-1, dtype=torch.float32)
    mixed_probs = (1 - lam) * teacher_probs + lam * student_probs

    student_logprobs = F.log_softmax(logits, dim=-1, dtype=torch.float32)
    mixed_logprobs = torch.log(mixed_probs)

    mask = (no_model_batch["label"] != -100).int()
    inf_mask = torch.isinf(logits) | torch.isinf(teacher_logits)

    prod_probs = torch.masked_fill(student_probs * mixed_logprobs, inf_mask, 0)
    prod_probs -= torch.masked_fill(student_probs * student_logprobs, inf_mask, 0)
    x = torch.sum(prod_probs, dim=-1).view(-1)
    distil_loss = -torch.sum(x * mask.view(-1), dim=0) / torch.sum(mask.view(-1), dim=0)
    return distil_loss


# --------------------------------------------------------------------------- TAID
def forward_kl(
    logits: torch.Tensor,
    teacher_logits: torch.Tensor,
    mask: torch.Tensor,
    teacher_probs: Optional[torch.Tensor] = None,
    student_logprobs: Optional[torch.Tensor] = None,
) -> torch.Tensor:
    if teacher_probs is None:
        teacher_probs = F.softmax(teacher_logits, dim=-1, dtype=torch.float32)
    if student_logprobs is None:
        student_logprobs = F.log_softmax(logits, dim=-1, dtype=torch.float32)
    inf_mask = torch.isinf(logits)
    prod_probs = torch.masked_fill(teacher_probs * student_logprobs, inf_mask, 0)
    x = torch.sum(prod_probs, dim=-1).view(-1)
    distil_loss = -torch.sum(x * mask.view(-1), dim=0) / torch.sum(mask.view(-1), dim=0)
    return distil_loss


class TAID(nn.Module):  # EDIT: DistilLoss (a bare nn.Module) -> nn.Module
    def __init__(
        self,
        t_start: float = 0.4,
        t_end: float = 1.0,
        alpha: float = 5e-4,
        beta: float = 0.99,
        disable_adaptive: bool = False,
    ):
        super().__init__()
        # validation
        assert 0.0 <= t_start < 1.0
        assert 0.0 < t_end <= 1.0
        assert 0.0 <= alpha <= 1.0

        self.t_start = t_start
        self.t_end = t_end
        self.alpha = alpha
        self.beta = beta
        self.disable_adaptive = disable_adaptive
        # EDIT: device="cuda" -> "cpu" in the three buffers
        self.register_buffer("t", torch.tensor(t_start, device="cpu", dtype=torch.float32))
        self.register_buffer("prev_loss", torch.tensor(float("inf"), device="cpu", dtype=torch.float32))
        self.register_buffer("momentum", torch.zeros([], device="cpu", dtype=torch.float32))

    def update_t(self, loss: torch.Tensor, global_step: int, num_train_steps: int) -> torch.Tensor:
        if torch.isinf(self.prev_loss):
            self.prev_loss = loss
            return
        # Calculate relative change rate
        relative_change = (self.prev_loss - loss) / (self.prev_loss + 1e-15)
        # Update momentum
        self.momentum = self.beta * self.momentum + (1 - self.beta) * relative_change

        # Calculate adaptive delta
        adaptive_delta = torch.sigmoid(self.momentum)
        # Update t (ensure monotonic increase)
        progress = global_step / num_train_steps
        t_target = self.t_start + (self.t_end - self.t_start) * progress
        delta_t = self.alpha * adaptive_delta * (1 - self.t)
        t = min(self.t_end, max(t_target, self.t + delta_t)) if not self.disable_adaptive else t_target
        if not isinstance(t, torch.Tensor):
            t = torch.tensor(t, device=self.t.device, dtype=self.t.dtype)
        self.t = t
        self.prev_loss = loss
        return delta_t

    def compute_loss(
        self,
        logits: torch.Tensor,
        teacher_logits: torch.Tensor,
        mask: torch.Tensor,
    ):
        p_t = (1 - self.t) * logits.detach() + self.t * teacher_logits
        p_t = F.softmax(p_t, dim=-1, dtype=torch.float32)
        distil_loss = forward_kl(
            logits=logits,
            teacher_logits=teacher_logits,
            mask=mask,
            teacher_probs=p_t,
        )
        return distil_loss

    def forward(
        self,
        lightning_module,
        logits: torch.Tensor,
        teacher_logits: torch.Tensor,
        mask: torch.Tensor,
        **kwargs,
    ) -> torch.Tensor:
        # compute kd loss
        loss = self.compute_loss(logits, teacher_logits, mask)

        # update t
        delta_t = self.update_t(
            loss.detach().clone(),
            global_step=lightning_module.trainer.global_step,
            num_train_steps=lightning_module.trainer.estimated_stepping_batches,
        )

        loss_dict = {
            "distil_loss": loss,
            "tiki_t": self.t,
            "delta_t": delta_t,
        }
        return loss_dict


# --------------------------------------------------------------------------- DistiLLM-2
def kd_loss(
    self,
    policy_chosen_logps: torch.FloatTensor,
    policy_rejected_logps: torch.FloatTensor,
    reference_chosen_logps: torch.FloatTensor,
    reference_rejected_logps: torch.FloatTensor,
    chosen_position_kl: torch.FloatTensor,
    rejected_position_kl: torch.FloatTensor,
):  # EDIT: a DistiLLMTrainer method; ``self`` is a namespace with the attributes it reads
    if self.loss_type == "dpkd":
        pi_logratios = policy_chosen_logps - policy_rejected_logps
        ref_logratios = reference_chosen_logps - reference_rejected_logps

        pi_logratios = pi_logratios.to(self.accelerator.device)
        ref_logratios = ref_logratios.to(self.accelerator.device)
        logits = pi_logratios - ref_logratios
        losses = -F.logsigmoid(self.beta * logits)

    elif self.loss_type == "distillm_v1":
        losses = (chosen_position_kl + rejected_position_kl).to(self.accelerator.device)

    elif self.loss_type == "distillm_v2":
        if self.gradual_beta:
            beta = 1.0 + 0.5 * min(1.0, 2 * self.state.global_step / self.state.max_steps)
        else:
            beta = 1.0
        losses = ((2 - beta) * chosen_position_kl + beta * rejected_position_kl).to(self.accelerator.device)

    else:  # EDIT: the gkd / speculative_kd / kd / seqkd branches, not compared, left out
        raise ValueError(f"Unknown loss type: {self.loss_type}.")

    return losses


def get_batch_logps(
    logits: torch.FloatTensor,
    tea_logits: torch.FloatTensor,
    labels: torch.LongTensor,
    average_log_prob: bool = False,
    label_pad_token_id: int = -100,
    is_encoder_decoder: bool = False,
    loss_type: str = None,
    base_alpha_1: float = 0.1,
    base_alpha_2: float = 0.1,
    logp_logq: float = None,
    logq_logp: float = None,
):
    # EDIT: the reference's CUDA out-of-memory retries (``except torch.OutOfMemoryError``: the same
    # lines again after emptying the cache) and its gkd branch are left out.
    if logits.shape[:-1] != labels.shape:
        raise ValueError("Logits (batch and sequence length dim) and labels must have the same shape.")

    if not is_encoder_decoder:
        labels = labels[:, 1:].clone()
        logits = logits[:, :-1, :]
        tea_logits = tea_logits[:, :-1, :]
    loss_mask = labels != label_pad_token_id

    # dummy token; we'll ignore the losses on these tokens later
    labels[labels == label_pad_token_id] = 0

    # model
    vocab_logps = logits.log_softmax(-1)
    per_token_logps = torch.gather(vocab_logps, dim=2, index=labels.unsqueeze(2)).squeeze(2)

    # teacher model
    tea_vocab_logps = tea_logits.log_softmax(-1)
    tea_per_token_logps = torch.gather(tea_vocab_logps, dim=2, index=labels.unsqueeze(2)).squeeze(2)

    if "distillm" in loss_type:
        try:
            assert loss_type == "distillm_v2" and logp_logq is not None
            anchor = (1 - base_alpha_1) * logp_logq
            logps_logqs = ((tea_per_token_logps * loss_mask).sum(-1) / loss_mask.sum(-1)).exp() - (
                (per_token_logps * loss_mask).sum(-1) / loss_mask.sum(-1)
            ).exp()  # sentence-level
            alpha_1 = (
                torch.clip(1 - anchor / (logps_logqs + 1e-5), min=1e-2, max=base_alpha_1).unsqueeze(-1).unsqueeze(-1)
            )
        except:
            alpha_1 = base_alpha_1

        if isinstance(alpha_1, torch.Tensor):
            log_alpha_1, log_one_minus_alpha_1 = torch.log(alpha_1), torch.log(1 - alpha_1)
        else:
            log_alpha_1, log_one_minus_alpha_1 = math.log(alpha_1), math.log(1 - alpha_1)
        mix_vocab_logps = torch.logsumexp(
            torch.stack([log_alpha_1 + tea_vocab_logps, log_one_minus_alpha_1 + vocab_logps], dim=0), dim=0
        )
        tea_pos_kl = (tea_vocab_logps.exp() * (tea_vocab_logps - mix_vocab_logps)).sum(-1)
        del mix_vocab_logps

        try:
            assert loss_type == "distillm_v2" and logq_logp is not None
            anchor = (1 - base_alpha_2) * logq_logp
            logqs_logps = ((per_token_logps * loss_mask).sum(-1) / loss_mask.sum(-1)).exp() - (
                (tea_per_token_logps * loss_mask).sum(-1) / loss_mask.sum(-1)
            ).exp()  # sentence-level
            alpha_2 = (
                torch.clip(1 - anchor / (logqs_logps + 1e-5), min=1e-2, max=base_alpha_2).unsqueeze(-1).unsqueeze(-1)
            )
        except:
            alpha_2 = base_alpha_2

        if isinstance(alpha_2, torch.Tensor):
            log_alpha_2, log_one_minus_alpha_2 = torch.log(alpha_2), torch.log(1 - alpha_2)
        else:
            log_alpha_2, log_one_minus_alpha_2 = math.log(alpha_2), math.log(1 - alpha_2)
        mix_vocab_logps = torch.logsumexp(
            torch.stack([log_one_minus_alpha_2 + tea_vocab_logps, log_alpha_2 + vocab_logps.detach()], dim=0), dim=0
        )
        ref_pos_kl = (vocab_logps.exp() * (vocab_logps - mix_vocab_logps)).sum(-1)
        del mix_vocab_logps
        del tea_vocab_logps

    else:
        tea_pos_kl = (tea_vocab_logps.exp() * (tea_vocab_logps - vocab_logps)).sum(-1)  # forward kl
        ref_pos_kl = (vocab_logps.exp() * (tea_vocab_logps - vocab_logps)).sum(-1)  # reverse kl

    if average_log_prob:
        result = (
            (per_token_logps * loss_mask).sum(-1) / loss_mask.sum(-1),
            (tea_per_token_logps * loss_mask).sum(-1) / loss_mask.sum(-1),
            (tea_pos_kl * loss_mask).sum(-1) / loss_mask.sum(-1),
            (ref_pos_kl * loss_mask).sum(-1) / loss_mask.sum(-1) if ref_pos_kl is not None else None,
        )
    else:
        result = (
            (per_token_logps * loss_mask).sum(-1),
            (tea_per_token_logps * loss_mask).sum(-1),
            (tea_pos_kl * loss_mask).sum(-1),
            (ref_pos_kl * loss_mask).sum(-1) if ref_pos_kl is not None else None,
        )

    del per_token_logps
    del tea_per_token_logps
    del tea_pos_kl
    del ref_pos_kl
    return result


def distillm2_batch_loss(trainer, all_logits, tea_all_logits, concatenated_labels, len_chosen):
    """``concatenated_forward`` + ``get_batch_loss_metrics`` after the two forward passes: rows are
    [chosen..., rejected...]; ``trainer``: loss_type, beta, gradual_beta, state, accelerator."""
    all_logps, tea_all_logps, tea_pos_kl, ref_pos_kl = get_batch_logps(
        all_logits,
        tea_all_logits,
        concatenated_labels,
        average_log_prob=True,
        is_encoder_decoder=trainer.is_encoder_decoder,
        label_pad_token_id=-100,
        loss_type=trainer.loss_type,
        logp_logq=None,  # EDIT: self.logp_logq / self.logq_logp, None unless update_alpha (hard-coded False)
        logq_logp=None,
    )
    chosen_logps, tea_chosen_logps = all_logps[:len_chosen], tea_all_logps[:len_chosen]
    rejected_logps, tea_rejected_logps = all_logps[len_chosen:], tea_all_logps[len_chosen:]
    if trainer.loss_type == "distillm_v1":
        chosen_pos_kl = ref_pos_kl[:len_chosen]
    else:
        chosen_pos_kl = tea_pos_kl[:len_chosen]
    if ref_pos_kl is not None:
        rejected_pos_kl = ref_pos_kl[len_chosen:]
    else:
        rejected_pos_kl = tea_pos_kl[len_chosen:]
    losses = kd_loss(
        trainer, chosen_logps, rejected_logps, tea_chosen_logps, tea_rejected_logps, chosen_pos_kl, rejected_pos_kl
    )
    return losses.mean()
