"""Black-box teachers: teacher outputs read from a JSONL file instead of sampled from a model.

Each line is an object with ``id`` or ``prompt`` (which prompt it answers) and ``output`` (one
string) or ``outputs`` (a list of strings). Several lines may answer the same prompt; their
outputs are concatenated in file order. A line that matches no prompt, or a prompt that ends up
with no output, stops the run: a silent mismatch would quietly shrink or skew the pair set. An
empty output string stops it too: it is usually a failed API call, and as y+ it would teach the
student to stop at once.

``check_teacher_file`` validates the file on its own (run before any expensive stage);
``read_teacher_outputs`` also matches it against the unlabeled prompts.
"""

from __future__ import annotations

import json
from collections import defaultdict
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from plad.checks import InputError

FIELD = "pairs.teacher_outputs"


@dataclass
class TeacherRow:
    lineno: int
    key: str  # "id" or "prompt"
    name: str  # the id or prompt text it answers
    texts: list[str]  # whitespace-stripped outputs


def _texts(row: dict[str, Any], lineno: int) -> list[str]:
    if "outputs" in row:
        value = row["outputs"]
        if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
            raise InputError(f"{FIELD}: line {lineno}: expected 'outputs' to be a list of strings, got {value!r:.80}")
        texts = value
    elif "output" in row:
        if not isinstance(row["output"], str):
            raise InputError(f"{FIELD}: line {lineno}: expected 'output' to be a string, got {row['output']!r:.80}")
        texts = [row["output"]]
    else:
        raise InputError(f"{FIELD}: line {lineno}: expected an 'output' or 'outputs' field, got keys {sorted(row)}")
    texts = [t.strip() for t in texts]
    if any(not t for t in texts):
        raise InputError(f"{FIELD}: line {lineno}: expected non-empty output strings, got an empty one")
    return texts


def _parse_line(line: str, lineno: int) -> TeacherRow:
    try:
        row = json.loads(line)
    except json.JSONDecodeError as e:
        raise InputError(f"{FIELD}: line {lineno}: expected a JSON object, got invalid JSON ({e.msg})") from e
    if not isinstance(row, dict):
        raise InputError(f"{FIELD}: line {lineno}: expected a JSON object, got {type(row).__name__}")
    texts = _texts(row, lineno)
    for key in ("id", "prompt"):
        if key in row:
            return TeacherRow(lineno, key, str(row[key]), texts)
    raise InputError(f"{FIELD}: line {lineno}: expected an 'id' or 'prompt' field, got keys {sorted(row)}")


def check_teacher_file(path: str | Path) -> list[TeacherRow]:
    """The file's rows, or a one-line ValueError: missing file, bad encoding, bad line, no rows."""
    path = Path(path)
    if not path.is_file():
        raise InputError(
            f"{FIELD}: expected a JSONL file, got {str(path)!r} ({'a directory' if path.is_dir() else 'not found'})"
        )
    rows: list[TeacherRow] = []
    with path.open("rb") as f:
        for lineno, raw in enumerate(f, 1):
            try:
                line = raw.decode("utf-8")
            except UnicodeDecodeError as e:
                raise InputError(
                    f"{FIELD}: line {lineno}: expected UTF-8 text, got byte {raw[e.start]:#04x} at column {e.start + 1}"
                ) from e
            if line.strip():
                rows.append(_parse_line(line, lineno))
    if not rows:
        raise InputError(f"{FIELD}: expected at least one JSON line, got an empty file {str(path)!r}")
    return rows


def _first(names: list[str]) -> str:
    return ", ".join(n[:40] for n in names[:3])


def read_teacher_outputs(path: str | Path, ids: Sequence[str], prompts: Sequence[str]) -> list[list[str]]:
    """Teacher outputs per prompt (aligned with ``ids``/``prompts``), whitespace-stripped like sampled ones."""
    by_id = {i: n for n, i in enumerate(ids)}
    by_prompt: dict[str, list[int]] = defaultdict(list)
    for n, p in enumerate(prompts):
        by_prompt[p].append(n)
    outputs: list[list[str]] = [[] for _ in ids]
    unmatched: list[str] = []
    for row in check_teacher_file(path):
        targets = ([by_id[row.name]] if row.name in by_id else []) if row.key == "id" else by_prompt.get(row.name, [])
        if not targets:
            unmatched.append(row.name)
        for n in targets:
            outputs[n].extend(row.texts)
    if unmatched:
        raise InputError(f"{FIELD}: {len(unmatched)} rows match no prompt (first ids: {_first(unmatched)})")
    missing = [ids[n] for n, o in enumerate(outputs) if not o]
    if missing:
        raise InputError(f"{FIELD}: {len(missing)} prompts have no teacher output (first ids: {_first(missing)})")
    return outputs
