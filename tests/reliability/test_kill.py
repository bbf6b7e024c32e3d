"""kill -9 at every stage: a real ``train.py`` process is SIGKILLed inside one stage (the moment is
read off its output or the file system, never injected), and rerunning the same command finishes,
reuses every cache entry that was complete before the kill (COMPLETE markers untouched, the
run's ``reused`` map, the pair stage's resumed shards) and ends with the metrics and the distilled
weights of an uninterrupted run with the same seed.

The uninterrupted reference and the kill cases run as concurrent processes (one thread each), so
the file costs about as much wall time as its slowest chain on two cores."""

from __future__ import annotations

import re
import shutil
from collections.abc import Callable, Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import pytest
from train_process import Job, Outcome, complete_markers, pair_stats, results, reused, run, weights_digest

ALL_REUSED = {"teacher": True, "student_init": True, "pairs": True}


def _exists(pattern: str) -> Callable[[Job], bool]:
    """Whether a path matching ``pattern`` (relative to the log dir: cache/..., run/...) exists."""
    return lambda job: next(job.log_dir.glob(pattern), None) is not None


def _said(regex: str) -> Callable[[Job], bool]:
    return lambda job: re.search(regex, job.text()) is not None


def _all(*checks: Callable[[Job], bool]) -> Callable[[Job], bool]:
    return lambda job: all(c(job) for c in checks)


def _absent(pattern: str) -> Callable[[Job], bool]:
    return lambda job: not _exists(pattern)(job)


@dataclass(frozen=True)
class KillPoint:
    name: str
    reached: Callable[[Job], bool]  # kill as soon as this holds
    inside: Callable[[Job], bool]  # after the kill: it landed inside the stage (its output is missing)
    reused: dict[str, bool]  # run_summary.json "reused" of the rerun
    resumed_shards: int | None = None  # pair shards the rerun found finished
    rerun_says: tuple[str, ...] = ()  # regexes the rerun's output must match ...
    rerun_never_says: tuple[str, ...] = ()  # ... and must not (work that was complete)
    seed: tuple[str, ...] = ()  # cache entries (globs) copied from the reference before the first run


BEFORE_PAIRS = ("data/*", "tokenizers/*", "models/*")


KILL_POINTS = [
    # (a) SFT: the teacher is cached, the initial student is being fine-tuned.
    KillPoint(
        "sft",
        reached=_said(r"student: \w+ with [\d.]+M parameters, SFT on \d+ labeled examples for up to"),
        inside=_all(
            _exists("cache/models/*-teacher-*/COMPLETE"),
            _exists("cache/tokenizers/*/COMPLETE"),
            _absent("cache/models/*-student-*/COMPLETE"),
        ),
        reused={"teacher": True, "student_init": False, "pairs": False},
        rerun_says=(r"student: \w+ with .* SFT on \d+ labeled examples for up to",),
        rerun_never_says=(r"teacher: \w+ with .* SFT",),
    ),
    # (b) pairs, mid-phase: both teacher shards and student shard 0 are sampled, student shard 1 is not.
    KillPoint(
        "pairs",
        reached=_exists("cache/pairs/*.partial/student/00000/COMPLETE"),
        inside=_all(
            _exists("cache/pairs/*.partial/teacher/00001/COMPLETE"),
            _absent("cache/pairs/*.partial/student/00001/COMPLETE"),
            _absent("cache/pairs/*/COMPLETE"),
        ),
        reused={"teacher": True, "student_init": True, "pairs": False},
        resumed_shards=0,
        rerun_says=(r"student shard 1",),
        rerun_never_says=(r"teacher shard", r"student shard 0"),
        seed=BEFORE_PAIRS,
    ),
    # (c) distillation, after its first checkpoint and before the student is saved.
    KillPoint(
        "distill",
        reached=_exists("run/checkpoints/last.ckpt"),
        inside=_all(_exists("cache/pairs/*/COMPLETE"), _absent("run/student/model.safetensors")),
        reused=ALL_REUSED,
        seed=(*BEFORE_PAIRS, "pairs/*"),
    ),
    # (d) evaluation: the teacher's test outputs are cached, the other systems' are not.
    KillPoint(
        "evaluate",
        reached=_exists("cache/eval/teacher-*/COMPLETE"),
        inside=_all(_exists("run/student/model.safetensors"), _absent("run/metrics.json")),
        reused=ALL_REUSED,
        rerun_says=(r"evaluation: reusing teacher outputs",),
        seed=(*BEFORE_PAIRS, "pairs/*"),
    ),
]


