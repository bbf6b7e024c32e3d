"""Healing a student cut from its teacher: token-level logit distillation from the teacher's
pretrained start into the cut, on task text without labels, before copy pretraining and SFT.

    L = T^2 * sum_t KL(softmax(z_teacher_t / T) || softmax(z_student_t / T)) / #tokens

over every real (unpadded) position of plain token sequences. Why before SFT: dropping layers
leaves the kept ones reading hidden states they were not trained on; a short KD repairs the cut's
language modelling where labels are scarce (every token of every text is a target, and the target
is the teacher's whole distribution, not one token). The teacher is the PRETRAINED one: healing
uses no labels, and the SFT'd teacher's knowledge of the task is what distillation later transfers.

The checkpoint is chosen on the validation texts by their KL to the teacher at T = 1 (the
distribution the student will be judged by), every ``sft_selection.val_check_interval`` steps.
"""

from __future__ import annotations

import time
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

import lightning as L
import torch
from hydra.utils import instantiate
from omegaconf import DictConfig, OmegaConf
from torch import Tensor
from torch.utils.data import DataLoader

from plad.data.loader import ResumableLoader
from plad.models.encoding import pad_batch
from plad.training.callbacks import BestWeights
from plad.training.optimizer import GuardedStepModule, plain_optim
from plad.training.weights import trained_model

MONITOR = "heal/val_kl"


def pad_texts(seqs: Sequence[Sequence[int]], pad_token_id: int) -> dict[str, Tensor]:
    """Token id lists -> right-padded ``input_ids`` + ``attention_mask`` (every real token a target)."""
    batch = pad_batch([{"input_ids": s, "labels": []} for s in seqs], pad_token_id, encoder_decoder=False)
    return {"input_ids": batch["input_ids"], "attention_mask": batch["attention_mask"]}


class TextCollator:
    """Picklable collate_fn over token id lists."""

    def __init__(self, pad_token_id: int) -> None:
        self.pad_token_id = pad_token_id

    def __call__(self, rows: Sequence[Sequence[int]]) -> dict[str, Tensor]:
        return pad_texts(rows, self.pad_token_id)


def text_batches(seqs: Sequence[Sequence[int]], pad_token_id: int, batch_size: int) -> list[dict[str, Tensor]]:
    return [pad_texts(seqs[i : i + batch_size], pad_token_id) for i in range(0, len(seqs), batch_size)]


