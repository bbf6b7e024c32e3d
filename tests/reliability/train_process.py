"""A real ``train.py`` process (forked from ``tests/helpers/forkserver``'s pre-imported server, or a plain
one where that cannot be) that can be watched and killed with SIGKILL, and the comparisons the
reliability tests make between finished runs (metrics without timings, distilled weights, cache
entries' COMPLETE markers)."""

from __future__ import annotations

import hashlib
import json
import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from helpers import (
    HANG_S,
    forkserver,  # tests/: a fork of a pre-imported server where it can be
)
from helpers.forkserver import env

ROOT = Path(__file__).resolve().parents[2]
# The whole loop at debug=fast, with the student's SFT and the distillation long enough (about a
# second each on one core) that a kill reliably lands inside them.
OVERRIDES = ("debug=fast", "model.student.sft.max_steps=40", "distill.max_steps=12")
# metrics.json leaves that measure time, not results.
TIMING_KEYS = ("seconds", "tok_s", "timings")


@dataclass
class Job:
    """One command line: ``train.py <overrides> paths.log_dir=<log_dir> hydra.run.dir=<log_dir>/<name>``."""

    log_dir: Path
    name: str = "run"
    overrides: tuple[str, ...] = OVERRIDES
    env: dict[str, str] = field(default_factory=dict)  # added to the test environment (forkserver.env)
    output: list[str] = field(default_factory=list)  # stdout + stderr of the latest process

    @property
    def run_dir(self) -> Path:
        return self.log_dir / self.name

    @property
    def cache(self) -> Path:
        return self.log_dir / "cache"

    def command(self) -> list[str]:
        return [
            sys.executable,
            "train.py",
            *self.overrides,
            f"paths.log_dir={self.log_dir}",
            f"hydra.run.dir={self.run_dir}",
        ]

    def text(self) -> str:
        return "".join(self.output)


@dataclass
class Outcome:
    returncode: int
    killed: bool
    seconds: float  # wall time
    cpu_seconds: float  # user + system time of the process and its children


def run(
    job: Job,
    kill_when: Callable[[Job], bool] | None = None,
    timeout: float = HANG_S,
    poll: float = 0.005,
    hash_seed: int | None = None,
) -> Outcome:
    """Run ``job`` to the end, or SIGKILL its process group as soon as ``kill_when(job)`` holds.

    The condition is polled every ``poll`` seconds and may look at the file system and at
    ``job.text()``, the output so far. The process's output is also kept in ``<log_dir>/<name>.out``.
    """
    job.log_dir.mkdir(parents=True, exist_ok=True)
    job.output = []
    start = time.monotonic()
    with open(job.log_dir / f"{job.name}.out", "ab") as log:
        proc = forkserver.start(
            job.command(), cwd=ROOT, env=env(hash_seed, job.env), stdout=subprocess.PIPE, stderr=subprocess.STDOUT
        )
        reader = threading.Thread(target=_pump, args=(proc, job, log), daemon=True)
        reader.start()
        killed, cpu = False, None
        try:
            while (cpu := _reap(proc, block=False)) is None:
                if kill_when is not None and kill_when(job):
                    os.killpg(proc.pid, signal.SIGKILL)
                    killed = True
                    break
                if time.monotonic() - start > timeout:
                    os.killpg(proc.pid, signal.SIGKILL)
                    raise TimeoutError(f"{job.name}: no end after {timeout:.0f}s\n{job.text()[-3000:]}")
                time.sleep(poll)
        finally:
            if cpu is None:
                cpu = _reap(proc, block=True)
            reader.join(timeout=10)
    return Outcome(proc.returncode, killed, time.monotonic() - start, cpu or 0.0)


def _reap(proc: Any, block: bool) -> float | None:
    """Wait for the process like ``Popen.poll``/``wait``, keeping its CPU time; None while it runs."""
    if isinstance(proc, forkserver.ForkedProcess):
        return proc.cpu_seconds if (proc.wait() if block else proc.poll()) is not None else None
    pid, status, usage = os.wait4(proc.pid, 0 if block else os.WNOHANG)
    if pid == 0:
        return None
    proc.returncode = os.waitstatus_to_exitcode(status)
    return usage.ru_utime + usage.ru_stime


def _pump(proc: Any, job: Job, log: Any) -> None:
    """Copy the process's output into ``job.output`` as it arrives (progress bars end in \\r)."""
    fd = proc.stdout.fileno()  # type: ignore[union-attr]
    while chunk := os.read(fd, 1 << 16):
        job.output.append(chunk.decode("utf-8", "replace"))
        log.write(chunk)


def complete_markers(cache: Path) -> dict[str, int]:
    """mtime (ns) of every cache entry's COMPLETE marker, by path relative to the cache."""
    return {str(p.relative_to(cache)): p.stat().st_mtime_ns for p in sorted(cache.rglob("COMPLETE"))}


def results(run_dir: Path) -> dict[str, Any]:
    """Every leaf of metrics.json except timings, by its path."""
    flat: dict[str, Any] = {}

    def walk(node: Any, path: str) -> None:
        if isinstance(node, dict):
            for k, v in node.items():
                if not any(t in k for t in TIMING_KEYS):
                    walk(v, f"{path}/{k}")
        else:
            flat[path] = node

    walk(json.loads((run_dir / "metrics.json").read_text()), "")
    return flat


def weights_digest(run_dir: Path) -> str:
    """Hash of the distilled student's weights file."""
    return hashlib.sha256((run_dir / "student" / "model.safetensors").read_bytes()).hexdigest()


def reused(run_dir: Path) -> dict[str, bool]:
    return json.loads((run_dir / "run_summary.json").read_text())["reused"]


def pair_stats(cache: Path) -> dict[str, Any]:
    (entry,) = (cache / "pairs").glob("*/stats.json")
    return json.loads(entry.read_text())
