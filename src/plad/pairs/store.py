"""On-disk layout of a pair set: resumable shards, then one verified, immutable entry.

``<entry>.partial/teacher/<k>`` and ``<entry>.partial/shards/<k>`` hold per-shard results, each
written atomically (temp dir + rename + COMPLETE manifest), so a killed run resumes from finished
shards. ``<entry>.partial/OWNER`` names the entry the shards belong to: a partial dir that names
another entry, or none, or whose OWNER is unreadable is discarded with one warning, and a damaged
shard is discarded by the cache's verification, so a resumed build only ever reuses its own
intact shards. The merged entry ``<entry>/`` holds Arrow datasets, ``stats.json`` and
``manifest.json`` (row counts + a checksum of every file); its COMPLETE manifest is verified on
load, so a truncated or garbled entry is rebuilt instead of silently used.
"""

from __future__ import annotations

import json
import logging
import os
import shutil
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import datasets
from datasets import Dataset, load_from_disk

from plad.cache import TRASH, atomic_dir, file_hash, is_complete
from plad.locks import locked

TABLES = ("pairwise", "listwise")
OWNER = "OWNER"
log = logging.getLogger("plad")


class CorruptEntry(Exception):
    """A cache entry whose files disagree with its manifest."""


@contextmanager
def quiet_datasets() -> Iterator[None]:
    """Hide datasets' per-save progress bars (one per shard table would drown the real ones)."""
    was_disabled = datasets.are_progress_bars_disabled()
    datasets.disable_progress_bars()
    try:
        yield
    finally:
        if not was_disabled:
            datasets.enable_progress_bars()


def save(ds: Dataset, path: Path) -> None:
    """save_to_disk that also round-trips an empty table (it needs one explicit shard)."""
    ds.save_to_disk(str(path), num_shards=1 if len(ds) == 0 else None)


def partial_dir(entry: Path) -> Path:
    return entry.with_name(entry.name + ".partial")


def shard_dir(entry: Path, kind: str, k: int) -> Path:
    return partial_dir(entry) / kind / f"{k:05d}"


def _partial_problem(entry: Path) -> str | None:
    """None when ``<entry>.partial`` is absent or belongs to ``entry``, else why it does not."""
    part = partial_dir(entry)
    if not part.exists():
        return None
    try:
        owner = json.loads((part / OWNER).read_text())["entry"]
    except FileNotFoundError:
        return "it names no owner (older layout or unknown config)"
    except (OSError, ValueError, KeyError, TypeError) as e:
        return f"its {OWNER} file is unreadable ({type(e).__name__})"
    return None if owner == entry.name else f"it belongs to entry {owner}"


def check_partial(entry: Path) -> None:
    """Discard (one warning) a partial dir left by another config or unreadable."""
    if _partial_problem(entry) is None:
        return
    part = partial_dir(entry)
    with locked(part):  # re-check: another rank may have discarded it and started afresh
        problem = _partial_problem(entry)
        if problem is None:
            return
        log.warning("pairs: discarding stale partial shards %s: %s", part, problem)
        trash = part.with_name(f".{part.name}{TRASH}{uuid.uuid4().hex[:8]}")
        try:
            os.replace(part, trash)
        except FileNotFoundError:  # removed meanwhile by a build that finished
            return
        shutil.rmtree(trash, ignore_errors=True)


def _claim_partial(entry: Path) -> None:
    """Create ``<entry>.partial`` with its OWNER record before any shard is written into it."""
    check_partial(entry)
    part = partial_dir(entry)
    with locked(part):
        if not (part / OWNER).is_file():
            part.mkdir(parents=True, exist_ok=True)
            tmp = part / f".{OWNER}.tmp-{os.getpid()}"
            tmp.write_text(json.dumps({"entry": entry.name}))
            os.replace(tmp, part / OWNER)


def shard_done(entry: Path, kind: str, k: int) -> bool:
    """Shard ``k`` is written, intact and this entry's (stale or damaged shards are discarded)."""
    check_partial(entry)
    return is_complete(shard_dir(entry, kind, k))


def write_shard(entry: Path, kind: str, k: int, tables: dict[str, Dataset], meta: dict[str, Any]) -> None:
    _claim_partial(entry)
    with atomic_dir(shard_dir(entry, kind, k)) as tmp, quiet_datasets():
        for name, ds in tables.items():
            save(ds, tmp / name)
        (tmp / "meta.json").write_text(json.dumps(meta, indent=1))


def read_shard(entry: Path, kind: str, k: int) -> tuple[dict[str, Dataset], dict[str, Any]]:
    d = shard_dir(entry, kind, k)
    tables = {p.name: load_from_disk(str(p)) for p in sorted(d.iterdir()) if p.is_dir()}
    return tables, json.loads((d / "meta.json").read_text())


def _table_files(table_dir: Path, root: Path) -> dict[str, str]:
    return {str(p.relative_to(root)): file_hash(p) for p in sorted(table_dir.rglob("*")) if p.is_file()}


def write_entry(entry: Path, tables: dict[str, Dataset | None], stats: dict[str, Any], replace: bool = False) -> None:
    """Save the merged tables with a manifest; the entry appears only once it is whole. ``replace``
    (pairs.rebuild): swap out an existing entry instead of keeping it (``plad.cache.atomic_dir``)."""
    with atomic_dir(entry, replace=replace) as tmp, quiet_datasets():
        manifest: dict[str, Any] = {"tables": {}}
        for name, ds in tables.items():
            if ds is None:
                continue
            save(ds, tmp / name)
            manifest["tables"][name] = {"rows": len(ds), "files": _table_files(tmp / name, tmp)}
        (tmp / "stats.json").write_text(json.dumps(stats, indent=1))
        (tmp / "manifest.json").write_text(json.dumps(manifest, indent=1))


def load_entry(entry: Path) -> tuple[dict[str, Dataset | None], dict[str, Any]]:
    """Tables and stats of a complete entry; raises ``CorruptEntry`` naming the first problem.

    File checksums are verified by ``is_complete`` (the COMPLETE manifest); a damaged entry is
    discarded there, with one warning."""
    if not is_complete(entry):
        raise CorruptEntry(f"{entry}: missing, unmarked or damaged")
    try:
        manifest = json.loads((entry / "manifest.json").read_text())
        stats = json.loads((entry / "stats.json").read_text())
    except (OSError, ValueError) as e:
        raise CorruptEntry(f"{entry}: unreadable manifest/stats ({e})") from e
    tables: dict[str, Dataset | None] = dict.fromkeys(TABLES)
    for name, info in manifest["tables"].items():
        try:
            ds = load_from_disk(str(entry / name))
        except Exception as e:  # noqa: BLE001 - any load failure means a damaged entry
            raise CorruptEntry(f"{entry}: {name} does not load ({e})") from e
        if len(ds) != info["rows"]:
            raise CorruptEntry(f"{entry}: {name} has {len(ds)} rows, manifest says {info['rows']}")
        tables[name] = ds
    return tables, stats


def remove(path: Path) -> None:
    shutil.rmtree(path, ignore_errors=True)
