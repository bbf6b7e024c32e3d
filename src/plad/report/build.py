"""report.md + report.json + charts from a list of jobs (plad.report.jobs).

One table per task x model family x evaluation split x decoding mode: the initial student, the
teacher, the task's model-free peers (anonymization: rule_based) and every loss (variant), as
mean ± std over seeds, with each row's paired-bootstrap difference to the initial student; then
each PLaD loss against each baseline (paired bootstrap on the same test texts, pooled over seeds),
the pseudo-label noise of the pairs, and the training diagnostics over steps. Oracle rows (runs
that used references of the unlabeled prompts) are marked, validation tables are labelled as
tuning tables, and every job is listed, failed and unfinished ones included: nothing is dropped
silently.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from plad.cache import atomic_write
from plad.checks import InputError
from plad.jsonable import strict
from plad.report.jobs import Job, discover_jobs
from plad.report.rows import (
    Group,
    Row,
    best_variants,
    build_groups,
    calibration,
    comparisons,
    curves,
    deltas_to_initial,
    disagreements,
    system_metric,
)
from plad.report.tables import comparison_table, fmt_ci, fmt_stat, noise_table, per_type_table

# /seen: seen phrasings only; keep_rate: the counterpart of leak_rate (deleting everything leaks nothing)
EXTRA_METRICS = ("exact_match", "exact_match/seen", "leak_rate", "keep_rate", "degenerate")
CURVE_COLUMNS = ("train/hinge_active", "val/rank_acc")


def _seeds(row: Row) -> str:
    text = str(len(row.by_seed()))
    for status in ("failed", "unfinished"):
        if n := sum(j.status == status for j in row.missing):
            text += f" (+{n} {status})"
    incomplete = sum(1 for j in row.jobs if j.problems)
    return text + (f" ({incomplete} incomplete)" if incomplete else "")


def _metric_columns(group: Group) -> list[str]:
    present = {k for r in group.rows for j in r.jobs for s in (j.metrics or {}).get("systems", {}).values() for k in s}
    return [group.main_metric] + [m for m in EXTRA_METRICS if m in present and m != group.main_metric]


def _heading(g: Group) -> list[str]:
    head = f"## {g.task} · {g.family} · split={g.split} · decoding={g.decoding}"
    if g.split == "validation":
        return [
            head + " — TUNING (validation split)",
            "",
            "**Validation split: for choosing hyper-parameters only; these are not test results.**",
            "",
        ]
    return [head, ""]


def _main_table(g: Group, deltas: dict[str, dict]) -> list[str]:
    cols = _metric_columns(g)
    arrow = "higher" if g.higher_is_better else "lower"
    lines = [
        f"Main metric: {g.main_metric} ({arrow} is better). Mean ± std over seeds (ddof=1). "
        "Δ vs initial: paired bootstrap of per-example quality, pooled over seeds, 95% CI "
        "(* = excludes 0). Spearman: calibration of the system's likelihood against quality.",
        "",
        "| method | " + " | ".join(cols) + " | Δ vs initial [95% CI] | spearman | seeds |",
        "|---" * (len(cols) + 4) + "|",
    ]
    for r in g.rows:
        values = [fmt_stat(r.stat(system_metric(c))) for c in cols]
        delta = "0 (reference)" if r.kind == "initial" else fmt_ci(deltas.get(r.label))
        spearman = fmt_stat(r.stat(calibration()))
        lines.append(f"| {r.label} | " + " | ".join(values) + f" | {delta} | {spearman} | {_seeds(r)} |")
    return lines + [""]


def _charts(g: Group, deltas: dict[str, dict], out: Path, plad: tuple[str, ...] | None) -> list[Path]:
    from plad.evaluation import plots

    paths = []
    where = f"{g.task} · {g.family} · {g.split} · {g.decoding}"
    items = {k: (c["mean"], c["low"], c["high"]) for k, c in deltas.items() if c["n"] and k != "teacher"}
    if items:  # the teacher's gap is far larger than the methods' differences: named in the title
        teacher = f" (teacher: {fmt_ci(deltas['teacher']).rstrip('*')})" if deltas.get("teacher", {}).get("n") else ""
        paths.append(
            plots.interval_chart(
                items, out / f"report_{g.slug}_delta.png", "Δ quality vs initial student (95% CI)", where + teacher
            )
        )
    spear = {r.label: s for r in g.rows if (s := r.stat(calibration())) is not None}
    if spear:
        init = g.row("initial")
        ref = init.stat(calibration()) if init else None
        paths.append(
            plots.interval_chart(
                {
                    k: (
                        s["mean"],
                        s["mean"] - (s["std"] if s["n"] > 1 else 0),
                        s["mean"] + (s["std"] if s["n"] > 1 else 0),
                    )
                    for k, s in spear.items()
                },
                out / f"report_{g.slug}_calibration.png",
                "calibration Spearman (mean ± std over seeds)",
                where + " (dashed: initial student)",
                zero_line=False,
                reference=ref["mean"] if ref else None,
            )
        )
    steps = curves(g, CURVE_COLUMNS, plad)
    if steps:
        paths.append(plots.step_curves(steps, out / f"report_{g.slug}_diagnostics.png", f"{g.task}:"))
    return paths


NO_METRICS = {"failed": ": no metrics.json", "unfinished": ": no metrics.json yet (running, or stopped mid-run)"}


def _jobs_table(jobs: list[Job]) -> list[str]:
    lines = [
        "## Jobs",
        "",
        "| job | task | family | loss | variant | seed | split | decoding | oracle | status |",
        "|---" * 10 + "|",
    ]
    for j in jobs:
        status = j.status + (f": {'; '.join(j.problems)}" if j.problems else "") + NO_METRICS.get(j.status, "")
        lines.append(
            f"| {j.name} | {j.task} | {j.family} | {j.loss} | {j.variant or '–'} | {j.seed} | {j.split} | "
            f"{j.decoding} | {'yes' if j.oracle else 'no'} | {status} |"
        )
    return lines + [""]


def _section(
    g: Group, out: Path, n_boot: int, boot_seed: int, plad: tuple[str, ...] | None, baselines: tuple[str, ...] | None
) -> tuple[list[str], dict[str, Any]]:
    """One table's markdown (main table, tuning pick, comparisons, noise, charts) and its JSON."""
    deltas = deltas_to_initial(g, n_boot, boot_seed)
    comps = comparisons(g, plad, baselines, n_boot, boot_seed) if g.split != "validation" else []
    lines = _heading(g) + _main_table(g, deltas)
    if g.split == "validation" and (best := best_variants(g)):
        lines += ["Best variant per loss on validation (put its value into the loss config):", ""]
        lines += [f"- {r.label}: {fmt_stat(r.stat(system_metric(g.main_metric)))}" for r in best] + [""]
    lines += (comparison_table(comps) if comps else []) + per_type_table(g) + noise_table(g)
    lines += [f"![{p.stem}]({p.name})" for p in _charts(g, deltas, out, plad)] + [""]
    rows = [
        {
            "label": r.label,
            "kind": r.kind,
            "loss": r.loss,
            "variant": r.variant,
            "oracle": r.oracle,
            "seeds": list(r.by_seed()),
            "failed": [j.name for j in r.missing if j.status == "failed"],
            "unfinished": [j.name for j in r.missing if j.status == "unfinished"],
            "stats": {c: r.stat(system_metric(c)) for c in _metric_columns(g)} | {"spearman": r.stat(calibration())},
            "delta_vs_initial": deltas.get(r.label),
        }
        for r in g.rows
    ]
    return lines, {
        "task": g.task,
        "family": g.family,
        "split": g.split,
        "decoding": g.decoding,
        "main_metric": g.main_metric,
        "comparisons": comps,
        "rows": rows,
    }


