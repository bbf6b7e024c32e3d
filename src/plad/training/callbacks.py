"""Callbacks of the SFT stage, which chooses its checkpoint on the validation split
(``configs/callbacks/`` holds the distillation stage's, built by ``fit_distill``)."""

from __future__ import annotations

import math
from typing import Any

import lightning as L
import torch

from plad.training.weights import full_state


class ValidationQuality(L.Callback):
    """Logs ``sft/val_quality`` after each validation: ``quality(outputs)`` of the model's greedy
    outputs for the validation prompts (every rank computes the same value)."""

    def __init__(
        self,
        tokenizer: Any,
        prompts: list[str],
        quality: Any,
        max_prompt_tokens: int,
        max_new_tokens: int,
        batch_size: int = 64,
    ) -> None:
        self.tokenizer, self.prompts, self.quality = tokenizer, prompts, quality
        self.max_prompt_tokens, self.max_new_tokens, self.batch_size = max_prompt_tokens, max_new_tokens, batch_size

    def on_validation_epoch_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if trainer.sanity_checking:
            return
        from plad.backends.hf_sampling import generate

        out = generate(
            pl_module.model,
            self.tokenizer,
            self.prompts,
            do_sample=False,
            max_new_tokens=self.max_new_tokens,
            max_prompt_tokens=self.max_prompt_tokens,
            batch_size=self.batch_size,
            progress=False,
        )
        pl_module.log("sft/val_quality", float(self.quality([t[0] for t in out.texts])), prog_bar=True)


class BestWeights(L.Callback):
    """Keeps, in memory, the weights of the best validation value so far and the whole curve.

    In memory because SFT models are small and saved once, after the best weights are restored;
    a checkpoint file per improvement would only be written and deleted again.
    """

    def __init__(self, monitor: str, min_delta: float = 0.0, mode: str = "min") -> None:
        self.monitor, self.min_delta, self.sign = monitor, float(min_delta), 1.0 if mode == "min" else -1.0
        self.curve: list[tuple[int, float]] = []
        self.best: float | None = None
        self.best_step: int | None = None
        self.state: dict[str, torch.Tensor] | None = None

    def on_validation_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if trainer.sanity_checking or self.monitor not in trainer.callback_metrics:
            return
        value, step = float(trainer.callback_metrics[self.monitor]), trainer.global_step
        self.curve.append((step, value))
        if math.isfinite(value) and (self.best is None or self.sign * value < self.sign * self.best - self.min_delta):
            self.best, self.best_step = value, step
            self.state = full_state(trainer, "model")  # every rank calls it: a collective when sharded
