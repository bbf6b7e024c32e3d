"""Small task sizes and split rows, shared by the task tests."""

from __future__ import annotations

from typing import Any

from plad.tasks.base import SPLITS

SMALL = dict(n_train=60, n_unlabeled=20, n_validation=10, n_test=30)


def rows(data: Any) -> dict[str, list[dict]]:
    """Every split of a loaded DatasetDict as lists of rows (to compare two loads)."""
    return {split: data[split].to_list() for split in SPLITS}


def replaced(row: dict[str, Any]) -> str:
    """The row's text with each gold value replaced by ``[TYPE]``, longest first, by plain
    ``str.replace``: the gold re-derived without the package's own masking code."""
    text = row["text"]
    for value, kind in sorted(zip(row["pii_values"], row["pii_types"]), key=lambda p: -len(p[0])):
        text = text.replace(value, f"[{kind}]")
    return text
