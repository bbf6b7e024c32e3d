"""Stage 1: the task's splits, generated or converted once and then read back from the cache
(``Task.load`` keys the entry by the task's fingerprint)."""
from __future__ import annotations

from pathlib import Path
from typing import Any

from datasets import DatasetDict
from omegaconf import DictConfig


def run(cfg: DictConfig, task: Any, cache: Path) -> DatasetDict:
    from plad.stages.preflight import load_checked

    data = load_checked(cfg, task, cache)  # checked against the run's other inputs before it is cached
    eval_split = cfg.eval.get("split", "test")
    if eval_split not in data:
        raise ValueError(f"eval.split: expected one of {list(data)}, got {eval_split!r}")
    return data
