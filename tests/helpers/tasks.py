"""Small task sizes and split rows, shared by the task tests."""

from __future__ import annotations

from typing import Any

from plad.tasks.base import SPLITS

SMALL = dict(n_train=60, n_unlabeled=20, n_validation=10, n_test=30)


def rows(data: Any) -> dict[str, list[dict]]:
    """Every split of a loaded DatasetDict as lists of rows (to compare two loads)."""
    return {split: data[split].to_list() for split in SPLITS}
