"""Does the student's sequence likelihood rank its own samples by quality?

This is PLaD's motivation: after SFT a student's likelihood is mis-calibrated (a likely output is
not a good one), and the calibration loss should fix that. For each prompt we sample k candidates,
score them by mean token log-likelihood and by task quality, and report how well the two rankings
agree: per-prompt Spearman correlation and pairwise ranking accuracy.
"""

from __future__ import annotations

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
