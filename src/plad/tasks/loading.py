"""Reading a task's real data: a hub dataset or local files, and seeded split carving (``DataTask``).

A task either generates its data (``source: null``) or reads a hub dataset / local files and maps
the source's columns to ours. Real datasets rarely come with the four splits PLaD needs
(train / unlabeled / validation / test), so missing splits are carved from a seeded shuffle of a
pool: the same config always yields the same rows, and carved splits never overlap.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from datasets import Dataset, DatasetDict, load_dataset

from plad.cache import file_hash
from plad.checks import InputError
from plad.tasks.source_checks import check_not_empty, check_utf8, load_error

log = logging.getLogger(__name__)

FORMATS = {".jsonl": "json", ".json": "json", ".csv": "csv", ".parquet": "parquet", ".pq": "parquet"}
SPLIT_ALIASES = {"validation": ("validation", "valid", "val", "dev"), "test": ("test",)}


def _local_files(source: str | Mapping[str, str]) -> dict[str, Path] | None:
    """Split -> file for local sources; None for a hub name. Missing local files raise."""
    if isinstance(source, Mapping):
        files = {str(k): Path(v).expanduser() for k, v in source.items()}
    else:
        path = Path(source).expanduser()
        looks_local = path.suffix in FORMATS or str(source).startswith(("/", ".", "~"))
        if not path.exists() and not looks_local:
            return None
        files = {"train": path}
    for path in files.values():
        if not path.exists():
            raise InputError(f"task.source: file not found: {path}")
        if path.is_file() and path.suffix not in FORMATS:
            raise InputError(f"task.source: expected a {'/'.join(FORMATS)} file, got {path}")
        check_not_empty(path)
    return files


def load_source(source: str | Mapping[str, str]) -> DatasetDict:
    """A local file (or split -> file mapping, or folder of data files) or a hub dataset name."""
    files = _local_files(source)
    if files is None:
        return load_dataset(str(source))  # hub name; needs network or a populated HF cache
    formats = {FORMATS[p.suffix] for p in files.values() if p.is_file()}
    if len(formats) > 1:
        raise InputError(f"task.source: expected files of one format, got {sorted(formats)}")
    for path in files.values():
        check_utf8(path)
    try:
        if len(files) == 1 and next(iter(files.values())).is_dir():
            return load_dataset(str(next(iter(files.values()))))
        return load_dataset(formats.pop(), data_files={k: str(p) for k, p in files.items()})
    except Exception as e:  # noqa: BLE001  (datasets raises StopIteration, codec and Arrow errors alike)
        raise load_error(files, e) from e


def source_hashes(source: str | Mapping[str, str] | None) -> dict[str, str]:
    """Content hashes of local source files, so editing a file invalidates cached stages; for a hub
    dataset, the revision of its local snapshot when one is known (the run log says when not)."""
    if source is None:
        return {}
    if (files := _local_files(source)) is None:
        return hub_revision(str(source))
    out = {}
    for split, path in files.items():
        paths = sorted(p for p in path.rglob("*") if p.is_file()) if path.is_dir() else [path]
        out.update({f"{split}:{p}": file_hash(p) for p in paths})
    return out


def hub_revision(name: str) -> dict[str, str]:
    """{"revision": commit} of the newest local snapshot of hub dataset ``name``, else {} (logged)."""
    try:
        from huggingface_hub import scan_cache_dir

        repos = [r for r in scan_cache_dir().repos if r.repo_type == "dataset" and r.repo_id == name]
        revisions = sorted((rev for r in repos for rev in r.revisions), key=lambda rev: rev.last_modified)
    except Exception:  # noqa: BLE001 - no hub cache at all
        revisions = []
    if revisions:
        return {"revision": revisions[-1].commit_hash}
    log.info("task.source: %s is keyed by its name only (no local snapshot revision known)", name)
    return {}


def split_plan(split: Any, available: Sequence[str], splits: Sequence[str]) -> dict[str, list[str]]:
    """Our split -> source splits read directly; key "train" is the pool the rest are carved from.

    ``split`` is null (use source splits named like ours, carve the rest from "train" or from
    everything), a name or list (carve all four splits from their union), or a mapping whose keys
    are among ``splits`` (ours, ``plad.tasks.base.SPLITS``).
    """
    if split is None:
        plan = {}
        for ours, aliases in SPLIT_ALIASES.items():
            found = [a for a in aliases if a in available]
            if found:
                plan[ours] = found[:1]
        used = {names[0] for names in plan.values()}
        plan["train"] = ["train"] if "train" in available else [s for s in available if s not in used]
        if not plan["train"]:  # e.g. a lone "test" split: carve everything from it
            plan = {"train": list(available)}
    elif isinstance(split, str) or (isinstance(split, Sequence) and not isinstance(split, Mapping)):
        plan = {"train": [split] if isinstance(split, str) else list(split)}
    elif isinstance(split, Mapping):
        plan = {str(k): [v] if isinstance(v, str) else list(v) for k, v in split.items()}
        for key in plan:
            if key not in splits:
                raise InputError(f"task.split: expected keys among {', '.join(splits)}, got {key!r}")
        if "train" not in plan:
            used = {s for names in plan.values() for s in names}
            plan["train"] = [s for s in available if s not in used]
    else:
        raise InputError(f"task.split: expected null, a split name, a list or a mapping, got {split!r}")
    for names in plan.values():
        for name in names:
            if name not in available:
                raise InputError(f"task.split: source split {name!r} not found (available: {', '.join(available)})")
    if not plan["train"]:
        raise InputError("task.split: no source split left to carve train from")
    return plan


def carve_sizes(n_pool: int, sizes: dict[str, int]) -> dict[str, int]:
    """Requested sizes, scaled down proportionally when the pool is too small."""
    total = sum(sizes.values())
    if total <= n_pool:
        return dict(sizes)
    scaled = {name: n * n_pool // total for name, n in sizes.items()}
    for name, n in scaled.items():
        if n == 0:
            raise InputError(
                f"task.n_{name}: the data has only {n_pool} rows for {total} requested, split '{name}' would be empty"
            )
    log.warning("source has %d rows for %d requested; using %s", n_pool, total, scaled)
    return scaled


def check_columns(ds: Dataset, columns: Mapping[str, str], required: Sequence[str]) -> None:
    for ours in required:
        if ours not in columns:
            raise InputError(f"task.columns.{ours}: expected the name of a source column, got nothing")
    for ours, theirs in columns.items():
        if theirs not in ds.column_names:
            raise InputError(
                f"task.columns.{ours}: column {theirs!r} not in the data (available: {', '.join(ds.column_names)})"
            )
