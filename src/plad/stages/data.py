"""Stage 1: the task's splits, generated or converted once and then read back from the cache
(``Task.load`` keys the entry by the task's fingerprint)."""

from __future__ import annotations

from pathlib import Path

from datasets import DatasetDict
from omegaconf import DictConfig

from plad.checks import InputError
from plad.tasks.base import Task


def run(cfg: DictConfig, task: Task, cache: Path) -> DatasetDict:
    from plad.stages.preflight import load_checked

    data = load_checked(cfg, task, cache)  # checked against the run's other inputs before it is cached
    for field, splits in (
        ("eval.split", [cfg.eval.get("split", "test")]),
        ("eval.extra_splits", list(cfg.eval.get("extra_splits") or [])),
    ):
        missing = [s for s in splits if s not in data]
        if missing:
            raise InputError(f"{field}: expected splits among {list(data)}, got {missing[0]!r}")
    return data
