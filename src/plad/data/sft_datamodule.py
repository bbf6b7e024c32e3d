"""``SFTDataModule``: (prompt, reference) rows of a task split, tokenised on the fly by the collator.

Serves SFT of the teacher / initial student, and train-split losses during distillation (the
continued-SFT baseline); with ``distill_layout`` a batch also carries the ``mask`` [B, 1] that
``DistillModule`` reads, so such a loss sees one sequence per example like any other.
"""

from __future__ import annotations

from collections.abc import Sequence
from functools import partial
from typing import Any

import lightning as L
import torch
from datasets import Dataset
from torch import Tensor
from torch.utils.data import DataLoader

from plad.checks import InputError
from plad.data.collate import Collator
from plad.data.loader import ResumableLoader
from plad.models.encoding import target_counts


class DistillLayoutCollator(Collator):
    """``Collator`` + an all-true ``mask`` [B, 1]: one sequence per example, as pair batches lay it out."""

    def __call__(self, rows: Sequence[dict[str, Any]]) -> dict[str, Tensor]:
        batch = super().__call__(rows)
        batch["mask"] = torch.ones(len(rows), 1, dtype=torch.bool)
        return batch


class SFTDataModule(L.LightningDataModule):
    def __init__(
        self,
        train: Dataset,
        tokenizer: Any,
        encoder_decoder: bool,
        batch_size: int,
        max_prompt_tokens: int,
        max_completion_tokens: int,
        seed: int = 0,
        validation: Dataset | None = None,
        distill_layout: bool = False,
        num_workers: int = 0,
        accumulate_grad_batches: int = 1,
    ) -> None:
        super().__init__()
        if len(train) == 0:
            raise InputError("train: expected at least one (prompt, reference) row, got an empty split")
        self.train, self.validation = train, validation
        self.batch_size, self.seed = batch_size, seed
        collator = DistillLayoutCollator if distill_layout else Collator
        self.collate = collator(tokenizer, encoder_decoder, max_prompt_tokens, max_completion_tokens)
        self.num_workers, self.accumulate = num_workers, accumulate_grad_batches
        self.encoder_decoder = encoder_decoder

    @classmethod
    def for_distillation(
        cls,
        data: Any,
        tokenizer: Any,
        encoder_decoder: bool,
        batch_size: int,
        max_prompt_tokens: int,
        max_completion_tokens: int,
        val_size: int,
        seed: int = 0,
        num_workers: int = 0,
        accumulate_grad_batches: int = 1,
        train_examples: int | None = None,
    ) -> SFTDataModule:
        """Continued SFT as a distillation method: the labeled train split in the pair batch layout
        (its first ``train_examples`` rows: the student's own label budget), val/loss on the first
        ``val_size`` rows of the validation split."""
        val = data.get("validation")
        val = val.select(range(min(int(val_size), len(val)))) if val is not None else None
        train = data["train"] if train_examples is None else data["train"].select(range(int(train_examples)))
        return cls(
            train,
            tokenizer,
            encoder_decoder,
            batch_size,
            max_prompt_tokens,
            max_completion_tokens,
            seed=seed,
            validation=val,
            distill_layout=True,
            num_workers=num_workers,
            accumulate_grad_batches=accumulate_grad_batches,
        )

    def train_dataloader(self) -> DataLoader:
        return ResumableLoader(
            self.train,
            self.batch_size,
            seed=self.seed,
            collate_fn=self.collate,
            num_workers=self.num_workers,
            accumulate=self.accumulate,
            counts=partial(target_counts, encoder_decoder=self.encoder_decoder),
        )

    def val_dataloader(self) -> DataLoader:
        if self.validation is None or len(self.validation) == 0:
            return []  # type: ignore[return-value]
        return DataLoader(self.validation, batch_size=self.batch_size, collate_fn=self.collate)
