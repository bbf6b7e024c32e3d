"""Diagnostics of a pair set that explain a run's outcome. They read the references of the
unlabeled prompts, so they run after the pair stage, outside it: nothing here feeds training or
the pair cache."""

from __future__ import annotations

from datasets import Dataset

from plad.tasks.base import Task


def pseudo_label_noise(pairwise: Dataset, labeled: Dataset, task: Task) -> dict[str, float]:
    """How often the pseudo-label is wrong by the task metric: the student's sample (y-) scores
    higher than the teacher's (y+) against the reference. ``labeled`` is the unlabeled split with
    its references, joined to the pairs by ``id``."""
    if "reference" not in labeled.column_names or len(pairwise) == 0:
        return {}
    rows = {str(r["id"]): r for r in labeled}
    chosen, rejected = [], []
    for pair in pairwise:
        example = rows[str(pair["id"])]
        chosen.append(float(task.quality(pair["chosen"], example)))
        rejected.append(float(task.quality(pair["rejected"], example)))
    n = len(chosen)
    return {
        "student_wins": sum(r > c for c, r in zip(chosen, rejected)) / n,
        "ties": sum(r == c for c, r in zip(chosen, rejected)) / n,
        "teacher_quality": sum(chosen) / n,
        "student_quality": sum(rejected) / n,
        "n_pairs": n,
    }
