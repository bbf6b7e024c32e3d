"""Aggregate a Hydra multirun into report.md + report.json + charts.

Usage: ``python -m plad.report <multirun dir> [--out DIR]``; W&B runs (offline run folders, or
``wandb://<entity>/<project>``) give the same table through plad.report_wandb; ``--publish`` also saves
it as a W&B Report (plad.report_publish). One table per task x model family x
evaluation split x decoding mode: the initial student, the teacher, the task's model-free peers
(anonymization: rule_based) and every loss (variant), as
mean ± std over seeds, with each row's paired-bootstrap difference to the initial student; then
each PLaD loss against each baseline (paired bootstrap on the same test texts, pooled over seeds),
the pseudo-label noise of the pairs, and the training diagnostics over steps. Oracle rows (runs
that used references of the unlabeled prompts) are marked, validation tables are labelled as
tuning tables, and every job is listed, failed ones included: nothing is dropped silently.
"""
from __future__ import annotations

import argparse
import json
import math
import os
from pathlib import Path
from typing import Any, Callable

from plad.cache import atomic_write
from plad.report_jobs import Job, discover_jobs
from plad.report_rows import (BASELINES, PLAD_LOSSES, Group, best_variants, build_groups,
                              calibration, comparisons, curves, deltas_to_initial, disagreements,
                              system_metric)
from plad.report_tables import comparison_table, fmt_ci, fmt_stat, noise_table, per_type_table
from plad.checks import InputError

# /seen: seen phrasings only; keep_rate: the counterpart of leak_rate (deleting everything leaks nothing)
EXTRA_METRICS = ("exact_match", "exact_match/seen", "leak_rate", "keep_rate", "degenerate")
CURVE_COLUMNS = ("train/hinge_active", "val/rank_acc")


def _seeds(row: Any) -> str:
    text = str(len(row.by_seed()))
    if row.failed:
        text += f" (+{len(row.failed)} failed)"
    incomplete = sum(1 for j in row.jobs if j.problems)
    return text + (f" ({incomplete} incomplete)" if incomplete else "")


def _metric_columns(group: Group) -> list[str]:
    present = {k for r in group.rows for j in r.jobs for s in (j.metrics or {}).get("systems", {}).values() for k in s}
    return [group.main_metric] + [m for m in EXTRA_METRICS if m in present and m != group.main_metric]


def _heading(g: Group) -> list[str]:
    head = f"## {g.task} · {g.family} · split={g.split} · decoding={g.decoding}"
    if g.split == "validation":
        return [head + " — TUNING (validation split)", "",
                "**Validation split: for choosing hyper-parameters only; these are not test results.**", ""]
    return [head, ""]


def _main_table(g: Group, deltas: dict[str, dict]) -> list[str]:
    cols = _metric_columns(g)
    arrow = "higher" if g.higher_is_better else "lower"
    lines = [f"Main metric: {g.main_metric} ({arrow} is better). Mean ± std over seeds (ddof=1). "
             "Δ vs initial: paired bootstrap of per-example quality, pooled over seeds, 95% CI "
             "(* = excludes 0). Spearman: calibration of the system's likelihood against quality.", "",
             "| method | " + " | ".join(cols) + " | Δ vs initial [95% CI] | spearman | seeds |",
             "|---" * (len(cols) + 4) + "|"]
    for r in g.rows:
        values = [fmt_stat(r.stat(system_metric(c))) for c in cols]
        delta = "0 (reference)" if r.kind == "initial" else fmt_ci(deltas.get(r.label))
        spearman = fmt_stat(r.stat(calibration()))
        lines.append(f"| {r.label} | " + " | ".join(values) + f" | {delta} | {spearman} | {_seeds(r)} |")
    return lines + [""]


def _charts(g: Group, deltas: dict[str, dict], out: Path, plad: tuple[str, ...]) -> list[Path]:
    from plad.evaluation import plots

    paths = []
    where = f"{g.task} · {g.family} · {g.split} · {g.decoding}"
    items = {k: (c["mean"], c["low"], c["high"]) for k, c in deltas.items() if c["n"] and k != "teacher"}
    if items:  # the teacher's gap is far larger than the methods' differences: named in the title
        teacher = f" (teacher: {fmt_ci(deltas['teacher']).rstrip('*')})" if deltas.get("teacher", {}).get("n") else ""
        paths.append(plots.interval_chart(items, out / f"report_{g.slug}_delta.png",
                                          "Δ quality vs initial student (95% CI)", where + teacher))
    spear = {r.label: s for r in g.rows if (s := r.stat(calibration())) is not None}
    if spear:
        init = g.row("initial")
        ref = init.stat(calibration()) if init else None
        paths.append(plots.interval_chart(
            {k: (s["mean"], s["mean"] - (s["std"] if s["n"] > 1 else 0), s["mean"] + (s["std"] if s["n"] > 1 else 0))
             for k, s in spear.items()}, out / f"report_{g.slug}_calibration.png",
            "calibration Spearman (mean ± std over seeds)", where + " (dashed: initial student)", zero_line=False,
            reference=ref["mean"] if ref else None))
    steps = curves(g, CURVE_COLUMNS, plad)
    if steps:
        paths.append(plots.step_curves(steps, out / f"report_{g.slug}_diagnostics.png", f"{g.task}:"))
    return paths


