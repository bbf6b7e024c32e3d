"""Where PII sits in a text: a verbatim occurrence of a value (what the leak rate counts), placeholder
counts of a masked text, and the gold PII strings of a real (text, masked text) pair, derived by
aligning the two (``derive_pii``), for datasets that do not list them.
"""

from __future__ import annotations

import re
from collections import Counter
from difflib import SequenceMatcher

from plad.tasks.anonymization.generator import PLACEHOLDER


def _is_word(char: str) -> bool:
    return char.isalnum() or char == "_"


def contains(text: str, value: str) -> bool:
    """Verbatim, case-sensitive occurrence not glued to other word characters ("Al" not in "All")."""
    if not value:
        return False
    start = text.find(value)
    while start != -1:
        end = start + len(value)
        glued_left = start > 0 and _is_word(value[0]) and _is_word(text[start - 1])
        glued_right = end < len(text) and _is_word(value[-1]) and _is_word(text[end])
        if not (glued_left or glued_right):
            return True
        start = text.find(value, start + 1)
    return False


def placeholder_counts(text: str) -> Counter:
    return Counter(PLACEHOLDER.findall(text))


def _split_region(src: str, tgt: str) -> list[tuple[str, str]] | None:
    """Values of one replaced region: ``tgt`` is literals around placeholders, anchored in ``src``
    ("Amy," vs "[NAME]," -> "Amy"); None when the literals do not line up. Inner literals are
    matched right to left, so "[DATE], [NAME]" splits "May 2, 2001, Ann" at its last comma."""
    parts = PLACEHOLDER.split(tgt)
    literals, types = parts[0::2], parts[1::2]
    start, stop = len(literals[0]), len(src) - len(literals[-1])
    if not (src.startswith(literals[0]) and src.endswith(literals[-1])) or stop <= start:
        return None
    out = []
    for k in range(len(types) - 1, -1, -1):
        at = start if k == 0 else src.rfind(literals[k], start + 1, stop - 1)
        if at == -1:
            return None
        begin = at if k == 0 else at + len(literals[k])
        value = src[begin:stop].strip()
        if not value:
            return None
        out.append((value, types[k]))
        stop = at
    return out[::-1]


def derive_pii(text: str, masked: str) -> tuple[list[str], list[str]]:
    """Gold PII strings of ``text`` = the spans that ``masked`` replaces by ``[TYPE]`` placeholders.

    difflib aligns the two texts by whitespace-separated chunks; in each replaced region the
    literals around the placeholders are anchored in the source ("[FIRSTNAME] [LASTNAME]," splits
    "Mary Ann Smith," at the last space). A region whose literals do not line up becomes one
    value typed by its first placeholder.
    """
    src, tgt = list(re.finditer(r"\S+", text)), list(re.finditer(r"\S+", masked))
    matcher = SequenceMatcher(None, [m.group() for m in src], [m.group() for m in tgt], autojunk=False)
    values: list[tuple[str, str]] = []
    for op, i1, i2, j1, j2 in matcher.get_opcodes():
        if op != "replace":
            continue
        region, masked_region = text[src[i1].start() : src[i2 - 1].end()], masked[tgt[j1].start() : tgt[j2 - 1].end()]
        types = PLACEHOLDER.findall(masked_region)
        if types:
            values += _split_region(region, masked_region) or [(region, types[0])]
    unique = list(dict.fromkeys(values))
    return [v for v, _ in unique], [t for _, t in unique]
