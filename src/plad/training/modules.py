"""LightningModules: ``SFTModule`` (cross-entropy on references) and ``DistillModule`` (the student
trained with a calibration loss on pseudo-preference pairs).

Both push every sequence of a batch through ``sequence_logprobs`` in ONE forward pass: for pairs
the collator concatenates chosen and rejected (or the K candidates) example-major into [B*K, T].
"""

from __future__ import annotations

from typing import Any

import torch
import torchmetrics
from hydra.utils import instantiate
from omegaconf import DictConfig, OmegaConf
from torch import Tensor

from plad.checks import InputError
from plad.losses.base import CalibrationLoss, SequenceScores
from plad.models.encoding import target_counts
from plad.models.logprobs import is_encoder_decoder, sequence_logprobs
from plad.models.lora import prepare, validate_lora, validate_reference
from plad.training.on_policy import OnPolicy, replaced_column, resample
from plad.training.optimizer import GuardedStepModule, plain_optim
from plad.training.teacher_topk import check_teacher_logits, dense_teacher_logits, teacher_vocabulary

# Keys of a loss config that configure its training run, not the loss object (stripped here only):
# its learning rate (distill.lr) and on-policy share (distill.on_policy), read by configs/distill.
LOSS_RUN_KEYS = ("lr", "on_policy")


def loss_arguments(loss: dict | DictConfig) -> dict[str, Any]:
    """The loss config as constructor arguments: ``_target_`` + hyper-parameters, without run keys."""
    plain = OmegaConf.to_container(loss, resolve=True) if isinstance(loss, DictConfig) else dict(loss)
    return {k: v for k, v in plain.items() if k not in LOSS_RUN_KEYS}


def build_loss(loss: dict | DictConfig) -> CalibrationLoss:
    """The loss object of a ``configs/loss/*.yaml`` config (its ``lr`` goes to distill.lr instead)."""
    return instantiate(loss_arguments(loss))


def zero_dropout(model: torch.nn.Module) -> None:
    """Every dropout of ``model`` to 0: ``nn.Dropout`` modules and the float rates that attention
    layers apply functionally (T5Attention.dropout, LlamaAttention.attention_dropout). T5's 0.1
    would make DPO's log-ratio to the reference non-zero before any update, and scores noisy."""
    for m in model.modules():
        if isinstance(m, torch.nn.Dropout):
            m.p = 0.0
        for name, value in vars(m).items():
            if "dropout" in name and isinstance(value, float):
                setattr(m, name, 0.0)


class SFTModule(GuardedStepModule):
    """Token-averaged cross-entropy on (prompt, reference); the model is saved with save_pretrained."""

    def __init__(
        self,
        model: torch.nn.Module,
        lr: float,
        max_steps: int,
        warmup_steps: int = 0,
        weight_decay: float = 0.0,
        optim: dict | DictConfig | None = None,
        max_nonfinite: int = 10,
    ) -> None:
        super().__init__()
        self.model = model.train()  # from_pretrained returns eval mode, and Lightning keeps a module's mode
        optim = plain_optim(optim)  # saved as rebound here (see DistillModule)
        self.save_hyperparameters(ignore=["model"])  # the weights are in the state dict
        # Token-weighted mean over the whole validation split (not a mean of per-batch means).
        self.val_nll = torchmetrics.MeanMetric()

    def _nll(self, batch: dict[str, Tensor], n_tokens: Tensor | None = None) -> tuple[Tensor, Tensor]:
        """Summed NLL / ``n_tokens`` (default: this batch's token count)."""
        out = sequence_logprobs(self.model, batch["input_ids"], batch["attention_mask"], batch["labels"])
        n_tokens = (out.n_tokens.sum() if n_tokens is None else n_tokens).clamp(min=1)
        return -out.sum_logp.sum() / n_tokens, n_tokens

    def training_step(self, batch: dict[str, Tensor], batch_idx: int) -> None:
        # Token-averaged over the optimizer step's global batch (all ranks, all micro-batches).
        local = target_counts(batch, is_encoder_decoder(self.model))
        loss, _ = self._nll(batch, self.global_batch(batch, local)[1])
        if self.update(loss, batch):
            self.log("sft/loss", self.step_loss, prog_bar=True, batch_size=batch["input_ids"].shape[0])

    def validation_step(self, batch: dict[str, Tensor], batch_idx: int) -> None:
        loss, n_tokens = self._nll(batch)
        if not torch.isfinite(loss):  # one bad batch must not turn the whole validation value into NaN
            self.log("sft/val_nonfinite", 1.0, on_step=False, on_epoch=True, reduce_fx="sum")
            return
        self.val_nll.update(loss, weight=n_tokens)
        self.log("sft/val_loss", self.val_nll, prog_bar=True, on_step=False, on_epoch=True)


