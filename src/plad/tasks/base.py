"""What every task provides: its splits, its prompt format and its quality metrics.

A task knows nothing of models or losses. ``load`` returns a ``datasets.DatasetDict`` with splits
train / unlabeled / validation / test and at least the columns ``prompt`` (the full model input)
and ``reference`` (the target), plus task extras.
"""
from __future__ import annotations

from abc import ABC, abstractmethod
from typing import Any, Sequence

from datasets import DatasetDict

SPLITS = ("train", "unlabeled", "validation", "test")


class Task(ABC):
    name: str = "task"
    main_metric: str = ""        # key of ``metrics`` reported first and used for model selection
    higher_is_better: bool = True  # direction of ``main_metric``
    chat_template: str = "auto"  # auto | none: wrap prompts in the tokenizer's chat template (plad.models.encoding)

    @abstractmethod
    def load(self) -> DatasetDict:
        """Splits train / unlabeled / validation / test with columns prompt, reference (+ extras)."""

    @abstractmethod
    def metrics(self, predictions: Sequence[str], examples: Sequence[dict[str, Any]]) -> dict[str, float]:
        """Corpus-level metrics of predictions against the examples (rows of a split)."""

    @abstractmethod
    def quality(self, prediction: str, example: dict[str, Any]) -> float:
        """One scalar in [0, 1], higher is better, to compare two outputs for the same example."""

    @abstractmethod
    def fingerprint(self) -> str:
        """Stable hash of everything ``load`` depends on (config, data file contents, code version)."""
