"""Black-box teachers: teacher outputs read from a JSONL file instead of sampled from a model.

Each line is an object with ``id`` or ``prompt`` (which prompt it answers) and ``output`` (one
string) or ``outputs`` (a list of strings). Several lines may answer the same prompt; their
outputs are concatenated in file order. A line that matches no prompt, or a prompt that ends up
with no output, stops the run: a silent mismatch would quietly shrink or skew the pair set.
"""
from __future__ import annotations

import json
from collections import defaultdict
from pathlib import Path
from typing import Any, Sequence

FIELD = "pairs.teacher_outputs"


def _texts(row: dict[str, Any], lineno: int) -> list[str]:
    if "outputs" in row:
        value = row["outputs"]
        if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
            raise ValueError(f"{FIELD}: line {lineno}: expected 'outputs' to be a list of strings, got {value!r:.80}")
        return value
    if "output" in row:
        if not isinstance(row["output"], str):
            raise ValueError(f"{FIELD}: line {lineno}: expected 'output' to be a string, got {row['output']!r:.80}")
        return [row["output"]]
    raise ValueError(f"{FIELD}: line {lineno}: expected an 'output' or 'outputs' field, got keys {sorted(row)}")


def _first(names: list[str]) -> str:
    return ", ".join(n[:40] for n in names[:3])


def read_teacher_outputs(path: str | Path, ids: Sequence[str], prompts: Sequence[str]) -> list[list[str]]:
    """Teacher outputs per prompt (aligned with ``ids``/``prompts``), whitespace-stripped like sampled ones."""
    path = Path(path)
    if not path.is_file():
        raise ValueError(f"{FIELD}: expected a JSONL file, got {str(path)!r} (not found)")
    by_id = {i: n for n, i in enumerate(ids)}
    by_prompt: dict[str, list[int]] = defaultdict(list)
    for n, p in enumerate(prompts):
        by_prompt[p].append(n)
    outputs: list[list[str]] = [[] for _ in ids]
    unmatched: list[str] = []
    with path.open(encoding="utf-8") as f:
        for lineno, line in enumerate(f, 1):
            if not line.strip():
                continue
            try:
                row = json.loads(line)
            except json.JSONDecodeError as e:
                raise ValueError(f"{FIELD}: line {lineno}: expected a JSON object, got invalid JSON ({e.msg})") from e
            if not isinstance(row, dict):
                raise ValueError(f"{FIELD}: line {lineno}: expected a JSON object, got {type(row).__name__}")
            texts = [t.strip() for t in _texts(row, lineno)]
            if "id" in row:
                name = str(row["id"])
                targets = [by_id[name]] if name in by_id else []
            elif "prompt" in row:
                name = str(row["prompt"])
                targets = by_prompt.get(name, [])
            else:
                raise ValueError(f"{FIELD}: line {lineno}: expected an 'id' or 'prompt' field, got keys {sorted(row)}")
            if not targets:
                unmatched.append(name)
            for n in targets:
                outputs[n].extend(texts)
    if unmatched:
        raise ValueError(f"{FIELD}: {len(unmatched)} rows match no prompt (first ids: {_first(unmatched)})")
    missing = [ids[n] for n, o in enumerate(outputs) if not o]
    if missing:
        raise ValueError(f"{FIELD}: {len(missing)} prompts have no teacher output (first ids: {_first(missing)})")
    return outputs
