"""Turning one shard's teacher and student samples into pairwise and listwise rows.

Pairwise: every teacher x student combination per prompt (y+ = teacher, y- = student). Listwise:
one row per prompt with the distinct candidates, teacher samples first. Each row carries the
initial student's summed log-likelihoods so reference-based losses (DPO, IPO) need no reference
model during training. Every dropped pair or candidate is counted by reason in the shard stats.
"""
from __future__ import annotations

from typing import Any, Callable, Sequence

from datasets import Dataset, Features, Sequence as Seq, Value

ScoreFn = Callable[[list[str], list[dict[str, Any]]], list[float]]  # (outputs, rows) -> scores
LogpFn = Callable[[list[str], list[str]], list[float]]               # (prompts, completions) -> sum logp


def features(has_reference: bool, has_scores: bool) -> tuple[Features, Features]:
    """Arrow schemas of the pairwise and listwise tables (fixed, so empty shards concatenate)."""
    pair = {"id": Value("string"), "prompt": Value("string"), "chosen": Value("string"),
            "rejected": Value("string")}
    lst = {"id": Value("string"), "prompt": Value("string"), "candidates": Seq(Value("string")),
           "n_teacher": Value("int32")}
    if has_reference:
        pair["reference"] = lst["reference"] = Value("string")
    if has_scores:
        pair |= {"chosen_score": Value("float64"), "rejected_score": Value("float64")}
        lst["scores"] = Seq(Value("float64"))
    pair |= {"ref_chosen_logp": Value("float64"), "ref_rejected_logp": Value("float64")}
    if has_reference:
        pair["ref_reference_logp"] = Value("float64")
    lst["ref_candidates_logp"] = Seq(Value("float64"))
    return Features(pair), Features(lst)


def _empty(text: str) -> bool:
    return not text.strip()


def _add_candidate(cands: list[str], text: str, dropped: dict[str, int]) -> None:
    if _empty(text):
        dropped["empty"] += 1
    elif text in cands:
        dropped["duplicate"] += 1
    else:
        cands.append(text)


def build_rows(examples: Sequence[dict[str, Any]], teacher: Sequence[Sequence[str]],
               student: Sequence[Sequence[str]], *, listwise: bool, has_reference: bool, filter_by_score: bool,
               score_fn: ScoreFn | None, logp_fn: LogpFn) -> tuple[dict[str, Dataset], dict[str, Any]]:
    """Pairwise (+ listwise) tables of one shard and its drop counts (``has_reference`` is decided
    for the whole prompt split, so every shard has the same schema)."""
    has_ref = has_reference
    scores: dict[tuple[int, str], float] = {}
    if score_fn is not None:
        keys = sorted({(i, t) for i, outs in enumerate(zip(teacher, student)) for t in outs[0] + outs[1]
                       if not _empty(t)})
        scores = dict(zip(keys, score_fn([t for _, t in keys], [examples[i] for i, _ in keys])))

    dropped = {"empty_chosen": 0, "empty_rejected": 0, "identical": 0, "filtered_by_score": 0}
    pairs: list[tuple[int, str, str]] = []
    for i, (t_outs, s_outs) in enumerate(zip(teacher, student)):
        for t in t_outs:
            for s in s_outs:
                reason = ("empty_chosen" if _empty(t) else "empty_rejected" if _empty(s)
                          else "identical" if t == s
                          else "filtered_by_score" if filter_by_score and score_fn is not None
                          and scores[i, s] >= scores[i, t] else None)
                if reason:
                    dropped[reason] += 1
                else:
                    pairs.append((i, t, s))

    lists: list[tuple[int, list[str], int]] = []
    cand_dropped = {"empty": 0, "duplicate": 0}
    dropped_prompts = 0
    if listwise:
        for i, (t_outs, s_outs) in enumerate(zip(teacher, student)):
            cands: list[str] = []
            for text in t_outs:
                _add_candidate(cands, text, cand_dropped)
            n_teacher = len(cands)
            for text in s_outs:
                _add_candidate(cands, text, cand_dropped)
            if n_teacher >= 1 and len(cands) > n_teacher:
                lists.append((i, cands, n_teacher))
            else:
                dropped_prompts += 1

    # One reference forward per distinct (prompt, text) the tables use.
    need = {(i, t) for i, t, s in pairs} | {(i, s) for i, t, s in pairs}
    need |= {(i, c) for i, cands, _ in lists for c in cands}
    if has_ref:
        need |= {(i, examples[i]["reference"]) for i in {p[0] for p in pairs}}
    keys = sorted(need)
    logp = dict(zip(keys, logp_fn([examples[i]["prompt"] for i, _ in keys], [t for _, t in keys])))

    pair_feats, list_feats = features(has_ref, score_fn is not None)
    pw: dict[str, list[Any]] = {k: [] for k in pair_feats}
    for i, t, s in pairs:
        ex = examples[i]
        row = {"id": ex["id"], "prompt": ex["prompt"], "chosen": t, "rejected": s,
               "ref_chosen_logp": logp[i, t], "ref_rejected_logp": logp[i, s]}
        if has_ref:
            row |= {"reference": ex["reference"], "ref_reference_logp": logp[i, ex["reference"]]}
        if score_fn is not None:
            row |= {"chosen_score": scores[i, t], "rejected_score": scores[i, s]}
        for k in pw:
            pw[k].append(row[k])
    lw: dict[str, list[Any]] = {k: [] for k in list_feats}
    for i, cands, n_teacher in lists:
        ex = examples[i]
        row = {"id": ex["id"], "prompt": ex["prompt"], "candidates": cands, "n_teacher": n_teacher,
               "ref_candidates_logp": [logp[i, c] for c in cands]}
        if has_ref:
            row["reference"] = ex["reference"]
        if score_fn is not None:
            row["scores"] = [scores[i, c] for c in cands]
        for k in lw:
            lw[k].append(row[k])

    tables = {"pairwise": Dataset.from_dict(pw, features=pair_feats)}
    if listwise:
        tables["listwise"] = Dataset.from_dict(lw, features=list_feats)
    stats = {
        "pairwise": {"candidates": sum(len(t) * len(s) for t, s in zip(teacher, student)),
                     "kept": len(pairs), "dropped": dropped},
        "listwise": {"rows": len(lists), "dropped_prompts": dropped_prompts, "dropped_candidates": cand_dropped},
    }
    return tables, stats
