"""Leak and keep: the two sides of anonymization that no single number shows.

Leak rate alone rewards deleting everything (an empty output leaks nothing); keep rate alone
rewards copying the input. Reported together, overall and (leak) per PII type, they show what a
system trades: the rule-based peer keeps almost every word and leaks what its rules miss.
"""

from __future__ import annotations

import re
from collections import Counter
from collections.abc import Sequence
from typing import Any

from plad.tasks.anonymization.generator import PLACEHOLDER

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
