"""Jobs of a multirun folder, as the report sees them: identity, metrics, samples, training curves.

A job is a folder with ``.hydra/config.yaml``. Its ``metrics.json`` may sit in it or below it. A job
folder without one stays in the report's list: ``failed`` when the run finished (``run_summary.json``,
written last by plad.pipeline) without metrics, ``unfinished`` when it did not: still running, or
stopped mid-run (the two look the same on disk). The loss named on the command line
(``.hydra/overrides.yaml``, e.g. ``loss=margin``) wins, then the option Hydra picked
(``.hydra/hydra.yaml``), then the loss config's ``name`` or class (several configs share a class).
The loss class (``loss._target_``) tells its kind and display order (``CalibrationLoss.kind`` and
``order``), so a new loss needs no entry here. Overrides whose values, as the jobs ran them, differ
between jobs of one loss in one table, other than seed (e.g. ``distill.lr`` in a tuning sweep), make
the job's ``variant``: jobs with different variants are different rows.
"""

from __future__ import annotations

import csv
import json
import math
import re
import sys
from dataclasses import dataclass, field
from functools import cache
from pathlib import Path
from typing import Any

from plad.saved_config import HYDRA_DIR, VOLATILE, SavedConfig, read_saved_config

MAIN, BEFORE = "student", "student_init"
CSV_GLOB = "csv/version_*/metrics.csv"
FINISHED = "run_summary.json"  # written last by plad.pipeline: the run got to its end


@dataclass
class Job:
    """One job's identity and results; ``metrics`` is None for a failed or unfinished job."""

    dir: Path
    name: str
    task: str
    family: str
    loss: str
    seed: Any
    overrides: dict[str, str]
    split: str = "test"
    decoding: str = "greedy"
    oracle: bool = False
    metrics: dict[str, Any] | None = None
    samples_path: Path | None = None
    variant: str = ""
    problems: list[str] = field(default_factory=list)
    finished: bool = False  # run_summary.json: the run reached its end
    config: SavedConfig = field(default_factory=SavedConfig, repr=False)
    _samples: list[dict[str, Any]] | None = None

    @property
    def status(self) -> str:
        """ok | incomplete (metrics, but something missing) | failed (finished without metrics) |
        unfinished (no metrics yet: running, or stopped mid-run)."""
        if self.metrics is None:
            return "failed" if self.finished else "unfinished"
        return "incomplete" if self.problems else "ok"

    @property
    def loss_kind(self) -> str:
        """plad | baseline | oracle: what the loss class declares (``CalibrationLoss.kind``)."""
        return loss_metadata(self.config.loss_target)[0]

    @property
    def loss_order(self) -> int:
        """Where the loss's rows go in a table (``CalibrationLoss.order``)."""
        return loss_metadata(self.config.loss_target)[1]

    @property
    def main_system(self) -> str:
        return (self.metrics or {}).get("main_system", MAIN)

    def samples(self) -> list[dict[str, Any]]:
        """samples.jsonl rows (read once); empty when the job wrote none."""
        if self._samples is None:
            p = self.samples_path
            self._samples = (
                [json.loads(x) for x in p.read_text().splitlines() if x.strip()]
                if p is not None and p.is_file()
                else []
            )
        return self._samples

    def quality(self, system: str) -> dict[Any, tuple[str, float]]:
        """Per-example quality of one system: {id: (prompt, quality)}; rows without it are left out."""
        out = {}
        for i, row in enumerate(self.samples()):
            q = (row.get("quality") or {}).get(system)
            if q is not None and math.isfinite(float(q)):
                out[row.get("id", i)] = (row.get("prompt", ""), float(q))
        return out

    def curve(self, column: str) -> list[tuple[float, float]]:
        """(step, value) of one column of the job's Lightning CSV logs (all versions, in order)."""
        points = []
        for path in sorted(self.dir.glob(CSV_GLOB)):
            with open(path, newline="") as f:
                for row in csv.DictReader(f):
                    value, step = row.get(column), row.get("step")
                    if value not in (None, "") and step not in (None, "") and math.isfinite(float(value)):
                        points.append((float(step), float(value)))
        return points


def _loss_name(saved: SavedConfig) -> str:
    """Command-line override, else the config group option Hydra picked, else the config itself."""
    if saved.overrides.get("loss"):
        return saved.overrides["loss"]
    if saved.choices.get("loss"):
        return str(saved.choices["loss"])
    loss = saved.config.get("loss") or {}
    if loss.get("name"):
        return str(loss["name"])
    return str(loss.get("_target_", "unknown")).rsplit(".", 1)[-1]


@cache
def loss_metadata(target: str | None) -> tuple[str, int]:
    """(kind, display order) that the loss class named by a saved ``loss._target_`` declares. A
    class that cannot be imported (renamed since, from another checkout) gets CalibrationLoss's
    defaults, as a loss that declares nothing does: a baseline, listed after the known losses."""
    from plad.losses.base import CalibrationLoss

    cls: Any = CalibrationLoss
    if target:
        from hydra.utils import get_class

        try:
            cls = get_class(target)
        except Exception as e:  # noqa: BLE001 - any import failure: the defaults, said once
            print(
                f"report: loss class {target} not importable ({type(e).__name__}); shown as a {CalibrationLoss.kind}",
                file=sys.stderr,
            )
    return str(getattr(cls, "kind", CalibrationLoss.kind)), int(getattr(cls, "order", CalibrationLoss.order))