@dataclass
class Case:
    job: Job
    killed: Outcome
    inside: bool
    markers: dict[str, int]  # COMPLETE markers of whole entries when the process died
    killed_output: str
    rerun: Outcome | None = None
    rerun_output: str = ""


def _reference(log_dir: Path) -> Job:
    job = Job(log_dir)
    outcome = run(job)
    assert outcome.returncode == 0, job.text()[-3000:]
    return job


def _kill_and_rerun(point: KillPoint, log_dir: Path, reference: Future) -> Case:
    job = Job(log_dir)
    if point.seed:
        source: Path = reference.result().cache
        for entry in (e for pattern in point.seed for e in source.glob(pattern)):
            shutil.copytree(entry, job.cache / entry.relative_to(source))
    killed = run(job, kill_when=point.reached)
    markers = {k: v for k, v in complete_markers(job.cache).items() if ".partial" not in k}
    case = Case(job, killed, killed.killed and point.inside(job), markers, job.text())
    if case.inside:
        case.rerun = run(job)
        case.rerun_output = job.text()
    return case


def _selected(request: pytest.FixtureRequest) -> list[KillPoint]:
    """Only the kill points this session runs (``-k``), so one case costs one case."""
    names = {
        item.callspec.params["point"].name
        for item in request.session.items
        if item.module is request.module and hasattr(item, "callspec")
    }
    return [p for p in KILL_POINTS if p.name in names]


@pytest.fixture(scope="module")
def launched(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, Future]]:
    """The uninterrupted reference and every selected kill case, started together."""
    root = tmp_path_factory.mktemp("kill")
    points = _selected(request)
    with ThreadPoolExecutor(len(points) + 1) as pool:  # seeded cases wait for the reference
        futures = {"reference": pool.submit(_reference, root / "reference")}
        futures |= {p.name: pool.submit(_kill_and_rerun, p, root / p.name, futures["reference"]) for p in points}
        yield futures


@pytest.mark.parametrize("point", KILL_POINTS, ids=lambda p: p.name)
def test_rerun_after_kill_reuses_what_was_complete_and_matches(point: KillPoint, launched: dict[str, Future]):
    case: Case = launched[point.name].result()
    assert case.killed.killed, (
        f"the process ended (rc {case.killed.returncode}) before the kill point:\n{case.killed_output[-2000:]}"
    )
    assert case.inside, f"the kill missed the {point.name} stage:\n{case.killed_output[-2000:]}"
    assert case.rerun is not None and case.rerun.returncode == 0, case.rerun_output[-3000:]

    after = complete_markers(case.job.cache)
    changed = {k for k, mtime in case.markers.items() if after.get(k) != mtime}
    assert not changed, f"entries complete before the kill were rewritten or removed: {sorted(changed)}"
    assert reused(case.job.run_dir) == point.reused
    if point.resumed_shards is not None:
        assert pair_stats(case.job.cache)["resumed_shards"] == point.resumed_shards
    said = {
        regex: re.search(regex, case.rerun_output) is not None for regex in point.rerun_says + point.rerun_never_says
    }
    assert all(said[r] for r in point.rerun_says), (
        f"the rerun never said {[r for r in point.rerun_says if not said[r]]}"
    )
    redone = [r for r in point.rerun_never_says if said[r]]
    assert not redone, f"the rerun redid work that was complete: {redone}"

    reference: Job = launched["reference"].result()
    ref, got = results(reference.run_dir), results(case.job.run_dir)
    assert got == ref, {k: (ref.get(k), got.get(k)) for k in ref.keys() | got.keys() if ref.get(k) != got.get(k)}
    assert weights_digest(case.job.run_dir) == weights_digest(reference.run_dir)
