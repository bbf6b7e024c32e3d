"""Catalogue of damaged cache entries: each is detected (exactly one warning naming the entry and
what is wrong), never used, rebuilt (the entry verifies again), and the rerun ends with the same
metrics as the run that built the cache (same seed).

The cache is built once per module by a real in-process ``debug=fast`` run; each case damages a
copy of it and reruns the same job on the copy."""

from __future__ import annotations

import hashlib
import logging
import shutil
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
from datasets import Dataset
from helpers.configs import compose_run_config
from train_process import results

from plad.cache import MARKER, verify
from plad.pairs import store

OVERRIDES = ("debug=fast",)
SHARD_SIZE = 16  # debug=fast's pairs.shard_size (checked by the baseline fixture)


def _flip(rel: str) -> Callable[[Path], None]:
    """Flip every bit of one byte in the middle of a file (same size, same name)."""

    def damage(entry: Path) -> None:
        f = entry / rel
        data = bytearray(f.read_bytes())
        data[len(data) // 2] ^= 0xFF
        f.write_bytes(bytes(data))

    return damage


def _truncate(rel: str) -> Callable[[Path], None]:
    def damage(entry: Path) -> None:
        f = entry / rel
        f.write_bytes(f.read_bytes()[: f.stat().st_size // 2])

    return damage


def _delete(rel: str) -> Callable[[Path], None]:
    return lambda entry: (entry / rel).unlink()


def _stale_partial(entry: Path) -> None:
    """The pair set is not merged yet, and ``<entry>.partial`` holds a finished teacher shard written
    by the store for another config (another entry name), whose texts would poison the pairs."""
    shutil.rmtree(entry)
    other = entry.with_name("0123456789abcdef")
    junk = Dataset.from_dict({"texts": [["STALE-TEACHER-TEXT"]] * SHARD_SIZE})
    store.write_shard(other, "teacher", 0, {"outputs": junk}, {"samples": SHARD_SIZE, "tokens": 0, "seconds": 0.0})
    store.partial_dir(other).rename(store.partial_dir(entry))


@dataclass(frozen=True)
class Corruption:
    name: str
    entry: str  # glob (relative to the cache) of the one damaged entry
    damage: Callable[[Path], None]
    says: str  # what the warning line must name
    same_file: str | None = None  # a file whose rebuilt bytes must equal the baseline's


CORRUPTIONS = [
    Corruption(
        "truncated Arrow shard (task data)",
        "data/*",
        _truncate("splits/train/data-00000-of-00001.arrow"),
        "splits/train/data-00000-of-00001.arrow has",
        same_file="splits/train/data-00000-of-00001.arrow",
    ),
    Corruption(
        "bit-flipped Arrow shard (pair store)",
        "pairs/*",
        _flip("pairwise/data-00000-of-00001.arrow"),
        "pairwise/data-00000-of-00001.arrow does not match its checksum",
        same_file="pairwise/data-00000-of-00001.arrow",
    ),
    Corruption(
        "model dir without model.safetensors",
        "models/*-student-*",
        _delete("model.safetensors"),
        "model.safetensors is missing",
        same_file="model.safetensors",
    ),
    Corruption(
        "corrupted model.safetensors",
        "models/*-teacher-*",
        _flip("model.safetensors"),
        "model.safetensors does not match its checksum",
        same_file="model.safetensors",
    ),
    Corruption(
        "empty COMPLETE marker (tokenized pairs)",
        "pairs/*/tokenized/*",
        lambda e: (e / MARKER).write_text(""),
        "empty COMPLETE marker",
        same_file="data/data-00000-of-00001.arrow",
    ),
    Corruption(
        "stale .partial from another config",
        "pairs/*",
        _stale_partial,
        "belongs to entry 0123456789abcdef",
        same_file="pairwise/data-00000-of-00001.arrow",
    ),
    Corruption(
        "COMPLETE marker cut mid-manifest (eval outputs)", "eval/teacher-*", _truncate(MARKER), "no readable manifest"
    ),  # outputs.json holds generation timings: not byte-stable
]


def _run(log_dir: Path, run_dir: Path) -> Path:
    from plad.pipeline import run

    run_dir.mkdir(parents=True, exist_ok=True)
    run(compose_run_config(log_dir, run_dir, *OVERRIDES))
    return run_dir


def _digest(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


@pytest.fixture(scope="module", autouse=True)
def unrendered_plots() -> Iterator[None]:
    """PNGs are still written (empty) but not rendered: rendering is a third of a rerun here and
    plots are tested elsewhere."""
    from plad.evaluation import plots

    def save(fig: object, path: Path) -> Path:
        plots.plt.close(fig)
        Path(path).parent.mkdir(parents=True, exist_ok=True)
        Path(path).touch()
        return Path(path)

    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(plots, "_save", save)
        yield


@pytest.fixture(scope="module")
def baseline(tmp_path_factory) -> dict:
    """One cold run: its cache (copied per case) and its metrics."""
    log_dir = tmp_path_factory.mktemp("baseline")
    run_dir = _run(log_dir, log_dir / "run")
    cache = log_dir / "cache"
    assert all(verify(m.parent) is None for m in cache.rglob(MARKER))
    assert compose_run_config(log_dir, run_dir, *OVERRIDES).pairs.shard_size == SHARD_SIZE
    return {"cache": cache, "metrics": results(run_dir)}


@pytest.mark.parametrize("case", CORRUPTIONS, ids=[c.name for c in CORRUPTIONS])
def test_damaged_entry_is_detected_discarded_and_rebuilt(case, baseline, run_pipeline, tmp_path, caplog):
    logs = tmp_path / "logs"
    shutil.copytree(baseline["cache"], logs / "cache")
    (entry,) = [p for p in (logs / "cache").glob(case.entry) if not p.name.endswith(".partial")]
    case.damage(entry)
    assert verify(entry) is not None

    caplog.clear()
    with caplog.at_level(logging.WARNING):
        results_ = run_pipeline(*OVERRIDES, log_dir=logs, name="rerun")
    warned = [r.getMessage() for r in caplog.records if r.levelno >= logging.WARNING and r.name.startswith("plad")]
    assert len(warned) == 1, warned
    assert entry.name in warned[0] and case.says in warned[0] and "\n" not in warned[0], warned[0]

    assert verify(entry) is None  # rebuilt: whole again
    if case.same_file:
        original = baseline["cache"] / entry.relative_to(logs / "cache") / case.same_file
        assert _digest(entry / case.same_file) == _digest(original)  # rebuilt from scratch, not the damaged bytes
    assert results(results_["run_dir"]) == baseline["metrics"]
    leftovers = [
        p.name
        for p in (logs / "cache").rglob("*")
        if ".tmp" in p.name or ".trash-" in p.name or p.name.endswith((".lock", ".partial"))
    ]
    assert leftovers == []