def _jobs_table(jobs: list[Job]) -> list[str]:
    lines = ["## Jobs", "", "| job | task | family | loss | variant | seed | split | decoding | oracle | status |",
             "|---" * 10 + "|"]
    for j in jobs:
        status = j.status + (f": {'; '.join(j.problems)}" if j.problems else "") + \
            (": no metrics.json" if j.metrics is None else "")
        lines.append(f"| {j.name} | {j.task} | {j.family} | {j.loss} | {j.variant or '–'} | {j.seed} | {j.split} | "
                     f"{j.decoding} | {'yes' if j.oracle else 'no'} | {status} |")
    return lines + [""]


def _section(g: Group, out: Path, n_boot: int, boot_seed: int, plad: tuple[str, ...],
             baselines: tuple[str, ...]) -> tuple[list[str], dict[str, Any]]:
    """One table's markdown (main table, tuning pick, comparisons, noise, charts) and its JSON."""
    deltas = deltas_to_initial(g, n_boot, boot_seed)
    comps = comparisons(g, plad, baselines, n_boot, boot_seed) if g.split != "validation" else []
    lines = _heading(g) + _main_table(g, deltas)
    if g.split == "validation" and (best := best_variants(g)):
        lines += ["Best variant per loss on validation (put its value into the loss config):", ""]
        lines += [f"- {r.label}: {fmt_stat(r.stat(system_metric(g.main_metric)))}" for r in best] + [""]
    lines += (comparison_table(comps) if comps else []) + per_type_table(g) + noise_table(g)
    lines += [f"![{p.stem}]({p.name})" for p in _charts(g, deltas, out, plad)] + [""]
    rows = [{"label": r.label, "kind": r.kind, "loss": r.loss, "variant": r.variant, "oracle": r.oracle,
             "seeds": list(r.by_seed()), "failed": [j.name for j in r.failed],
             "stats": {c: r.stat(system_metric(c)) for c in _metric_columns(g)} | {"spearman": r.stat(calibration())},
             "delta_vs_initial": deltas.get(r.label)} for r in g.rows]
    return lines, {"task": g.task, "family": g.family, "split": g.split, "decoding": g.decoding,
                   "main_metric": g.main_metric, "comparisons": comps, "rows": rows}


def build_report(root: str | Path, out: str | Path | None = None, n_boot: int = 2000, boot_seed: int = 0,
                 plad: tuple[str, ...] = PLAD_LOSSES, baselines: tuple[str, ...] = BASELINES,
                 jobs: list[Job] | None = None) -> Path:
    """Aggregate every job under ``root`` (or the ``jobs`` given, e.g. from W&B runs); writes
    report.md, report.json and charts into ``out`` (default: ``root``); returns report.md."""
    root = Path(root)
    if jobs is None and not root.is_dir():
        raise InputError(f"multirun dir: expected an existing folder, got {root}")
    if n_boot < 1:
        raise InputError(f"n_boot: expected a positive number of bootstrap resamples, got {n_boot}")
    jobs = discover_jobs(root) if jobs is None else jobs
    if not jobs:
        raise InputError(f"multirun dir: expected job folders with .hydra/config.yaml (+ metrics.json), "
                         f"got none in {root}")
    out = Path(out) if out else root
    out.mkdir(parents=True, exist_ok=True)
    groups = build_groups(jobs)
    bad = [j for j in jobs if j.status != "ok"]
    lines = ["# PLaD multirun report", "", f"{len(jobs)} jobs: {len(jobs) - len(bad)} complete, "
             f"{sum(j.metrics is None for j in jobs)} failed, {sum(j.status == 'incomplete' for j in jobs)} incomplete "
             "(all listed under Jobs). Rows marked (oracle) used references of the unlabeled prompts.", ""]
    warnings = [f"job {j.name} ({j.loss}, seed {j.seed}) {j.status}" for j in bad]
    warnings += [w for g in groups for w in disagreements(g)]
    if warnings:
        lines += ["**Warnings**", ""] + [f"- {w}" for w in warnings] + [""]
    summary = []
    for g in groups:
        section, data = _section(g, out, n_boot, boot_seed, plad, baselines)
        lines += section
        summary.append(data)
    lines += _jobs_table(jobs)
    atomic_write(out / "report.json", json.dumps(_strict({"warnings": warnings, "groups": summary, "jobs": [
        {"job": j.name, "task": j.task, "family": j.family, "loss": j.loss, "variant": j.variant, "seed": j.seed,
         "split": j.split, "decoding": j.decoding, "oracle": j.oracle, "status": j.status, "problems": j.problems}
        for j in jobs]}), indent=2, default=str, allow_nan=False))
    atomic_write(out / "report.md", "\n".join(lines))
    return out / "report.md"


