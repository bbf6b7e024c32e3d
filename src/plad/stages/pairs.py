"""Stage 4: pseudo-preference pairs on the unlabeled prompts (cached by ``plad.pairs.build``, keyed
by both models' fingerprints and the run seed), and the diagnostics that explain a run's outcome."""
from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

from omegaconf import DictConfig

from plad.stages.refs import ModelRef

log = logging.getLogger("plad")


def run(cfg: DictConfig, teacher: ModelRef, student0: ModelRef, data: Any, task: Any, cache: Path,
        lookup_only: bool = False) -> Any:
    """The pair set (``plad.pairs.build.PairSet``); samples are seeded by the run seed. With
    ``lookup_only`` the cached set or None, without loading any model."""
    from plad.pairs.build import obtain_pairs

    return obtain_pairs(cfg.pairs, data["unlabeled"], task, teacher.load, student0.load, teacher.fingerprint,
                        student0.fingerprint, cache, cfg.task.max_prompt_tokens, cfg.task.max_new_tokens, cfg.seed,
                        lookup_only=lookup_only)


def diagnostics(pairs: Any, unlabeled: Any, task: Any) -> dict[str, Any]:
    """Pseudo-label noise of the pair set: how often the student's sample beats the teacher's by the
    task metric (read against the unlabeled split's references, for diagnosis only)."""
    try:
        from plad.pairs.diagnostics import pseudo_label_noise
    except ModuleNotFoundError as e:  # until plad.pairs.diagnostics lands
        if e.name != "plad.pairs.diagnostics":
            raise
        log.info("pairs: plad.pairs.diagnostics not available, no pseudo-label noise diagnostics")
        return {}
    return {"pseudo_label_noise": pseudo_label_noise(pairs.pairwise, unlabeled, task)}