def token_kl(student: Any, teacher: Any, batch: dict[str, Tensor], temperature: float) -> tuple[Tensor, Tensor]:
    """(summed forward KL(teacher || student) at ``temperature``, times T^2; real token count)."""
    mask = batch["attention_mask"].bool()
    with torch.no_grad():
        t_logits = teacher(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"]).logits[mask]
    s_logits = student(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"]).logits[mask]
    vocab = min(s_logits.shape[-1], t_logits.shape[-1])  # one tokenizer; embedding widths may be padded
    log_s = torch.log_softmax(s_logits[:, :vocab].float() / temperature, dim=-1)
    log_t = torch.log_softmax(t_logits[:, :vocab].float() / temperature, dim=-1)
    kl = torch.nn.functional.kl_div(log_s, log_t, log_target=True, reduction="sum")
    return kl * temperature**2, mask.sum()


@torch.no_grad()
def mean_kl(student: Any, teacher: Any, batches: Iterable[dict[str, Tensor]]) -> float:
    """Token-averaged KL(teacher || student) at T = 1 over ``batches`` (the validation measure)."""
    was = student.training
    student.eval()
    total, n = 0.0, 0
    for batch in batches:
        kl, count = token_kl(student, teacher, batch, 1.0)
        total, n = total + float(kl), n + int(count)
    student.train(was)
    return total / max(n, 1)


class HealModule(GuardedStepModule):
    """The cut student (``model``, trained) and its frozen teacher (kept out of the state dict and
    the optimizer: a list attribute is no submodule)."""

    def __init__(
        self,
        model: torch.nn.Module,
        teacher: torch.nn.Module,
        lr: float,
        max_steps: int,
        warmup_steps: int = 0,
        weight_decay: float = 0.0,
        temperature: float = 1.0,
        optim: dict | DictConfig | None = None,
        max_nonfinite: int = 10,
    ) -> None:
        super().__init__()
        self.model = model.train()
        self._teacher = [teacher.eval().requires_grad_(False)]
        optim = plain_optim(optim)
        self.save_hyperparameters(ignore=["model", "teacher"])
        self.val_kl_sum, self.val_tokens = 0.0, 0

    def training_step(self, batch: dict[str, Tensor], batch_idx: int) -> None:
        teacher = self._teacher[0].to(self.device)
        local = torch.tensor([batch["input_ids"].shape[0], int(batch["attention_mask"].sum())], dtype=torch.float32)
        kl, _ = token_kl(self.model, teacher, batch, self.hparams.temperature)
        loss = kl / self.global_batch(batch, local)[1].clamp(min=1)  # mean over the global batch's tokens
        if self.update(loss, batch):
            self.log("heal/kl", self.step_loss, prog_bar=True, batch_size=batch["input_ids"].shape[0])

    def on_validation_epoch_start(self) -> None:
        self.val_kl_sum, self.val_tokens = 0.0, 0

    def validation_step(self, batch: dict[str, Tensor], batch_idx: int) -> None:
        kl, n = token_kl(self.model, self._teacher[0].to(self.device), batch, 1.0)
        self.val_kl_sum, self.val_tokens = self.val_kl_sum + float(kl), self.val_tokens + int(n)

    def on_validation_epoch_end(self) -> None:
        sums = torch.tensor([self.val_kl_sum, float(self.val_tokens)], device=self.device)
        if self.trainer.strategy.world_size > 1:
            sums = self.trainer.strategy.reduce(sums, reduce_op="sum")
        self.log(MONITOR, sums[0] / sums[1].clamp(min=1), prog_bar=True)


def fit_heal(
    cfg: DictConfig,
    student: Any,
    teacher: Any,
    heal: DictConfig,
    train: Sequence[Sequence[int]],
    validation: Sequence[Sequence[int]],
    pad_token_id: int,
    run_dir: Path,
    seed: int,
) -> tuple[Any, dict[str, Any]]:
    """Heal ``student`` on the token sequences ``train`` for ``heal.max_steps`` steps; returns it at
    the step of the lowest validation KL (its start counts as step 0), with the curve and timing."""
    L.seed_everything(seed, verbose=False)
    collate = TextCollator(pad_token_id)
    before = mean_kl(student, teacher, text_batches(validation, pad_token_id, heal.batch_size))
    initial = {k: v.detach().clone() for k, v in student.state_dict().items()}  # step 0 may stay the best
    module = HealModule(
        student,
        teacher,
        lr=heal.lr,
        max_steps=heal.max_steps,
        warmup_steps=heal.warmup_steps,
        weight_decay=heal.get("weight_decay", 0.0),
        temperature=heal.temperature,
        optim=cfg.get("optim"),
        max_nonfinite=OmegaConf.select(cfg, "distill.max_nonfinite", default=10),
    )
    best = BestWeights(MONITOR, cfg.sft_selection.min_delta, "min")
    trainer = instantiate(
        cfg.trainer,
        max_steps=heal.max_steps,
        logger=L.pytorch.loggers.CSVLogger(run_dir, name="heal_student"),
        callbacks=[L.pytorch.callbacks.TQDMProgressBar(refresh_rate=10), best],
        enable_checkpointing=False,
        num_sanity_val_steps=0,
        val_check_interval=min(cfg.sft_selection.val_check_interval, heal.max_steps),
        check_val_every_n_epoch=None,
    )
    start = time.perf_counter()
    trainer.fit(
        module,
        train_dataloaders=ResumableLoader(list(train), heal.batch_size, seed=seed, collate_fn=collate),
        val_dataloaders=DataLoader(list(validation), batch_size=heal.batch_size, collate_fn=collate),
    )
    healed = best.best is not None and best.best < before
    model = trained_model(trainer, student, best.state if healed else initial)
    if model is not None:  # None on ranks > 0 under FSDP/DeepSpeed
        model.eval()
    return model, {
        "seconds": time.perf_counter() - start,
        "steps": trainer.global_step,
        "texts": len(train),
        "chosen_step": best.best_step if healed else 0,
        "best_value": best.best if healed else before,
        "curve": [(0, before), *best.curve],  # validation KL to the teacher (T = 1); step 0: the cut
    }
