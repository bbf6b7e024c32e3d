"""Checkpoints and run configs written before the training code moved into ``plad.training``.

A Lightning checkpoint of this project pickles no plad object: the class path of the module is
never stored (``load_from_checkpoint`` is called on the class; Lightning's ``_class_path`` is only
written under LightningCLI, which plad does not use). What does name old paths is plain text:

- ``hyper_parameters["optim"]["scheduler"]["_target_"]``: ``plad.optim.warmup_cosine``, built again
  by ``configure_optimizers`` after ``DistillModule.load_from_checkpoint``;
- a run directory's ``.hydra/config.yaml`` (``distill.module._target_: plad.module.DistillModule``, the pair scorer's
  ``plad.pairs.scorers...``),
  which ``ckpt_path=last`` compares with the current configuration to find a killed run.

Both go through ``current_targets``, so such a checkpoint loads and such a run still resumes.
"""

from __future__ import annotations

from typing import Any

# Old ``_target_`` path -> where it lives now (the structure move of issue 26).
MOVED = {
    "plad.module.DistillModule": "plad.training.modules.DistillModule",
    "plad.module.SFTModule": "plad.training.modules.SFTModule",
    "plad.optim.warmup_cosine": "plad.training.optimizer.warmup_cosine",
    "plad.pairs.scorers.TeacherLikelihoodScorer": "plad.pairs.quality.TeacherLikelihoodScorer",
    "plad.pairs.scorers.TaskMetricScorer": "plad.pairs.quality.TaskMetricScorer",
    "plad.pairs.scorers.RewardModelScorer": "plad.pairs.quality.RewardModelScorer",
}


def current_targets(tree: Any) -> Any:
    """``tree`` (plain dicts and lists, as in hyper-parameters or a saved config) with every
    ``_target_`` that names a moved object rewritten to its current path; other values untouched."""
    if isinstance(tree, dict):
        return {
            k: MOVED.get(v, v) if k == "_target_" and isinstance(v, str) else current_targets(v)
            for k, v in tree.items()
        }
    if isinstance(tree, list):
        return [current_targets(v) for v in tree]
    return tree
