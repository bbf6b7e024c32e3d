"""``SFTDataModule``: (prompt, reference) rows of a task split, tokenised on the fly by the collator."""
from __future__ import annotations

from typing import Any

import lightning as L
from datasets import Dataset
from torch.utils.data import DataLoader

from plad.data.collate import Collator
from plad.data.loader import ResumableLoader


class SFTDataModule(L.LightningDataModule):
    def __init__(self, train: Dataset, tokenizer: Any, encoder_decoder: bool, batch_size: int,
                 max_prompt_tokens: int, max_completion_tokens: int, seed: int = 0,
                 validation: Dataset | None = None, completion_key: str = "reference") -> None:
        super().__init__()
        self.train, self.validation = train, validation
        self.batch_size, self.seed = batch_size, seed
        self.collate = Collator(tokenizer, encoder_decoder, max_prompt_tokens, max_completion_tokens,
                                completion_key=completion_key)

    def train_dataloader(self) -> DataLoader:
        return ResumableLoader(self.train, self.batch_size, seed=self.seed, collate_fn=self.collate)

    def val_dataloader(self) -> DataLoader:
        if self.validation is None:
            return []  # type: ignore[return-value]
        return DataLoader(self.validation, batch_size=self.batch_size, collate_fn=self.collate)
