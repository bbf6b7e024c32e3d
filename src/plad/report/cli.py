"""``python -m plad.report <sources> [--out DIR]``: the report's command line.

Sources: a multirun folder (its job folders), W&B run folders (``wandb/offline-run-*``) or
``wandb://<entity>/<project>`` (plad.report.wandb_runs), filtered by ``--group/--tags/--filter``;
the jobs go to plad.report.build. ``--publish`` also saves the tables as a W&B Report
(plad.report.publish). Expected failures (a bad filter, no extra, no credentials) exit 2 in one line.
"""

from __future__ import annotations

import argparse
import os
from collections.abc import Callable
from pathlib import Path
from typing import Any

from plad.checks import InputError
from plad.report import publish, wandb_runs
from plad.report.build import build_report
from plad.report.jobs import Job, discover_jobs


def _names(text: str) -> tuple[str, ...]:
    return tuple(x.strip() for x in text.split(",") if x.strip())


def _jobs_and_out(
    args: argparse.Namespace, parser: argparse.ArgumentParser
) -> tuple[Path, list[Job] | None, Path, bool]:
    """(root, jobs, out, named by W&B run id): a multirun dir (jobs None: none found), W&B run
    folders, or wandb://."""
    sources = [str(x) for x in args.sources]
    urls = [x for x in sources if wandb_runs.is_wandb_url(x)]
    if urls:
        if len(sources) > 1:
            parser.error(f"sources: a wandb:// URL comes alone, got {' '.join(sources)}")
        out = args.out or Path("report-" + urls[0][len(wandb_runs.SCHEME) :].strip("/").replace("/", "-"))
        try:
            jobs = wandb_runs.online_jobs(urls[0], out / "wandb_runs", args.group, args.tags, args.filter)
        except InputError as e:  # credentials, network, bad filters: one line, no traceback
            parser.exit(2, f"error: {urls[0]}: {e}\n")
        if not jobs:
            parser.exit(2, f"error: {urls[0]}: no runs with saved plad job files match\n")
        return out, jobs, out, True
    paths = [Path(x) for x in sources]
    if missing := [str(p) for p in paths if not p.is_dir()]:
        parser.error(f"sources: expected existing folders, got {', '.join(missing)}")
    runs = wandb_runs.offline_run_dirs(paths)
    if len(paths) == 1 and not args.wandb and paths[0] not in runs:
        local = discover_jobs(paths[0])
        if local or not runs:  # none at all: build_report says so in one line
            kept = _or_exit(parser, "", wandb_runs.filter_jobs, local, args.group, args.tags, args.filter)
            return paths[0], kept or None, args.out or paths[0], False
    if not runs:
        parser.error(f"sources: expected W&B run folders with saved plad job files, got none in {', '.join(sources)}")
    root = paths[0] if len(paths) == 1 and paths[0] not in runs else Path(os.path.commonpath([str(p) for p in paths]))
    jobs = _or_exit(
        parser, "", wandb_runs.filter_jobs, wandb_runs.offline_jobs(runs), args.group, args.tags, args.filter
    )
    return root, jobs, args.out or root, True


def _or_exit(parser: argparse.ArgumentParser, prefix: str, step: Callable[..., Any], *args: Any) -> Any:
    """A step whose expected failures (bad filter, no extra, credentials, runs: ``InputError``) exit 2
    in one line; anything else keeps its traceback."""
    try:
        return step(*args)
    except InputError as e:
        parser.exit(2, f"error: {prefix}{e}\n")


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(
        prog="python -m plad.report",  # not __main__.py
        description="Aggregate a PLaD multirun into report.md and charts.",
    )
    parser.add_argument(
        "sources",
        nargs="+",
        help="a multirun dir; W&B run folders (wandb/offline-run-*) or folders "
        "holding them; or wandb://<entity>/<project>",
    )
    parser.add_argument("--out", type=Path, default=None, help="output folder (default: the multirun dir)")
    parser.add_argument("--wandb", action="store_true", help="read the W&B runs below the folder, not its job folders")
    parser.add_argument("--group", default=None, help="runs of this W&B group (logger.wandb.group)")
    parser.add_argument("--tags", nargs="+", default=[], help="runs with any of these tags")
    parser.add_argument(
        "--filter",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="config value (wandb:// also: a run field such as state=finished); repeatable",
    )
    parser.add_argument(
        "--publish",
        action="store_true",
        help="also save a W&B Report of the runs (extra: wandb-reports; W&B credentials)",
    )
    parser.add_argument(
        "--project",
        default=None,
        metavar="ENTITY/PROJECT",
        help="--publish from folders: the W&B project the runs were synced to",
    )
    parser.add_argument("--n-boot", type=int, default=2000, help="bootstrap resamples per comparison")
    parser.add_argument("--boot-seed", type=int, default=0, help="seed of the bootstrap resampling")
    parser.add_argument(
        "--plad",
        type=_names,
        default=None,
        help="comma list of PLaD losses (default: the losses whose class's kind is plad)",
    )
    parser.add_argument(
        "--baselines",
        type=_names,
        default=None,
        help="comma list of baseline losses (default: the losses whose class's kind is baseline)",
    )
    args = parser.parse_args(argv)
    if args.publish:  # before any work: where to, the extra, credentials
        sources = [str(x) for x in args.sources]
        target = _or_exit(parser, "--publish: ", publish.publish_target, sources, args.project)
    root, jobs, out, by_run_id = _jobs_and_out(args, parser)
    if args.publish:
        spec = _or_exit(
            parser, "--publish: ", publish.build_spec, jobs or [], wandb_runs.run_ids(jobs or [], by_run_id), *target
        )
    print(build_report(root, out, args.n_boot, args.boot_seed, args.plad, args.baselines, jobs=jobs))
    if args.publish:
        print(_or_exit(parser, "--publish: ", publish.publish, spec))
