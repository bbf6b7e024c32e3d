"""W&B runs as report jobs: the files a run saved (the job folder's report inputs) become Jobs.

A run with ``logger=wandb`` saves what plad.report.jobs reads (``REPORT_FILES``: the Hydra config,
overrides and choices, metrics.json, samples.jsonl for the paired statistics, CSV curves) into
the W&B run, under the same relative paths. Offline, they sit in ``wandb/offline-run-*/files/``;
online (after ``wandb sync``) they are downloaded per run. Either way each run's files form one
job folder and plad.report.jobs.jobs_from_folders builds the Jobs: one aggregation code path.
``--group/--tags/--filter`` on folders read the same saved config (plad.saved_config).
"""

from __future__ import annotations

import shutil
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import yaml

from plad.checks import InputError
from plad.report.jobs import Job, finish_jobs, jobs_from_folders
from plad.saved_config import SavedConfig

REPORT_FILES = (
    ".hydra/config.yaml",
    ".hydra/overrides.yaml",
    ".hydra/hydra.yaml",
    "metrics.json",
    "samples.jsonl",
    "csv/version_*/metrics.csv",
)
SCHEME = "wandb://"
# filter keys W&B knows at the top level; any other key is a config value (config.<key>)
RUN_KEYS = ("config.", "summary_metrics.", "tags", "group", "state", "display_name", "jobType", "createdAt")


def report_files(run_dir: Path) -> list[Path]:
    """The report inputs present in a job folder (W&B's own folder left out)."""
    return sorted(p for pattern in REPORT_FILES for p in run_dir.glob(pattern) if p.is_file())


def save_run_files(run: Any, run_dir: str | Path) -> list[str]:
    """Copy the job folder's report inputs into the W&B run's files and save them now. Copies, not
    wandb.save's symlinks: an offline run folder then stays readable when moved or synced later."""
    import wandb

    run_dir, saved = Path(run_dir), []
    for src in report_files(run_dir):
        rel = src.relative_to(run_dir)
        dst = Path(run.dir) / rel
        dst.parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(src, dst)
        wandb.save(str(dst), base_path=run.dir, policy="now")
        saved.append(str(rel))
    return saved


def _run_id(run_dir: Path) -> str:
    """``offline-run-<date>_<time>-<id>`` -> ``<id>`` (the W&B run id, as online)."""
    return run_dir.name.rsplit("-", 1)[-1]


def offline_run_dirs(paths: Iterable[Path]) -> list[Path]:
    """W&B run folders (``offline-run-*`` or synced ``run-*``) given, or found below the given
    folders, that hold a saved job config; runs of other programs are ignored."""
    found: set[Path] = set()
    for path in paths:
        candidates = (
            [path]
            if (path / "files").is_dir()
            else [p for p in path.rglob("files") if p.is_dir() and p.parent.parent.name == "wandb"]
        )
        found |= {c if c.name != "files" else c.parent for c in candidates}
    return sorted(d for d in found if (d / "files" / ".hydra" / "config.yaml").is_file())


def offline_jobs(paths: Iterable[Path]) -> list[Job]:
    """Jobs of the W&B run folders given or found below ``paths`` (named by run id)."""
    return jobs_from_folders({_run_id(d): d / "files" for d in offline_run_dirs(paths)})


def is_wandb_url(text: str) -> bool:
    return str(text).startswith(SCHEME)


def first_line(e: BaseException) -> str:
    """A W&B API error as one line (its messages span several), for the report's one-line exits
    (here and in plad.report.publish)."""
    return str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__


def _pairs(filters: Iterable[str]) -> list[tuple[str, Any]]:
    """``key=value`` items as (key, value); values parsed as YAML, so ``seed=0`` is the number 0."""
    out = []
    for item in filters:
        key, sep, value = item.partition("=")
        if not sep or not key:
            raise InputError(f"--filter: expected key=value, got {item!r}")
        out.append((key, yaml.safe_load(value)))
    return out


def run_filters(group: str | None = None, tags: Iterable[str] = (), filters: Iterable[str] = ()) -> dict[str, Any]:
    """W&B run filters (MongoDB style): group, any of the tags, ``key=value`` pairs (config keys
    unless the key is a run field, e.g. ``state=finished``)."""
    out: dict[str, Any] = {}
    if group:
        out["group"] = group
    if tags := list(tags):
        out["tags"] = {"$in": tags}
    for key, value in _pairs(filters):
        out[key if key.startswith(RUN_KEYS) else f"config.{key}"] = value
    return out


