"""The out-of-distribution anonymization test set shipped with the package (``eval.split=ood``).

``ood.jsonl`` (next to this module) holds hand-written sentences, written independently of the embedded
generator's templates: chat messages, support tickets, medical notes, CVs, forum posts, e-mails,
banking, IT logs, HR forms and shop messages, with names from many cultures, addresses inside
sentences, dates in many formats and phones of many countries. One JSON object per line: ``id``,
``text``, ``reference`` (the text with each gold value replaced by its ``[TYPE]`` placeholder),
``pii_values``, ``pii_types``, ``register``. Every line is checked when read, so a hand edit that
breaks the gold (a value not in its text, a reference that is not the text masked) fails loudly.
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable
from importlib import resources
from pathlib import Path
from typing import Any

from datasets import Dataset, Features, Value

from plad.checks import InputError

OOD_FILE = "ood.jsonl"
# A second hand-written set, written apart from ``ood.jsonl`` (no sentence, PII value or distinctive
# term shared; a test checks): validation rows in the OOD style (``task.validation_dev``), so that
# choices made on validation see the kind of text the OOD test set holds, without seeing that set.
DEV_FILE = "dev.jsonl"
# A third, written apart from both (a test checks): 128 texts in the same registers, used only as
# prompts without labels (``pairs.split=unlabeled_handwritten``), so the pairs can hold the kind of
# text the teacher's advantage is on. Their gold is read for the pair diagnostics alone.
UNLABELED_FILE = "unlabeled.jsonl"
FIELDS = {"id": str, "text": str, "reference": str, "pii_values": list, "pii_types": list, "register": str}
TYPE_NAME = re.compile(r"[A-Z][A-Z0-9_]*")


def ood_path(name: str = OOD_FILE) -> Path:
    """A shipped file (package data of ``plad.tasks.anonymization``, so an installed wheel has it)."""
    return Path(str(resources.files("plad.tasks.anonymization") / name))


def value_pattern(value: str) -> re.Pattern:
    """A verbatim occurrence not glued to other word characters, as ``spans.contains`` counts one."""
    left = r"(?<!\w)" if re.match(r"\w", value[0]) else ""
    right = r"(?!\w)" if re.match(r"\w", value[-1]) else ""
    return re.compile(left + re.escape(value) + right)


def mask(text: str, values: list[str], types: list[str]) -> str:
    """``text`` with every occurrence of each value replaced by ``[TYPE]``, longest value first
    (so "Rebecca Jane Holt" is masked whole before a shorter value could split it)."""
    for value, kind in sorted(zip(values, types), key=lambda p: -len(p[0])):
        text = value_pattern(value).sub(f"[{kind}]", text)
    return text


def check_row(row: Any, where: str) -> dict[str, Any]:
    """One line's fields, types and gold consistency; a ValueError names the line and the field."""
    if not isinstance(row, dict):
        raise InputError(f"{where}: expected a JSON object, got {type(row).__name__}")
    for field, kind in FIELDS.items():
        if not isinstance(row.get(field), kind):
            raise InputError(f"{where}: {field}: expected a {kind.__name__}, got {row.get(field)!r}")
    values, types = row["pii_values"], row["pii_types"]
    if len(values) != len(types):
        raise InputError(f"{where}: pii_types: expected {len(values)} types (one per value), got {len(types)}")
    for value, kind in zip(values, types):
        if not isinstance(value, str) or not value.strip():
            raise InputError(f"{where}: pii_values: expected non-empty strings, got {value!r}")
        if not isinstance(kind, str) or not TYPE_NAME.fullmatch(kind):
            raise InputError(f"{where}: pii_types: expected upper-case type names such as NAME, got {kind!r}")
        if not value_pattern(value).search(row["text"]):
            raise InputError(f"{where}: pii_values: expected {value!r} verbatim in the text, got no occurrence")
    expected = mask(row["text"], values, types)
    if row["reference"] != expected:
        raise InputError(
            f"{where}: reference: expected the text with its values masked ({expected!r}), got {row['reference']!r}"
        )
    return {k: row[k] for k in FIELDS}


def read_ood(path: str | Path | None = None) -> list[dict[str, Any]]:
    """Every row of the OOD file (default: the shipped one), each checked by ``check_row``."""
    path = Path(path) if path is not None else ood_path()
    rows, ids = [], set()
    for n, line in enumerate(path.read_text(encoding="utf-8").splitlines(), 1):
        if not line.strip():
            continue
        where = f"{path.name}:{n}"
        try:
            raw = json.loads(line)
        except json.JSONDecodeError as e:
            raise InputError(f"{where}: expected one JSON object per line, got {e.msg}") from e
        row = check_row(raw, where)
        if row["id"] in ids:
            raise InputError(f"{where}: id: expected unique ids, got {row['id']!r} twice")
        ids.add(row["id"])
        rows.append(row)
    if not rows:
        raise InputError(f"{path}: expected at least one row, got an empty file")
    return rows


def ood_split(format_prompt: Callable[[str], str], features: Features, path: str | Path | None = None) -> Dataset:
    """The OOD rows as a split of the anonymization task: its columns plus ``register``."""
    columns = Features({**features, "register": Value("string")})
    rows = [{**r, "prompt": format_prompt(r["text"]), "templates": []} for r in read_ood(path)]
    return Dataset.from_list([{k: r[k] for k in columns} for r in rows], features=columns)
