"""Stage 1: the task's splits, generated or converted once and then read back from the cache
(``Task.load`` keys the entry by the task's fingerprint). The checks that need the loaded splits
live here, next to the load; every check that needs only the config is in ``plad.stages.preflight``."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from datasets import DatasetDict
from omegaconf import DictConfig

from plad.checks import InputError
from plad.stages.pairs import prompt_split
from plad.tasks.base import Task


def run(cfg: DictConfig, task: Task, cache: Path) -> DatasetDict:
    data = load_checked(cfg, task, cache)  # checked against the run's other inputs before it is cached
    for field, splits in (
        ("eval.split", [cfg.eval.get("split", "test")]),
        ("eval.extra_splits", list(cfg.eval.get("extra_splits") or [])),
    ):
        missing = [s for s in splits if s not in data]
        if missing:
            raise InputError(f"{field}: expected splits among {list(data)}, got {missing[0]!r}")
    return data


def load_checked(cfg: DictConfig, task: Task, cache: str | os.PathLike) -> Any:
    """The task's splits (``task.load``), checked against the run's other inputs (the black-box
    teacher file must answer exactly the prompts of `pairs.split`) before they are cached and before SFT."""
    return task.load(cache, validate=lambda data: check_data(cfg, data))


def check_data(cfg: DictConfig, data: Any) -> None:
    """Checks that need the loaded splits (cheap; run before they are cached and before SFT)."""
    from plad.models.build import pretrain_spec

    for role in ("teacher", "student"):  # a label budget the train split can meet
        budget = (cfg.model[role].get("sft") or {}).get("train_examples")
        if budget is not None and budget > len(data["train"]):
            raise InputError(
                f"model.{role}.sft.train_examples: expected at most the {len(data['train'])} rows "
                f"of the train split, got {budget}"
            )
    split = prompt_split(cfg)
    readers = [f"model.{r}.pretrain" for r in ("teacher", "student") if pretrain_spec(cfg.model[r]) is not None]
    readers += ["pairs"] if "pairs" in cfg.stages and split == "unlabeled" else []
    if readers and len(data["unlabeled"]) == 0:
        raise InputError(
            f"task.n_unlabeled: expected unlabeled prompts ({' and '.join(readers)} read them), "
            "got an empty unlabeled split"
        )
    path = cfg.pairs.get("teacher_outputs")
    if path and "pairs" in cfg.stages:
        from plad.pairs.teacher_file import read_teacher_outputs

        prompts = data[split]
        read_teacher_outputs(path, [str(i) for i in prompts["id"]], list(prompts["prompt"]))
