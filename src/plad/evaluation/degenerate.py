"""A task-independent fluency check: is an output degenerate (stuck in a repetition loop)?

An output is degenerate when a word (``\\w+``, case-insensitive) occurs 3+ times in a row in its
word sequence ("the camera camera camera is ready") or any character 8+ times in a row ("clddddddddd").
Separators between words are ignored, so "[NAME], [NAME], [NAME]" also counts: three identical
placeholders in a row are a loop too in this project's tasks.
"""

from __future__ import annotations

import re
from collections.abc import Sequence

WORD = re.compile(r"\w+")
REPEATED_CHAR = re.compile(r"(.)\1{7,}", re.DOTALL)
WORD_RUN, CHAR_RUN = 3, 8


def is_degenerate(text: str) -> bool:
    """True when ``text`` repeats a word 3+ times in a row or a character 8+ times in a row."""
    if REPEATED_CHAR.search(text):
        return True
    words = [w.lower() for w in WORD.findall(text)]
    return any(len(set(words[i : i + WORD_RUN])) == 1 for i in range(len(words) - WORD_RUN + 1))


def degenerate_share(outputs: Sequence[str]) -> float:
    """Share of ``outputs`` that are degenerate (0.0 for no outputs)."""
    return sum(map(is_degenerate, outputs)) / len(outputs) if outputs else 0.0