def job_matches(cfg: SavedConfig, group: str | None, tags: Iterable[str], pairs: list[tuple[str, Any]]) -> bool:
    """What the W&B filters would keep, read from the job's saved config (values resolved as the
    job resolved them): the W&B logger's group, any of its tags (the run's ``tags`` without a W&B
    logger), each config value."""
    wandb_cfg = cfg.value("logger.wandb") or {}
    if group and cfg.value("logger.wandb.group") != group:
        return False
    own = cfg.value("logger.wandb.tags" if "tags" in wandb_cfg else "tags") or []
    if (tags := list(tags)) and not set(tags) & set(own):
        return False
    return all(cfg.value(key.removeprefix("config.")) == value for key, value in pairs)


def filter_jobs(
    jobs: list[Job], group: str | None = None, tags: Iterable[str] = (), filters: Iterable[str] = ()
) -> list[Job]:
    """The jobs of folders (a multirun, offline runs) that ``--group/--tags/--filter`` keep; run
    fields other than group and tags (state, createdAt, ...) exist on the W&B server only."""
    pairs = _pairs(filters)
    if server := [k for k, _ in pairs if k.startswith(RUN_KEYS) and not k.startswith("config.")]:
        raise InputError(
            f"--filter {server[0]}: a W&B run field, only with a wandb://<entity>/<project> source "
            "(--group and --tags work on folders too)"
        )
    if not (group or list(tags) or pairs):
        return jobs
    kept = [j for j in jobs if job_matches(j.config, group, tags, pairs)]
    if jobs and not kept:
        raise InputError("no jobs match --group/--tags/--filter")
    return finish_jobs(kept)


def run_ids(jobs: Iterable[Job], named_by_id: bool = False) -> dict[str, str]:
    """{job name: W&B run id}: the name itself for jobs read from W&B runs; else the W&B run in
    the job folder (the newest, after a resume), for the jobs that have one."""
    if named_by_id:
        return {j.name: j.name for j in jobs}
    out = {}
    for job in jobs:
        runs = sorted(job.dir.glob("wandb/*run-*"), key=lambda p: p.name.split("run-", 1)[-1])  # by date
        if runs:
            out[job.name] = _run_id(runs[-1])
    return out


def list_runs(path: str, filters: dict[str, Any], api: Any = None) -> list[Any]:
    """The one place that talks to W&B: the runs of ``entity/project`` matching ``filters``."""
    if api is None:
        import wandb

        api = wandb.Api(timeout=30)
    return list(api.runs(path, filters=filters))


def download_runs(runs: Iterable[Any], dest: Path) -> dict[str, Path]:
    """Each run's saved report inputs into ``dest/<run id>``: {run id: job folder}. Runs without a
    saved job config (not from plad.train) are left out."""
    folders = {}
    for run in runs:
        names = [f.name for f in run.files()]
        wanted = [n for n in names if any(Path(n).match(p) and n.count("/") == p.count("/") for p in REPORT_FILES)]
        if ".hydra/config.yaml" not in wanted:
            continue
        root = dest / str(run.id)
        for name in wanted:
            run.file(name).download(root=str(root), replace=True)
        folders[str(run.id)] = root
    return folders


def online_jobs(
    url: str,
    dest: Path,
    group: str | None = None,
    tags: Iterable[str] = (),
    filters: Iterable[str] = (),
    api: Any = None,
) -> list[Job]:
    """Jobs of the runs of ``wandb://<entity>/<project>`` that match; files land under ``dest``."""
    path = url[len(SCHEME) :].strip("/")
    if path.count("/") != 1 or not all(path.split("/")):
        raise InputError(f"expected wandb://<entity>/<project>, got {url}")
    wanted = run_filters(group, tags, filters)
    try:
        folders = download_runs(list_runs(path, wanted, api), dest)
    except Exception as e:  # noqa: BLE001 - the W&B API's own errors: credentials, network, no such project
        raise InputError(first_line(e)) from None
    return jobs_from_folders(folders)
