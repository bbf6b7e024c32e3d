"""Does the student's sequence likelihood rank its own samples by quality?

This is PLaD's motivation: after SFT a student's likelihood is mis-calibrated (a likely output is
not a good one), and the calibration loss should fix that. For each prompt we sample k candidates,
score them by mean token log-likelihood and by task quality, and report how well the two rankings
agree: per-prompt Spearman correlation and pairwise ranking accuracy.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from itertools import combinations
from typing import Any

import numpy as np
from scipy.stats import spearmanr

from plad.backends.base import Backend, Sampling, sampled
from plad.checks import InputError
from plad.models.likelihood import score_completions
from plad.models.ref import ModelRef
from plad.tasks.base import Task

log = logging.getLogger(__name__)


def spearman_per_prompt(scores: Sequence[Sequence[float]], qualities: Sequence[Sequence[float]]) -> dict[str, float]:
    """Mean over prompts of Spearman(score, quality) among a prompt's candidates.

    Prompts where either ranking is constant (or with < 2 candidates) have no correlation and are
    skipped; ``n_used`` says how many were left.
    """
    rhos = []
    for s, q in zip(scores, qualities, strict=True):
        if len(s) < 2 or np.ptp(s) == 0 or np.ptp(q) == 0:
            continue
        rhos.append(float(spearmanr(s, q).statistic))
    return {"spearman": float(np.mean(rhos)) if rhos else float("nan"), "n_used": len(rhos), "n_prompts": len(scores)}


def pairwise_rank_accuracy(scores: Sequence[Sequence[float]], qualities: Sequence[Sequence[float]]) -> dict[str, float]:
    """Share of same-prompt pairs with different quality where the better one scores higher.

    A pair with equal scores counts half (the score cannot tell them apart).
    """
    hits, n = 0.0, 0
    for s, q in zip(scores, qualities, strict=True):
        for i, j in combinations(range(len(s)), 2):
            if q[i] == q[j]:
                continue
            n += 1
            hi, lo = (i, j) if q[i] > q[j] else (j, i)
            hits += 1.0 if s[hi] > s[lo] else 0.5 if s[hi] == s[lo] else 0.0
    return {"rank_acc": hits / n if n else float("nan"), "n_pairs": n}


def calibration_diagnostics(
    backend: Backend,
    ref: ModelRef,
    task: Task,
    examples: Sequence[dict[str, Any]],
    *,
    k: int = 8,
    temperature: float = 1.0,
    top_p: float = 1.0,
    top_k: int = 0,
    max_new_tokens: int = 64,
    batch_size: int = 16,
    seed: int = 0,
    max_prompt_tokens: int = 256,
    progress: bool = True,
    name: str = "student",
) -> dict[str, Any]:
    """Sample k candidates per example, score them, and compare likelihood with quality.

    Returns the summary (spearman, n_used, n_prompts, rank_acc, n_pairs) and, under ``points``,
    the raw per-prompt ``scores`` / ``qualities`` for plotting.
    """
    if k < 2:
        raise InputError(f"calibration.k: expected at least 2 candidates per prompt, got {k}")
    prompts = [ex["prompt"] for ex in examples]
    gen = backend.generate(
        ref,
        prompts,
        Sampling(
            n=k,
            max_new_tokens=max_new_tokens,
            temperature=temperature,
            top_p=top_p,
            top_k=top_k,
            seed=seed,
            max_prompt_tokens=max_prompt_tokens,
        ),
        batch_size=batch_size,
        desc=f"calibration[{name}]",
        progress=progress,
    )
    model, tokenizer = backend.scoring_model(ref)
    flat_prompts = [p for p, cands in zip(prompts, gen.texts) for _ in cands]
    flat_cands = [c for cands in sampled(gen) for c in cands]  # scored as generated
    flat_scores = score_completions(
        model,
        tokenizer,
        flat_prompts,
        flat_cands,
        max_prompt_tokens=max_prompt_tokens,
        finished=[f for fs in gen.finished for f in fs],
        batch_size=batch_size,
        progress=progress,
        desc=f"calibration-score[{name}]",
    ).mean_logp
    scores, qualities, pos = [], [], 0
    for ex, cands in zip(examples, gen.texts):
        scores.append(flat_scores[pos : pos + len(cands)])
        qualities.append([float(task.quality(c, ex)) for c in cands])
        pos += len(cands)
    return {
        **spearman_per_prompt(scores, qualities),
        **pairwise_rank_accuracy(scores, qualities),
        "mean_quality": float(np.mean([q for qs in qualities for q in qs])),
        "points": {"scores": scores, "qualities": qualities},
    }


# The model systems a run can have; calibration needs a model (peers such as rule_based have none).
MODEL_SYSTEMS = ("teacher", "student_init", "student")


def check_calibration_systems(names: Any) -> list[str]:
    """eval.calibration.systems: model systems only, so a misspelled one fails instead of vanishing."""
    names = list(names or [])
    unknown = [n for n in names if n not in MODEL_SYSTEMS]
    if unknown:
        raise InputError(f"eval.calibration.systems: expected names among {list(MODEL_SYSTEMS)}, got {unknown}")
    return names


def calibrate_systems(
    backend: Backend,
    systems: dict[str, ModelRef],
    task: Task,
    examples: list[dict[str, Any]],
    cfg: dict[str, Any],
    progress: bool,
) -> tuple[dict[str, dict], dict[str, dict]]:
    """Calibration summary and raw (score, quality) points for each configured system with a model."""
    cal, gen = dict(cfg.get("calibration") or {}), dict(cfg.get("generation") or {})
    summaries, points = {}, {}
    if not cal.get("enabled", False):
        return summaries, points
    for name in check_calibration_systems(cal.get("systems")):
        if name not in systems:  # e.g. student, in a run without distillation (stages=[sft,evaluate])
            log.info("calibration: this run has no %r, skipped", name)
            continue
        res = calibration_diagnostics(
            backend,
            systems[name],
            task,
            examples[: int(cal.get("n_prompts", len(examples)))],
            k=int(cal.get("k", 8)),
            temperature=float(cal.get("temperature", 1.0)),
            top_p=float(cal.get("top_p", 1.0)),
            top_k=int(cal.get("top_k", 0)),
            max_new_tokens=int(cal.get("max_new_tokens") or gen.get("max_new_tokens", 64)),
            batch_size=int(cfg.get("batch_size", 16)),
            seed=int(cal.get("seed", gen.get("seed", 0))),
            max_prompt_tokens=int(gen.get("max_prompt_tokens", 256)),
            progress=progress,
            name=name,
        )
        points[name] = res.pop("points")
        summaries[name] = res
    return summaries, points