class DistillModule(GuardedStepModule):
    """Holds only the student (and, for white-box KD, a frozen teacher kept out of checkpoints, or
    with ``teacher_logits="topk"`` none: the batches carry its cached top-k, plad.training.teacher_topk).

    Built from paths + configs, so ``DistillModule.load_from_checkpoint(ckpt)`` rebuilds it. With
    ``lora`` the student is a PEFT model training a fresh adapter only; ``reference="adapters_off"``
    then computes DPO/IPO reference log-likelihoods with the adapters disabled (the SFT'd weights the
    pair stage scored) instead of reading the cached ``ref_logp``.
    """

    def __init__(
        self,
        student_path: str,
        loss: dict | DictConfig,
        lr: float,
        max_steps: int,
        warmup_steps: int = 0,
        weight_decay: float = 0.0,
        teacher_path: str | None = None,
        max_nonfinite: int = 10,
        optim: dict | DictConfig | None = None,
        disable_dropout: bool = True,
        lora: dict | DictConfig | None = None,
        gradient_checkpointing: bool = False,
        reference: str = "cached",
        on_policy: dict | DictConfig | None = None,
        teacher_logits: str = "online",
    ) -> None:
        super().__init__()
        from plad.models.build import load_saved

        # Configs as plain dicts: checkpoints then pickle no OmegaConf object, and the loss's ``lr``
        # (a run key) is not saved as a loss argument.
        loss, optim = loss_arguments(loss), plain_optim(optim)
        lora = OmegaConf.to_container(lora, resolve=True) if isinstance(lora, DictConfig) else lora
        if isinstance(on_policy, DictConfig):
            on_policy = OmegaConf.to_container(on_policy, resolve=True)
        validate_lora(lora, "model.student.lora")
        validate_reference(reference, lora)
        check_teacher_logits(teacher_logits)
        # Every argument above, as bound now: Lightning reads them from this frame's locals, so the
        # plain dicts are what is saved (and what ``load_from_checkpoint`` passes back).
        self.save_hyperparameters()
        student, self.tokenizer = load_saved(student_path)
        if disable_dropout:  # as TRL does: at step 0 the student scores its pairs exactly like the cached reference
            zero_dropout(student)  # before LoRA: lora.dropout stays what the spec says
        # LoRA: a fresh adapter on the SFT'd student, whose weights stay the reference (adapters off).
        self.student = prepare(student, lora, gradient_checkpointing, "model.student")
        self.student.train()  # from_pretrained returns eval mode
        self.loss_fn: CalibrationLoss = build_loss(loss)
        # On-policy batches: a sequence replaced by the current student's sample (plad.training.on_policy).
        self.on_policy = OnPolicy.from_config(on_policy)
        self.on_policy_column = (
            replaced_column(self.on_policy, type(self.loss_fn), teacher_logits) if self.on_policy else None
        )
        self.on_policy_stats = {"batches": 0, "seconds": 0.0}  # in checkpoints: totals survive a resume
        self._op_micro = (-1, 0)  # (optimizer step, micro-batches seen in it): keys the on-policy draws
        self._teacher: list[torch.nn.Module] = []  # a list keeps it out of state_dict and .parameters()
        if self.loss_fn.needs_teacher:
            if teacher_path is None:
                raise InputError("loss: this loss needs the teacher's logits, but no teacher_path was given")
            if teacher_logits == "topk":  # batches carry its cached top-k: no teacher weights held here
                teacher, (teacher_tok, self._teacher_vocab) = None, teacher_vocabulary(teacher_path)
            else:
                teacher, teacher_tok = load_saved(teacher_path)
            if hasattr(self.loss_fn, "check_compatible"):
                self.loss_fn.check_compatible(teacher_tok, self.tokenizer)
            if teacher is not None:
                self._teacher.append(teacher.eval().requires_grad_(False))

    def scores(self, batch: dict[str, Tensor]) -> SequenceScores:
        """One forward over all B*K sequences of the batch, reshaped to [B, K]."""
        B, K = batch["mask"].shape
        white_box = self.loss_fn.needs_teacher
        out = sequence_logprobs(
            self.student, batch["input_ids"], batch["attention_mask"], batch["labels"], return_logits=white_box
        )
        ref_logp = batch.get("ref_logp")
        if self.hparams.get("reference", "cached") == "adapters_off" and self.loss_fn.needs_reference:
            ref_logp = self.reference_logp(batch).view(B, K)
        teacher_logits = None
        if white_box and not self._teacher:  # teacher_logits=topk: rebuilt from the cache the batch carries
            teacher_logits = dense_teacher_logits(batch, out.labels, self._teacher_vocab)
        elif white_box:
            teacher = self._teacher[0].to(self.device)
            with torch.no_grad():
                teacher_logits = sequence_logprobs(
                    teacher, batch["input_ids"], batch["attention_mask"], batch["labels"], return_logits=True
                ).logits
        return SequenceScores(
            logp=out.sum_logp.view(B, K),
            n_tokens=out.n_tokens.view(B, K),
            ref_logp=ref_logp,
            quality=batch.get("quality"),
            mask=batch["mask"],
            n_teacher=batch.get("n_teacher"),
            logits=out.logits,
            teacher_logits=teacher_logits,
            labels=out.labels,
        )

    @torch.no_grad()
    def reference_logp(self, batch: dict[str, Tensor]) -> Tensor:
        """[B*K] log-likelihoods under the student with its LoRA adapters disabled (the SFT'd student
        the pair stage scored), in eval mode like the cached ``ref_logp``."""
        was_training = self.student.training
        self.student.eval()
        try:
            with self.student.disable_adapter():
                return sequence_logprobs(
                    self.student, batch["input_ids"], batch["attention_mask"], batch["labels"]
                ).sum_logp
        finally:
            self.student.train(was_training)

    @property
    def progress(self) -> float:
        """Optimizer steps done / max_steps (0 at the first step), for losses with a schedule."""
        return self.global_step / max(int(self.hparams.max_steps), 1)

    def _log_metrics(self, prefix: str, loss: Tensor, metrics: dict[str, Tensor], batch_size: int) -> None:
        self.log(f"{prefix}/loss", loss, prog_bar=True, batch_size=batch_size, sync_dist=prefix == "val")
        for k, v in metrics.items():
            self.log(f"{prefix}/{k}", v, prog_bar=k == "rank_acc", batch_size=batch_size, sync_dist=prefix == "val")

    def on_policy_batch(self, batch: dict[str, Any]) -> dict[str, Any]:
        """``batch``, or (on an on-policy step) it with the student-side sequence freshly sampled from
        the current student. Draws are keyed by (optimizer step, micro-batch), so a resumed run
        samples what an uninterrupted one would."""
        if self.on_policy is None:
            return batch
        step = self.global_step
        micro = self._op_micro[1] if self._op_micro[0] == step else 0
        self._op_micro = (step, micro + 1)
        size = batch["mask"].shape[0]
        if not self.on_policy.active(step, micro):
            self.log("on_policy/active", 0.0, batch_size=size)  # logged every step: the CSV shows which
            self.log("on_policy/gen_seconds", 0.0, batch_size=size)
            return batch
        batch, seconds, cut = resample(
            self.student,
            self.tokenizer,
            batch,
            self.on_policy_column,
            self.on_policy,
            self.on_policy.sample_seed(step, micro),
            is_encoder_decoder(self.student),
        )
        self.on_policy_stats["batches"] += 1
        self.on_policy_stats["seconds"] += seconds
        self.log("on_policy/active", 1.0, batch_size=size)
        self.log("on_policy/gen_seconds", seconds, batch_size=size)  # generation time, apart from training
        self.log("on_policy/cut_share", cut, batch_size=size)
        self.log("on_policy/batches", float(self.on_policy_stats["batches"]), prog_bar=True, batch_size=size)
        return batch

    def on_save_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        checkpoint["on_policy_stats"] = dict(self.on_policy_stats)

    def on_load_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        self.on_policy_stats = dict(checkpoint.get("on_policy_stats", self.on_policy_stats))

    def training_step(self, batch: dict[str, Tensor], batch_idx: int) -> None:
        batch = self.on_policy_batch(batch)
        scores = self.scores(batch)
        # Losses average over the optimizer step's global batch (all ranks, all micro-batches).
        size = self.global_batch(batch, target_counts(batch, is_encoder_decoder(self.student)))
        scores.global_examples, scores.global_first_tokens = size[0], size[1]
        scores.progress = self.progress
        loss, metrics = self.loss_fn(scores)
        # None inside an accumulation window; False when skipped (non-finite loss or gradient).
        if self.update(loss, batch):
            self._log_metrics("train", self.step_loss, metrics, batch["mask"].shape[0])

    def validation_step(self, batch: dict[str, Tensor], batch_idx: int) -> None:
        scores = self.scores(batch)
        scores.progress = self.progress
        loss, metrics = self.loss_fn(scores)
        if not torch.isfinite(loss):  # counted, kept out of val/loss so one batch cannot make it NaN
            self.log(
                "val/nonfinite", 1.0, on_step=False, on_epoch=True, reduce_fx="sum", batch_size=batch["mask"].shape[0]
            )
            return
        self._log_metrics("val", loss, metrics, batch["mask"].shape[0])