def _strict(obj: Any) -> Any:
    """Strict JSON: NaN (e.g. the std of one seed) becomes null."""
    if isinstance(obj, dict):
        return {k: _strict(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [_strict(v) for v in obj]
    return None if isinstance(obj, float) and not math.isfinite(obj) else obj


def _names(text: str) -> tuple[str, ...]:
    return tuple(x.strip() for x in text.split(",") if x.strip())


def _jobs_and_out(args: argparse.Namespace,
                  parser: argparse.ArgumentParser) -> tuple[Path, list[Job] | None, Path, bool]:
    """(root, jobs, out, named by W&B run id): a multirun dir (jobs None: none found), W&B run
    folders, or wandb://."""
    from plad import report_wandb

    sources = [str(x) for x in args.sources]
    urls = [x for x in sources if report_wandb.is_wandb_url(x)]
    if urls:
        if len(sources) > 1:
            parser.error(f"sources: a wandb:// URL comes alone, got {' '.join(sources)}")
        out = args.out or Path("report-" + urls[0][len(report_wandb.SCHEME):].strip("/").replace("/", "-"))
        try:
            jobs = report_wandb.online_jobs(urls[0], out / "wandb_runs", args.group, args.tags, args.filter)
        except InputError as e:  # credentials, network, bad filters: one line, no traceback
            parser.exit(2, f"error: {urls[0]}: {e}\n")
        if not jobs:
            parser.exit(2, f"error: {urls[0]}: no runs with saved plad job files match\n")
        return out, jobs, out, True
    paths = [Path(x) for x in sources]
    if missing := [str(p) for p in paths if not p.is_dir()]:
        parser.error(f"sources: expected existing folders, got {', '.join(missing)}")
    runs = report_wandb.offline_run_dirs(paths)
    if len(paths) == 1 and not args.wandb and paths[0] not in runs:
        local = discover_jobs(paths[0])
        if local or not runs:  # none at all: build_report says so in one line
            kept = _or_exit(parser, "", report_wandb.filter_jobs, local, args.group, args.tags, args.filter)
            return paths[0], kept or None, args.out or paths[0], False
    if not runs:
        parser.error(f"sources: expected W&B run folders with saved plad job files, got none in {', '.join(sources)}")
    root = paths[0] if len(paths) == 1 and paths[0] not in runs else Path(os.path.commonpath([str(p) for p in paths]))
    jobs = _or_exit(parser, "", report_wandb.filter_jobs, report_wandb.offline_jobs(runs), args.group, args.tags,
                    args.filter)
    return root, jobs, args.out or root, True


def _or_exit(parser: argparse.ArgumentParser, prefix: str, step: Callable[..., Any], *args: Any) -> Any:
    """A step whose expected failures (bad filter, no extra, credentials, runs: ``InputError``) exit 2
    in one line; anything else keeps its traceback."""
    try:
        return step(*args)
    except InputError as e:
        parser.exit(2, f"error: {prefix}{e}\n")


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description="Aggregate a PLaD multirun into report.md and charts.")
    parser.add_argument("sources", nargs="+", help="a multirun dir; W&B run folders (wandb/offline-run-*) or folders "
                        "holding them; or wandb://<entity>/<project>")
    parser.add_argument("--out", type=Path, default=None, help="output folder (default: the multirun dir)")
    parser.add_argument("--wandb", action="store_true", help="read the W&B runs below the folder, not its job folders")
    parser.add_argument("--group", default=None, help="runs of this W&B group (logger.wandb.group)")
    parser.add_argument("--tags", nargs="+", default=[], help="runs with any of these tags")
    parser.add_argument("--filter", action="append", default=[], metavar="KEY=VALUE",
                        help="config value (wandb:// also: a run field such as state=finished); repeatable")
    parser.add_argument("--publish", action="store_true", help="also save a W&B Report of the runs (extra: "
                        "wandb-reports; W&B credentials)")
    parser.add_argument("--project", default=None, metavar="ENTITY/PROJECT",
                        help="--publish from folders: the W&B project the runs were synced to")
    parser.add_argument("--n-boot", type=int, default=2000, help="bootstrap resamples per comparison")
    parser.add_argument("--boot-seed", type=int, default=0, help="seed of the bootstrap resampling")
    parser.add_argument("--plad", type=_names, default=PLAD_LOSSES, help="comma list of PLaD losses")
    parser.add_argument("--baselines", type=_names, default=BASELINES, help="comma list of baseline losses")
    args = parser.parse_args(argv)
    if args.publish:  # before any work: where to, the extra, credentials
        from plad import report_publish, report_wandb

        sources = [str(x) for x in args.sources]
        target = _or_exit(parser, "--publish: ", report_publish.publish_target, sources, args.project)
    root, jobs, out, by_run_id = _jobs_and_out(args, parser)
    if args.publish:
        spec = _or_exit(parser, "--publish: ", report_publish.build_spec, jobs or [],
                        report_wandb.run_ids(jobs or [], by_run_id), *target)
    print(build_report(root, out, args.n_boot, args.boot_seed, args.plad, args.baselines, jobs=jobs))
    if args.publish:
        print(_or_exit(parser, "--publish: ", report_publish.publish, spec))


if __name__ == "__main__":
    main()
