"""Turning one shard's teacher and student samples into pairwise and listwise rows.

Pairwise: every teacher x student combination per prompt (y+ = teacher, y- = student). Listwise:
one row per prompt with the distinct candidates, teacher samples first. A sample is kept as it was
generated: its text (for reading, scorers and judges), the token ids the student scores (its own
samples' generated ids; the teacher's in the student's tokenizer) and whether it ended with an EOS
or was cut at the budget (``*_finished``: a cut sample is scored, and trained, without an EOS).
Each row carries the initial student's summed log-likelihoods of exactly those ids, so
reference-based losses (DPO, IPO) need no reference model during training. Every dropped pair or
candidate is counted by reason in the shard stats.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

from datasets import Dataset, Features, Value
from datasets import Sequence as Seq

from plad.checks import InputError

CUT_SAMPLES = ("keep", "drop")  # pairs.cut_samples: what happens to a sample cut at max_new_tokens
CUT_SAMPLES_DEFAULT = "keep"  # configs/pairs/default.yaml says why


def check_cut_samples(value: Any) -> str:
    if value not in CUT_SAMPLES:
        raise InputError(f"pairs.cut_samples: expected one of {list(CUT_SAMPLES)}, got {value!r}")
    return value


@dataclass(frozen=True)
class Sample:
    """One generated output: its text, its token ids in the student's tokenizer (without EOS) and
    whether it ended with EOS."""

    text: str
    ids: tuple[int, ...]
    finished: bool


ScoreFn = Callable[[list[str], list[dict[str, Any]]], list[float]]  # (outputs, rows) -> scores
# (prompts, completions as token ids or reference texts, finished flags) -> summed log-likelihoods
LogpFn = Callable[[list[str], list["tuple[int, ...] | str"], list[bool]], list[float]]


def features(has_reference: bool, has_scores: bool) -> tuple[Features, Features]:
    """Arrow schemas of the pairwise and listwise tables (fixed, so empty shards concatenate)."""
    pair = {
        "id": Value("string"),
        "prompt": Value("string"),
        "chosen": Value("string"),
        "rejected": Value("string"),
        "chosen_ids": Seq(Value("int32")),
        "rejected_ids": Seq(Value("int32")),
        "chosen_finished": Value("bool"),
        "rejected_finished": Value("bool"),
    }
    lst = {
        "id": Value("string"),
        "prompt": Value("string"),
        "candidates": Seq(Value("string")),
        "candidates_ids": Seq(Seq(Value("int32"))),
        "candidates_finished": Seq(Value("bool")),
        "n_teacher": Value("int32"),
    }
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


def _empty(sample: Sample) -> bool:
    return not sample.text.strip()


def _add_candidate(cands: list[Sample], sample: Sample, dropped: dict[str, int], drop_cut: bool) -> None:
    if _empty(sample):
        dropped["empty"] += 1
    elif drop_cut and not sample.finished:
        dropped["cut"] += 1
    elif any(c.text == sample.text for c in cands):
        dropped["duplicate"] += 1
    else:
        cands.append(sample)


def _pair_drop_reason(t: Sample, s: Sample, drop_cut: bool, filtered: Callable[[], bool]) -> str | None:
    if _empty(t):
        return "empty_chosen"
    if _empty(s):
        return "empty_rejected"
    if drop_cut and not t.finished:
        return "cut_chosen"
    if drop_cut and not s.finished:
        return "cut_rejected"
    if t.text == s.text:
        return "identical"
    return "filtered_by_score" if filtered() else None


def build_rows(
    examples: Sequence[dict[str, Any]],
    teacher: Sequence[Sequence[Sample]],
    student: Sequence[Sequence[Sample]],
    *,
    listwise: bool,
    has_reference: bool,
    filter_by_score: bool,
    score_fn: ScoreFn | None,
    logp_fn: LogpFn,
    cut_samples: str = CUT_SAMPLES_DEFAULT,
) -> tuple[dict[str, Dataset], dict[str, Any]]:
    """Pairwise (+ listwise) tables of one shard and its drop counts (``has_reference`` is decided
    for the whole prompt split, so every shard has the same schema)."""
    drop_cut = check_cut_samples(cut_samples) == "drop"
    scores: dict[tuple[int, str], float] = {}
    if score_fn is not None:  # a quality judgment of the text
        keys = sorted(
            {(i, x.text) for i, outs in enumerate(zip(teacher, student)) for x in outs[0] + outs[1] if not _empty(x)}
        )
        scores = dict(zip(keys, score_fn([t for _, t in keys], [examples[i] for i, _ in keys])))

    dropped = {
        "empty_chosen": 0,
        "empty_rejected": 0,
        "cut_chosen": 0,
        "cut_rejected": 0,
        "identical": 0,
        "filtered_by_score": 0,
    }
    pairs: list[tuple[int, Sample, Sample]] = []
    for i, (t_outs, s_outs) in enumerate(zip(teacher, student)):
        for t in t_outs:
            for s in s_outs:
                scored_at_least_as_high = lambda i=i, s=s, t=t: (  # noqa: E731 (scores only when asked)
                    filter_by_score and score_fn is not None and scores[i, s.text] >= scores[i, t.text]
                )
                reason = _pair_drop_reason(t, s, drop_cut, scored_at_least_as_high)
                if reason:
                    dropped[reason] += 1
                else:
                    pairs.append((i, t, s))

    lists: list[tuple[int, list[Sample], int]] = []
    cand_dropped = {"empty": 0, "cut": 0, "duplicate": 0}
    dropped_prompts = 0
    if listwise:
        for i, (t_outs, s_outs) in enumerate(zip(teacher, student)):
            cands: list[Sample] = []
            for x in t_outs:
                _add_candidate(cands, x, cand_dropped, drop_cut)
            n_teacher = len(cands)
            for x in s_outs:
                _add_candidate(cands, x, cand_dropped, drop_cut)
            if n_teacher >= 1 and len(cands) > n_teacher:
                lists.append((i, cands, n_teacher))
            else:
                dropped_prompts += 1

    # One reference forward per distinct (prompt, sequence) the tables use.
    need: set[tuple[int, Any, bool]] = {(i, x.ids, x.finished) for i, t, s in pairs for x in (t, s)}
    need |= {(i, c.ids, c.finished) for i, cands, _ in lists for c in cands}
    if has_reference:  # oracle runs: the reference text, which ends
        need |= {(i, examples[i]["reference"], True) for i in {p[0] for p in pairs}}
    keys = sorted(need, key=lambda k: (k[0], isinstance(k[1], str), str(k[1]), k[2]))
    logp = dict(
        zip(
            keys, logp_fn([examples[i]["prompt"] for i, _, _ in keys], [c for _, c, _ in keys], [f for _, _, f in keys])
        )
    )

    pair_feats, list_feats = features(has_reference, score_fn is not None)
    pw: dict[str, list[Any]] = {k: [] for k in pair_feats}
    for i, t, s in pairs:
        ex = examples[i]
        row = {
            "id": ex["id"],
            "prompt": ex["prompt"],
            "chosen": t.text,
            "rejected": s.text,
            "chosen_ids": list(t.ids),
            "rejected_ids": list(s.ids),
            "chosen_finished": t.finished,
            "rejected_finished": s.finished,
            "ref_chosen_logp": logp[i, t.ids, t.finished],
            "ref_rejected_logp": logp[i, s.ids, s.finished],
        }
        if has_reference:
            row |= {"reference": ex["reference"], "ref_reference_logp": logp[i, ex["reference"], True]}
        if score_fn is not None:
            row |= {"chosen_score": scores[i, t.text], "rejected_score": scores[i, s.text]}
        for k in pw:
            pw[k].append(row[k])
    lw: dict[str, list[Any]] = {k: [] for k in list_feats}
    for i, cands, n_teacher in lists:
        ex = examples[i]
        row = {
            "id": ex["id"],
            "prompt": ex["prompt"],
            "candidates": [c.text for c in cands],
            "candidates_ids": [list(c.ids) for c in cands],
            "candidates_finished": [c.finished for c in cands],
            "n_teacher": n_teacher,
            "ref_candidates_logp": [logp[i, c.ids, c.finished] for c in cands],
        }
        if has_reference:
            row["reference"] = ex["reference"]
        if score_fn is not None:
            row["scores"] = [scores[i, c.text] for c in cands]
        for k in lw:
            lw[k].append(row[k])

    tables = {"pairwise": Dataset.from_dict(pw, features=pair_feats)}
    if listwise:
        tables["listwise"] = Dataset.from_dict(lw, features=list_feats)
    stats = {
        "pairwise": {
            "candidates": sum(len(t) * len(s) for t, s in zip(teacher, student)),
            "kept": len(pairs),
            "dropped": dropped,
        },
        "listwise": {"rows": len(lists), "dropped_prompts": dropped_prompts, "dropped_candidates": cand_dropped},
        "cut": {
            "teacher": sum(not x.finished for ts in teacher for x in ts),
            "student": sum(not x.finished for ss in student for x in ss),
        },
    }
    return tables, stats
