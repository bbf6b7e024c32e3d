"""Content-addressed, atomic, self-verifying on-disk cache shared by every pipeline stage.

A stage's output lives in ``<root>/<kind>/<fingerprint>/``. The fingerprint hashes everything
the output depends on (config subtree, input fingerprints, a code version string), never a run
directory, so a multirun reuses what an earlier job built.

Integrity: an entry is written into a temporary sibling and renamed into place; its ``COMPLETE``
marker is a manifest (relative path, size, sha256) of every file written. ``is_complete`` trusts an
entry only if the marker parses and every listed file matches it, so a truncated or bit-flipped
shard, a missing weights file or an empty marker is never used: it is logged once (one warning) and
moved out of the way, and the caller rebuilds it. Cost: the first check of an entry in a process
hashes its files (sha256, about 1 GB/s: a 270 MB model adds ~0.3 s); later checks in the same
process only ``stat`` them and re-hash when a size, mtime or inode changed. Files added to an entry
after it was published (a nested entry, a library's cache file) are not part of it and are ignored.

Concurrency: publishing and discarding happen under an exclusive per-entry file lock. A complete
entry is never removed: a writer that finds one already in place (another process won the race)
discards its own temporary copy and the caller uses the winner's. ``plad.locks.locked`` lets a builder
hold the lock for a whole build so a concurrent run of the same config waits and then reuses the entry.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import shutil
import tempfile
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from plad.jsonable import plain
from plad.locks import locked, owned, release, unheld

MARKER = "COMPLETE"
MARKER_FORMAT = 1  # bump when the marker layout changes: older entries are then rebuilt
TMP, TRASH = ".tmp-", ".trash-"  # unpublished and discarded entries: .<entry>.tmp-<id>, .<entry>.trash-<id>
log = logging.getLogger("plad")
_verified: dict[str, tuple[Any, ...]] = {}  # entry -> stat signature of its files when last hashed


def fingerprint(*parts: Any, length: int = 16) -> str:
    """Stable hash of JSON-able parts (dicts, lists, DictConfigs, strings, numbers)."""
    blob = json.dumps([plain(p) for p in parts], sort_keys=True, default=str)
    return hashlib.sha256(blob.encode()).hexdigest()[:length]


# One version per cached stage. Bump a stage's version when what it writes changes: its entries are
# rebuilt, and the stages after it follow because their keys include their inputs' keys.
STAGE_VERSIONS = {
    "data": "data-v1",  # task splits (the task's own CODE_VERSION covers its generator)
    "tokenizers": "tokenizer-v1",  # trained or GGUF-converted tokenizers
    "models": "sft-v2",  # SFT'd teacher / initial student (v2: chosen on validation)
    "pairs": "pairs-v2",  # pseudo-preference pairs (v2: generated token ids + finished flags)
    "pair_tokens": "pair-tokens-v3",  # a pair set tokenised for one tokenizer and length budget (v2: ids, v3: prompt text)
    "teacher_topk": "teacher-topk-v1",  # the teacher's top-k log-probs over a tokenized pair set
    "eval": "eval-v2",  # outputs of fixed models on the evaluation split (v2: decoding keys)
}


def stage_key(stage: str, *parts: Any) -> str:
    """The cache key of an entry of ``stage``: its version and everything its output depends on
    (config subtree, its inputs' keys). Every stage computes its key here and nowhere else."""
    if stage not in STAGE_VERSIONS:
        raise KeyError(f"cache stage: expected one of {list(STAGE_VERSIONS)}, got {stage!r}")
    return fingerprint(stage, STAGE_VERSIONS[stage], *parts)


def atomic_write(path: str | os.PathLike, data: str | bytes) -> Path:
    """Write a whole file or none: into a temporary sibling, flushed to disk, then renamed over
    ``path``. A reader (a later step, ``ckpt_path=last``, the report) never sees half a file, and a
    kill or a full disk mid-write leaves the previous version (or nothing) in place."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.tmp-", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data.encode() if isinstance(data, str) else data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        try:
            os.unlink(tmp)
        except FileNotFoundError:
            pass
        raise
    return path


_content: dict[tuple[Any, ...], str] = {}
MIB = 1 << 20


def content_key(path: str | os.PathLike) -> str:
    """What a file, or every file of a directory, holds, cheaply: size, mtime and a sha256 of the
    first and the last MiB of each (a multi-GB weight file costs two reads; replacing or rewriting
    it, even at the same size, changes the mtime). Memoized per process on the files' stat."""
    path = Path(path)
    files = sorted(p for p in path.rglob("*") if p.is_file()) if path.is_dir() else [path]
    stats = [(str(p.relative_to(path)) if path.is_dir() else p.name, p.stat()) for p in files]
    signature = (str(path), *((rel, st.st_size, st.st_mtime_ns) for rel, st in stats))
    if signature not in _content:
        h = hashlib.sha256()
        for (rel, st), p in zip(stats, files):
            h.update(f"{rel}\x00{st.st_size}\x00{st.st_mtime_ns}\x00".encode())
            with open(p, "rb") as f:
                h.update(f.read(MIB))
                if st.st_size > 2 * MIB:
                    f.seek(-MIB, os.SEEK_END)
                    h.update(f.read(MIB))
                elif st.st_size > MIB:
                    h.update(f.read())
        _content[signature] = h.hexdigest()[:16]
    return _content[signature]


def file_hash(path: str | os.PathLike, length: int = 16) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()[:length]


def entry_dir(root: str | os.PathLike, kind: str, fp: str) -> Path:
    return Path(root) / kind / fp


def _files(root: Path) -> list[str]:
    """Relative paths of every regular file under ``root`` except the marker, sorted."""
    found = []
    for top, dirs, names in os.walk(root):
        dirs.sort()
        for name in names:
            rel = os.path.relpath(os.path.join(top, name), root).replace(os.sep, "/")
            if rel != MARKER and os.path.isfile(os.path.join(top, name)):
                found.append(rel)
    return sorted(found)


def write_marker(path: str | os.PathLike, name: str | None = None) -> None:
    """Write the ``COMPLETE`` manifest of every file now in ``path`` (atomic_dir calls this)."""
    path = Path(path)
    files = {rel: [(path / rel).stat().st_size, file_hash(path / rel, length=64)] for rel in _files(path)}
    marker = {"format": MARKER_FORMAT, "fingerprint": name or path.name, "files": files}
    tmp = path / f".{MARKER}.tmp"
    tmp.write_text(json.dumps(marker, indent=0))
    os.replace(tmp, path / MARKER)


def verify(path: str | os.PathLike) -> str | None:
    """None when the entry at ``path`` is whole, else what is wrong with it (a short phrase)."""
    path = Path(path)
    try:
        text = (path / MARKER).read_text()
    except FileNotFoundError:
        return "no COMPLETE marker" if path.exists() else "missing"
    except (OSError, UnicodeDecodeError) as e:
        return f"unreadable COMPLETE marker ({e})"
    if not text.strip():
        return "empty COMPLETE marker"
    try:
        marker = json.loads(text)
        listed = [(str(rel), int(size), str(digest)) for rel, (size, digest) in marker["files"].items()]
    except (ValueError, KeyError, TypeError, AttributeError):
        return "COMPLETE marker has no readable manifest (older or damaged marker)"
    if marker.get("format") != MARKER_FORMAT:
        return f"COMPLETE marker format {marker.get('format')!r}, this code writes {MARKER_FORMAT}"
    if marker.get("fingerprint") != path.name:
        return f"COMPLETE marker belongs to {marker.get('fingerprint')!r} (an entry copied under another key)"
    try:
        signature: list[Any] = [(path / MARKER).stat().st_mtime_ns]
    except OSError:
        return "COMPLETE marker vanished while read"
    for rel, size, _ in listed:
        try:
            st = (path / rel).stat()
        except OSError:
            return f"{rel} is missing"
        if st.st_size != size:
            return f"{rel} has {st.st_size} bytes, the manifest says {size}"
        signature.append((rel, st.st_dev, st.st_ino, st.st_size, st.st_mtime_ns))
    key = os.path.abspath(path)
    if _verified.get(key) == tuple(signature):
        return None
    for rel, _, digest in listed:
        try:
            if file_hash(path / rel, length=64) != digest:
                return f"{rel} does not match its checksum"
        except OSError as e:
            return f"{rel} is unreadable ({e.strerror})"
    _verified[key] = tuple(signature)
    return None


def _discard(path: Path, problem: str) -> None:
    """Move a damaged entry aside, then delete it; the caller holds its lock."""
    log.warning("cache: %s is damaged (%s); discarding it and rebuilding", path, problem)
    _verified.pop(os.path.abspath(path), None)
    trash = path.with_name(f".{path.name}{TRASH}{uuid.uuid4().hex[:8]}")
    try:
        os.replace(path, trash)
    except FileNotFoundError:
        return
    if trash.is_dir() and not trash.is_symlink():
        shutil.rmtree(trash, ignore_errors=True)
    else:
        trash.unlink()


def is_complete(path: str | os.PathLike) -> bool:
    """True only for a whole, verified entry; a damaged one is discarded (one warning) to be rebuilt."""
    path = Path(path)
    problem = verify(path)
    if problem is None or problem == "missing":
        return problem is None
    with locked(path):  # re-check: another process may have replaced or removed it meanwhile
        problem = verify(path)
        if problem is None or problem == "missing":
            return problem is None
        _discard(path, problem)
    return False


@contextmanager
def atomic_dir(final: str | os.PathLike, replace: bool = False) -> Iterator[Path]:
    """Yield a temp dir; on success it gets a manifest marker and is renamed to ``final``.

    On error the temp dir is removed and ``final`` is untouched. If a whole entry is already at
    ``final`` (a concurrent writer won), the temp dir is discarded and that entry kept, unless
    ``replace`` (a forced rebuild): then the old entry is moved aside as trash, not deleted (a
    reader may be loading it; a later run's ``sweep`` removes it), and the new one takes its place.
    A damaged or unmarked ``final`` is discarded (one warning) and replaced. The temp dir is owned
    (a lock beside it, held while it exists): a SIGKILL leaves it unowned, and ``sweep`` removes it.
    """
    final = Path(final)
    final.parent.mkdir(parents=True, exist_ok=True)
    tmp = final.parent / f".{final.name}{TMP}{uuid.uuid4().hex[:12]}"
    with owned(tmp.with_name(tmp.name + ".lock")):
        tmp.mkdir()
        try:
            yield tmp
            write_marker(tmp, final.name)
            with locked(final):
                if replace and final.exists():
                    os.replace(final, final.with_name(f".{final.name}{TRASH}{uuid.uuid4().hex[:8]}"))
                    _verified.pop(os.path.abspath(final), None)
                elif is_complete(final):
                    log.debug("cache: %s was completed by another writer; using it", final)
                    shutil.rmtree(tmp, ignore_errors=True)
                    return
                os.replace(tmp, final)
        except BaseException:
            shutil.rmtree(tmp, ignore_errors=True)
            raise


def sweep(root: str | os.PathLike) -> list[Path]:
    """Remove what killed processes left under the cache ``root``: unpublished temp dirs whose
    owner is gone (their lock is free) and trash dirs of discarded entries nobody is discarding
    now (the entry's lock is free). Looks four levels deep (kinds, entries, pair shards and the
    tokenized pair tables); returns what it removed. Work in progress is never touched: its lock
    is held."""
    removed: list[Path] = []
    level = [Path(root)]
    for _ in range(4):
        children: list[Path] = []
        for d in level:
            try:
                entries = list(os.scandir(d))
            except (FileNotFoundError, NotADirectoryError):
                continue
            for e in entries:
                if not e.is_dir(follow_symlinks=False):
                    continue
                path = Path(e.path)
                if e.name.startswith(".") and (TMP in e.name or TRASH in e.name):
                    if TMP in e.name:
                        lock = path.with_name(e.name + ".lock")
                    else:
                        lock = path.with_name(f"{e.name.split(TRASH)[0]}.lock")  # .<entry>.lock
                    fd = unheld(lock)
                    if fd is None:
                        continue
                    try:
                        if path.exists():
                            shutil.rmtree(path, ignore_errors=True)
                            removed.append(path)
                    finally:
                        release(lock, fd)
                else:
                    children.append(path)
        level = children
    for path in removed:
        log.info("cache: removed %s, left by a killed run", path)
    return removed
