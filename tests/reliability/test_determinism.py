"""The same command twice, each with a fresh cache (nothing to reuse), gives the same results:
every metrics.json value except timings, the pair set's statistics and the distilled weights.
Both runs are real ``train.py`` processes started together, with different hash seeds (set
iteration order), as two users' runs would have."""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from train_process import Job, pair_stats, results, reused, run, weights_digest

NOTHING_REUSED = {"teacher": False, "student_init": False, "pairs": False}
PAIR_TIMINGS = ("seconds", "resumed_shards")


def _without_timings(stats: dict) -> dict:
    return {
        k: _without_timings(v) if isinstance(v, dict) else v
        for k, v in stats.items()
        if not any(t in k for t in PAIR_TIMINGS)
    }


def test_same_command_with_fresh_caches_gives_identical_results(tmp_path: Path):
    jobs = [Job(tmp_path / name) for name in ("first", "second")]
    with ThreadPoolExecutor(len(jobs)) as pool:
        outcomes = list(pool.map(lambda n: run(jobs[n], hash_seed=n + 1), range(len(jobs))))
    for job, outcome in zip(jobs, outcomes):
        assert outcome.returncode == 0, job.text()[-3000:]
        assert reused(job.run_dir) == NOTHING_REUSED

    a, b = (results(job.run_dir) for job in jobs)
    assert a == b, {k: (a.get(k), b.get(k)) for k in a.keys() | b.keys() if a.get(k) != b.get(k)}
    pa, pb = (_without_timings(pair_stats(job.cache)) for job in jobs)
    assert pa == pb
    assert weights_digest(jobs[0].run_dir) == weights_digest(jobs[1].run_dir)
