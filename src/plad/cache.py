"""Content-addressed, atomic on-disk cache shared by every pipeline stage.

A stage's output lives in ``<root>/<kind>/<fingerprint>/``. The fingerprint hashes everything
the output depends on (config subtree, input fingerprints, a code version string), never a run
directory, so a multirun reuses what an earlier job built. Entries are written into a temporary
sibling directory and renamed into place at the end, and carry a ``COMPLETE`` marker, so a killed
run never leaves an entry that looks finished.
"""
from __future__ import annotations

import hashlib
import json
import os
import shutil
import tempfile
import uuid
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Iterator

from omegaconf import DictConfig, ListConfig, OmegaConf

MARKER = "COMPLETE"


def _plain(obj: Any) -> Any:
    if isinstance(obj, (DictConfig, ListConfig)):
        return OmegaConf.to_container(obj, resolve=True)
    if isinstance(obj, Path):
        return str(obj)
    if isinstance(obj, dict):
        return {str(k): _plain(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [_plain(v) for v in obj]
    return obj


def fingerprint(*parts: Any, length: int = 16) -> str:
    """Stable hash of JSON-able parts (dicts, lists, DictConfigs, strings, numbers)."""
    blob = json.dumps([_plain(p) for p in parts], sort_keys=True, default=str)
    return hashlib.sha256(blob.encode()).hexdigest()[:length]


def file_hash(path: str | os.PathLike, length: int = 16) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()[:length]


def entry_dir(root: str | os.PathLike, kind: str, fp: str) -> Path:
    return Path(root) / kind / fp


def is_complete(path: str | os.PathLike) -> bool:
    return (Path(path) / MARKER).is_file()


@contextmanager
def atomic_dir(final: str | os.PathLike) -> Iterator[Path]:
    """Yield a temp dir; on success it is marked complete and renamed to ``final``.

    On error the temp dir is removed and ``final`` is untouched. An existing incomplete ``final``
    (left by a killed run of an older layout) is replaced.
    """
    final = Path(final)
    final.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{final.name}.tmp-{uuid.uuid4().hex[:6]}-", dir=final.parent))
    try:
        yield tmp
        (tmp / MARKER).write_text(json.dumps({"fingerprint": final.name}))
        if final.exists():
            shutil.rmtree(final)
        os.replace(tmp, final)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
