"""The anonymization task's metrics: leak and keep, quality, placeholder P/R/F1.

Leak and keep are the two sides of anonymization that no single number shows.

Leak rate alone rewards deleting everything (an empty output leaks nothing); keep rate alone
rewards copying the input. Reported together, overall and (leak) per PII type, they show what a
system trades: the rule-based peer keeps almost every word and leaks what its rules miss.
"""

from __future__ import annotations

import re
from collections import Counter
from collections.abc import Sequence
from difflib import SequenceMatcher
from typing import Any

from plad.tasks.anonymization.generator import PLACEHOLDER, TOKEN
from plad.tasks.anonymization.spans import contains, placeholder_counts

WORD = re.compile(r"\w+")


def words(text: str) -> Counter:
    """Multiset of word tokens (``\\w+``, case-sensitive) outside ``[TYPE]`` placeholders."""
    return Counter(WORD.findall(PLACEHOLDER.sub(" ", text)))


def keep_rate(prediction: str, reference: str) -> float | None:
    """Share of the input's non-PII words that survive in ``prediction``; None when there are none.

    The input's non-PII words are the word tokens of the gold masked reference outside its
    placeholders (the input with every PII span replaced). A word survives when it occurs in the
    prediction (multiset intersection: a word the input has twice must appear twice; order is
    ignored, case matters). An empty output keeps 0, the reference itself keeps 1, and so does a
    verbatim copy of the input, which the leak rate then catches.
    """
    wanted = words(reference)
    if not wanted:
        return None
    return sum((wanted & words(prediction)).values()) / sum(wanted.values())


def mean_keep_rate(predictions: Sequence[str], examples: Sequence[dict[str, Any]]) -> float:
    """Mean per-example keep rate over examples that have non-PII words (1.0 if none has:
    nothing to keep, the convention of ``_prf`` for nothing expected)."""
    rates = [r for p, e in zip(predictions, examples) if (r := keep_rate(p, e["reference"])) is not None]
    return sum(rates) / len(rates) if rates else 1.0


def leak_by_type(leaks: Sequence[Sequence[bool]], examples: Sequence[dict[str, Any]]) -> dict[str, float]:
    """``leak_rate/<TYPE>``: share of the gold values of each type that occur verbatim in the
    outputs (micro over values, like ``leak_rate``); types of real data without ``pii_types`` are PII."""
    n, leaked = Counter(), Counter()
    for flags, example in zip(leaks, examples):
        types = example.get("pii_types") or ["PII"] * len(flags)
        for flag, kind in zip(flags, types):
            n[kind] += 1
            leaked[kind] += bool(flag)
    return {f"leak_rate/{k}": leaked[k] / n[k] for k in sorted(n)}


def leaked(prediction: str, example: dict[str, Any]) -> list[bool]:
    """Per gold PII value of ``example``: does it occur in ``prediction`` (``spans.contains``)."""
    return [contains(prediction, v) for v in example["pii_values"]]


def quality(prediction: str, example: dict[str, Any], leaks: Sequence[bool] | None = None) -> float:
    """0.5 * (1 - share of gold PII strings leaked) + 0.5 * difflib ratio to the reference.

    The ratio is over word/punctuation tokens with placeholders as single tokens, so a wrong
    placeholder type costs as much as a wrong word. Without gold PII the first half is 0.5.
    ``leaks``: ``leaked(prediction, example)`` where the caller has it already.
    """
    leaks = leaked(prediction, example) if leaks is None else leaks
    no_leak = 1.0 - sum(leaks) / len(leaks) if leaks else 1.0
    ratio = SequenceMatcher(None, TOKEN.findall(prediction), TOKEN.findall(example["reference"]), autojunk=False)
    return 0.5 * no_leak + 0.5 * ratio.ratio()


def _prf(prefix: str, tp: int, n_pred: int, n_ref: int) -> dict[str, float]:
    """Precision/recall/F1; nothing predicted for nothing expected is perfect, 0/0 against a
    non-empty other side counts as 0."""
    p = tp / n_pred if n_pred else float(n_ref == 0)
    r = tp / n_ref if n_ref else float(n_pred == 0)
    f = 2 * p * r / (p + r) if p + r else 0.0
    return {f"{prefix}_precision": p, f"{prefix}_recall": r, f"{prefix}_f1": f}


def split_metrics(predictions: Sequence[str], examples: Sequence[dict[str, Any]]) -> dict[str, float]:
    """leak_rate (micro, and per type), keep_rate, exact_match, mean quality and placeholder P/R/F1
    (micro and per type, multiset matching of ``[TYPE]`` counts against the reference) of one set."""
    n_values = n_leaked = exact = 0
    total = 0.0
    tp, n_pred, n_ref = Counter(), Counter(), Counter()
    all_leaks = []
    for prediction, example in zip(predictions, examples):
        leaks = leaked(prediction, example)
        all_leaks.append(leaks)
        n_values, n_leaked = n_values + len(leaks), n_leaked + sum(leaks)
        exact += prediction.strip() == example["reference"].strip()
        total += quality(prediction, example, leaks)
        pred, ref = placeholder_counts(prediction), placeholder_counts(example["reference"])
        tp, n_pred, n_ref = tp + (pred & ref), n_pred + pred, n_ref + ref
    out = {
        "leak_rate": n_leaked / n_values if n_values else 0.0,
        "keep_rate": mean_keep_rate(predictions, examples),
        "exact_match": exact / len(predictions),
        "quality": total / len(predictions),
    }
    out.update(_prf("placeholder", sum(tp.values()), sum(n_pred.values()), sum(n_ref.values())))
    out.update(leak_by_type(all_leaks, examples))
    for kind in sorted(set(n_pred) | set(n_ref)):
        out.update({f"{k}/{kind}": v for k, v in _prf("placeholder", tp[kind], n_pred[kind], n_ref[kind]).items()})
    return out