def _job(job_dir: Path, name: str, metrics_path: Path | None) -> Job:
    saved = read_saved_config(job_dir)
    cfg, choices = saved.config, saved.choices
    m = json.loads(metrics_path.read_text()) if metrics_path is not None else None
    task_cfg, eval_cfg = cfg.get("task") or {}, cfg.get("eval") or {}
    task = (
        (m or {}).get("task")
        or task_cfg.get("name")
        or choices.get("task")
        or str(task_cfg.get("_target_", "unknown")).rsplit(".", 1)[-1]
    )
    if metrics_path is not None and metrics_path.parent != job_dir:
        name += f" ({metrics_path.parent.relative_to(job_dir)})"
    job = Job(
        dir=job_dir,
        name=name,
        task=str(task),
        family=str((cfg.get("model") or {}).get("family") or choices.get("model") or "unknown"),
        loss=_loss_name(saved),
        seed=cfg.get("seed"),
        overrides=saved.overrides,
        split=str((m or {}).get("split") or eval_cfg.get("split") or "test"),
        decoding=str((m or {}).get("decoding") or eval_cfg.get("decoding") or "greedy"),
        oracle=bool((m or {}).get("oracle", False)),
        metrics=m,
        samples_path=metrics_path.parent / "samples.jsonl" if metrics_path is not None else None,
        finished=(job_dir / FINISHED).is_file(),
        config=saved,
    )
    if m is not None:
        systems = m.get("systems") or {}
        missing = [s for s in (job.main_system, BEFORE) if s not in systems]
        if missing:
            job.problems.append(f"metrics.json has no system {', '.join(missing)}")
        if not job.samples_path.is_file():
            job.problems.append("no samples.jsonl (left out of the paired bootstrap)")
    return job


def _nearest_job_dir(path: Path, root: Path) -> Path | None:
    for d in [path, *path.parents]:
        if (d / HYDRA_DIR / "config.yaml").is_file():
            return d
        if d == root:
            return None
    return None


def _not_a_variant(key: str) -> bool:
    """Overrides that never name a row: the loss and seed (a row's identity and what it pools over),
    and keys under a VOLATILE top-level key, which do not change what a job computes."""
    return key in ("loss", "seed") or key.split(".", 1)[0] in VOLATILE


def _as_run(job: Job, key: str) -> str | None:
    """What an override set, as the job ran it: the config group option Hydra picked, else the key's
    resolved value; the override text (None without one) where the saved config lacks the key."""
    if key in job.config.choices:
        return str(job.config.choices[key])
    value = job.config.value(key)
    return repr(value) if value is not None else job.overrides.get(key)


def _assign_variants(jobs: list[Job]) -> None:
    """Overrides (loss, seed, paths and resumption aside) whose value, as the jobs ran it, differs
    between jobs of the same table and loss (e.g. ``distill.lr`` in a tuning sweep) name the job's
    variant (its row). A key written on one command line and left to its default on another, at the
    same value (a preset's tuned lr), is one row."""
    same_row: dict[tuple, list[Job]] = {}
    for j in jobs:
        same_row.setdefault((j.task, j.family, j.split, j.decoding, j.loss), []).append(j)
    for group in same_row.values():
        keys = sorted({k for j in group for k in j.overrides if not _not_a_variant(k)})
        ran = {k: [_as_run(j, k) for j in group] for k in keys}
        varying = [k for k in keys if len(set(ran[k])) > 1]
        for i, j in enumerate(group):
            labels = []
            for k in (k for k in varying if ran[k][i] is not None):
                # one label per value: as a command line wrote it where one did (distill.lr=3e-6)
                written = (g.overrides[k] for g, v in zip(group, ran[k]) if v == ran[k][i] and k in g.overrides)
                labels.append(f"{k}={next(written, ran[k][i])}")
            j.variant = " ".join(labels)


def _skipped(path: Path, root: Path) -> bool:
    """W&B run folders (``wandb/``) hold copies of the job's files: read by plad.report.wandb_runs only."""
    return "wandb" in path.relative_to(root).parts


def _name(job_dir: Path, root: Path) -> str:
    return str(job_dir.relative_to(root)) if job_dir != root else "."


def discover_jobs(root: Path) -> list[Job]:
    """Every job under ``root``: one per metrics.json, plus each job folder with none (failed or
    unfinished)."""
    job_dirs = sorted(
        {p.parent for p in root.rglob(HYDRA_DIR) if (p / "config.yaml").is_file() and not _skipped(p, root)}
    )
    jobs, with_metrics = [], set()
    for path in sorted(root.rglob("metrics.json")):
        if HYDRA_DIR in path.parts or _skipped(path, root):
            continue
        job_dir = _nearest_job_dir(path.parent, root)
        if job_dir is None:
            print(f"report: skipping {path} (no .hydra/config.yaml above it)", file=sys.stderr)
            continue
        with_metrics.add(job_dir)
        jobs.append(_job(job_dir, _name(job_dir, root), path))
    jobs += [_job(d, _name(d, root), None) for d in job_dirs if d not in with_metrics]
    return finish_jobs(jobs)


def jobs_from_folders(folders: dict[str, Path]) -> list[Job]:
    """One job per named folder laid out like a job folder (W&B runs' saved files): the same Job
    building as discover_jobs, so both sources aggregate through one code path."""
    jobs = []
    for name, job_dir in folders.items():
        found = sorted(p for p in job_dir.rglob("metrics.json") if HYDRA_DIR not in p.relative_to(job_dir).parts)
        jobs += [_job(job_dir, name, p) for p in found] or [_job(job_dir, name, None)]
    return finish_jobs(jobs)


def finish_jobs(jobs: list[Job]) -> list[Job]:
    """Variants assigned, jobs in natural name order."""
    _assign_variants(jobs)
    return sorted(jobs, key=lambda j: natural_key(j.name))


def natural_key(name: str) -> list[Any]:
    """Sort key that puts job 10 after job 9."""
    return [int(t) if t.isdigit() else t for t in re.split(r"(\d+)", name)]
