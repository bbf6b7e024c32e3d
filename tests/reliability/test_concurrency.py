"""Two real ``train.py`` processes started at once on the same config and an empty cache: both
finish with the same metrics, the cache ends with one whole entry per stage (every COMPLETE manifest
verifies), nothing was discarded as damaged, and no temp copy, lock or partial dir is left over.
The pair stage is built once: the second process waits for the first one's entry and reuses it."""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from helpers import HANG_S
from train_process import Job, results, reused, run

from plad.cache import MARKER, verify

ENTRIES = {"data": 1, "tokenizers": 1, "models": 4, "pairs": 1, "eval": 2}  # debug=fast: one per stage/system
# (models: the teacher and the student, and the copy-pretrained start of each)


def test_two_runs_at_once_on_an_empty_cache_share_one_consistent_cache(tmp_path: Path):
    jobs = [Job(tmp_path, name=f"run{i}", overrides=("debug=fast",)) for i in (0, 1)]
    with ThreadPoolExecutor(len(jobs)) as pool:
        outcomes = list(pool.map(lambda job: run(job, timeout=HANG_S), jobs))
    for job, outcome in zip(jobs, outcomes):
        assert outcome.returncode == 0, job.text()[-3000:]
        assert "damaged" not in job.text() and "stale partial" not in job.text()

    cache = tmp_path / "cache"
    assert {kind: len(list((cache / kind).iterdir())) for kind in ENTRIES} == ENTRIES
    markers = sorted(cache.rglob(MARKER))
    assert len(markers) == sum(ENTRIES.values()) + 1  # + the tokenized pair cache inside the pair entry
    assert [str(m.parent) for m in markers if verify(m.parent) is not None] == []
    leftovers = [str(p) for p in cache.rglob("*") if any(t in p.name for t in (".tmp", ".trash-", ".lock", ".partial"))]
    assert leftovers == []

    assert results(jobs[0].run_dir) == results(jobs[1].run_dir)
    assert sorted(reused(job.run_dir)["pairs"] for job in jobs) == [False, True]


def test_two_runs_of_different_configurations_at_once_both_finish_correctly(tmp_path: Path):
    """Two seeds on one empty cache: they share the data, tokenizer and teacher entries (the teacher
    is seeded by base_seed) and build their own student and pairs; each finishes with what it would
    have measured alone on a cache of its own."""
    shared = [Job(tmp_path / "shared", name=f"seed{s}", overrides=("debug=fast", f"seed={s}")) for s in (0, 1)]
    alone = [Job(tmp_path / f"alone{s}", name=f"seed{s}", overrides=("debug=fast", f"seed={s}")) for s in (0, 1)]
    with ThreadPoolExecutor(2) as pool:
        outcomes = list(pool.map(run, shared))
    for job, outcome in zip(shared, outcomes):
        assert outcome.returncode == 0, job.text()[-3000:]
    cache = tmp_path / "shared" / "cache"
    counts = {kind: len(list((cache / kind).iterdir())) for kind in ENTRIES}
    assert counts == {"data": 1, "tokenizers": 1, "models": 6, "pairs": 2, "eval": 3}  # the teacher (+ its start) once
    assert [str(m.parent) for m in cache.rglob(MARKER) if verify(m.parent) is not None] == []
    for job in alone:
        assert run(job).returncode == 0, job.text()[-3000:]
    for a, b in zip(shared, alone):
        assert results(a.run_dir) == results(b.run_dir)
