"""Stage 4: pseudo-preference pairs on the unlabeled prompts of ``pairs.split`` (cached by
``plad.pairs.build``, keyed by the prompts, both models' fingerprints, the teacher's post-edit, the run
seed, the generation backend and the trainer's precision), and the diagnostics that explain a run's
outcome."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from omegaconf import DictConfig

from plad.models.ref import ModelRef
from plad.tasks.base import Task


def run(
    cfg: DictConfig,
    teacher: ModelRef,
    student0: ModelRef,
    data: Any,
    task: Task,
    cache: Path,
    lookup_only: bool = False,
) -> Any:
    """The pair set (``plad.pairs.build.PairSet``); samples are seeded by the run seed. With
    ``lookup_only`` the cached set or None, without loading any model."""
    from plad.backends import make_backend
    from plad.pairs.build import obtain_pairs

    return obtain_pairs(
        cfg.pairs,
        data[prompt_split(cfg)],
        task,
        teacher,
        student0,
        cache,
        cfg.task.max_prompt_tokens,
        cfg.task.max_new_tokens,
        cfg.seed,
        lookup_only=lookup_only,
        backend=make_backend(cfg.get("generation")),
        precision=cfg.trainer.get("precision"),
        post_edit=cfg.model.teacher.get("post_edit"),
    )


def prompt_split(cfg: DictConfig) -> str:
    """The split whose prompts the pairs are built on (``pairs.split``; checked by the preflight)."""
    return cfg.pairs.get("split", "unlabeled")


def diagnostics(pairs: Any, unlabeled: Any, task: Task) -> dict[str, Any]:
    """Pseudo-label noise of the pair set: how often the student's sample beats the teacher's by the
    task metric (read against the unlabeled split's references, for diagnosis only)."""
    from plad.pairs.diagnostics import pseudo_label_noise

    return {"pseudo_label_noise": pseudo_label_noise(pairs.pairwise, unlabeled, task)}
