"""Checks of user data files and of the rows read from them, so a bad file stops the run with one
line naming the file (or column) and what was expected, before anything is cached or trained.

``datasets`` reports an empty file as a bare StopIteration, bad JSON as a generic generation
error and bad bytes as a codec message without the file name; these helpers turn each into a
``task.source: ...`` line. Row values are checked because ``convert`` would otherwise turn a
missing cell into the string "None" (or a CSV gap into "nan") and train on it.
"""

from __future__ import annotations

import codecs
import json
import logging
import math
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from plad.checks import InputError

log = logging.getLogger(__name__)
FIELD = "task.source"
TEXT_SUFFIXES = (".jsonl", ".json", ".csv")


def check_not_empty(path: Path) -> None:
    if path.is_file() and path.stat().st_size < 4096 and not path.read_bytes().strip():
        raise InputError(f"{FIELD}: expected a data file with rows, got an empty file {path}")


def check_utf8(path: Path) -> None:
    """Arrow's JSON reader accepts bad bytes after the first block and fails only when a row is read."""
    if not path.is_file() or path.suffix not in TEXT_SUFFIXES:
        return
    decoder, lineno = codecs.getincrementaldecoder("utf-8")(), 1
    with path.open("rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            try:
                decoder.decode(chunk)
            except UnicodeDecodeError as e:
                where = lineno + e.object.count(b"\n", 0, e.start)  # e.object: carried-over bytes + chunk
                raise InputError(
                    f"{FIELD}: line {where} of {path}: expected UTF-8 text, got byte {e.object[e.start]:#04x}"
                ) from e
            lineno += chunk.count(b"\n")
    try:
        decoder.decode(b"", final=True)
    except UnicodeDecodeError as e:
        raise InputError(f"{FIELD}: line {lineno} of {path}: expected UTF-8 text, got a truncated character") from e


def _first_bad_line(path: Path) -> str | None:
    """Where a text file stops being UTF-8 (or, for JSON Lines, valid JSON objects)."""
    with path.open("rb") as f:
        for lineno, raw in enumerate(f, 1):
            try:
                line = raw.decode("utf-8")
            except UnicodeDecodeError as e:
                return f"line {lineno} of {path}: expected UTF-8 text, got byte {raw[e.start]:#04x}"
            if path.suffix != ".jsonl" or not line.strip():
                continue
            try:
                row = json.loads(line)
            except json.JSONDecodeError as e:
                return f"line {lineno} of {path}: expected a JSON object, got invalid JSON ({e.msg})"
            if not isinstance(row, dict):
                return f"line {lineno} of {path}: expected a JSON object, got {type(row).__name__}"
    return None


def load_error(files: Mapping[str, Path], exc: BaseException) -> InputError:
    """One line for a file ``datasets`` could not read: the first bad line when we can find it."""
    for path in files.values():
        paths = sorted(p for p in path.rglob("*") if p.is_file()) if path.is_dir() else [path]
        for p in paths:
            if p.suffix in TEXT_SUFFIXES and (where := _first_bad_line(p)):
                return InputError(f"{FIELD}: {where}")
    cause = exc.__cause__ or exc
    detail = (str(cause).strip().splitlines() or [""])[0][:200]
    names = ", ".join(str(p) for p in files.values())
    return InputError(f"{FIELD}: expected a readable data file, got {type(cause).__name__} reading {names}: {detail}")


def check_value(column: str, value: Any, row: str) -> None:
    """A text column's cell: a non-empty string (not None, NaN, a number or whitespace)."""
    if isinstance(value, str) and value.strip():
        return
    if isinstance(value, float) and math.isnan(value):
        shown = "nan"
    else:
        shown = repr(value)[:60] if value is None or isinstance(value, str) else f"{type(value).__name__} {value!r:.60}"
    raise InputError(
        f"task.columns.{column}: expected a non-empty string in every row, got {shown} in source row {row}"
    )


def check_unique_ids(ids: Sequence[str]) -> None:
    seen: set[str] = set()
    for i in ids:
        if i in seen:
            raise InputError(f"task.columns.id: expected unique ids across all splits, got duplicates (first: {i!r})")
        seen.add(i)


def warn_long_texts(data: Mapping[str, Any], max_prompt_tokens: int, max_new_tokens: int) -> dict[str, int]:
    """Truncation, not an error: a prompt over ``task.max_prompt_tokens`` is cut (decoder-only models
    keep its end, next to the completion; encoder-decoders its start) and a reference over
    ``task.max_new_tokens`` loses its end and its EOS. One long row must not make a real data set
    unusable, but the user should know. Every whitespace-separated word is at least one token for
    the byte-level BPE and SentencePiece tokenizers used here, so counting words never over-reports.
    Returns the counts per column."""
    counts = {"prompt": 0, "reference": 0}
    for split in data.values():
        counts["prompt"] += sum(len(p.split()) > max_prompt_tokens for p in split["prompt"])
        counts["reference"] += sum(len(r.split()) > max_new_tokens for r in split["reference"])
    n = sum(len(split) for split in data.values())
    if counts["prompt"]:
        log.warning(
            "task.max_prompt_tokens: %d of %d prompts are longer than %d tokens and will be truncated",
            counts["prompt"],
            n,
            max_prompt_tokens,
        )
    if counts["reference"]:
        log.warning(
            "task.max_new_tokens: %d of %d references are longer than %d tokens and will be truncated (without EOS)",
            counts["reference"],
            n,
            max_new_tokens,
        )
    return counts