def build_report(
    root: str | Path,
    out: str | Path | None = None,
    n_boot: int = 2000,
    boot_seed: int = 0,
    plad: tuple[str, ...] | None = None,
    baselines: tuple[str, ...] | None = None,
    jobs: list[Job] | None = None,
) -> Path:
    """Aggregate every job under ``root`` (or the ``jobs`` given, e.g. from W&B runs); writes
    report.md, report.json and charts into ``out`` (default: ``root``); returns report.md. PLaD
    losses and baselines are told apart by their classes' ``kind``, unless ``plad`` and
    ``baselines`` name them."""
    root = Path(root)
    if jobs is None and not root.is_dir():
        raise InputError(f"multirun dir: expected an existing folder, got {root}")
    if n_boot < 1:
        raise InputError(f"n_boot: expected a positive number of bootstrap resamples, got {n_boot}")
    jobs = discover_jobs(root) if jobs is None else jobs
    if not jobs:
        raise InputError(
            f"multirun dir: expected job folders with .hydra/config.yaml (+ metrics.json), got none in {root}"
        )
    out = Path(out) if out else root
    out.mkdir(parents=True, exist_ok=True)
    groups = build_groups(jobs)
    bad = [j for j in jobs if j.status != "ok"]
    count = {s: sum(j.status == s for j in jobs) for s in ("failed", "unfinished", "incomplete")}
    unfinished = f"{count['unfinished']} unfinished (running, or stopped mid-run), " if count["unfinished"] else ""
    lines = [
        "# PLaD multirun report",
        "",
        f"{len(jobs)} jobs: {len(jobs) - len(bad)} complete, "
        f"{count['failed']} failed, {unfinished}{count['incomplete']} incomplete "
        "(all listed under Jobs). Rows marked (oracle) used references of the unlabeled prompts.",
        "",
    ]
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
    atomic_write(
        out / "report.json",
        json.dumps(
            strict(
                {
                    "warnings": warnings,
                    "groups": summary,
                    "jobs": [
                        {
                            "job": j.name,
                            "task": j.task,
                            "family": j.family,
                            "loss": j.loss,
                            "variant": j.variant,
                            "seed": j.seed,
                            "split": j.split,
                            "decoding": j.decoding,
                            "oracle": j.oracle,
                            "status": j.status,
                            "problems": j.problems,
                        }
                        for j in jobs
                    ],
                }
            ),
            indent=2,
            default=str,
            allow_nan=False,
        ),
    )
    atomic_write(out / "report.md", "\n".join(lines))
    return out / "report.md"
