"""``plad.report --publish``: the report's tables as a W&B Report whose panels point at the runs.

Two steps, so the content is testable without W&B: ``build_spec`` turns the report's grouped
jobs into plain data (title, entity/project, one section per table with its panels and the values
the markdown table shows), and ``wandb_report``/``publish`` turn that data into
``wandb_workspaces.reports.v2`` objects and save them (the optional ``wandb-reports`` extra).
W&B draws the panels from the runs' logged summaries (``eval/...``), grouped by the loss's config
class; the spec also carries the report's own numbers (std over seeds, ddof=1) for the text.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from plad.checks import InputError
from plad.report.jobs import Job
from plad.report.rows import Group, Row, build_groups, calibration, system_metric
from plad.report.tables import fmt_stat
from plad.report.wandb_runs import SCHEME, first_line

EXTRA = "wandb-reports"
PREFIX = "eval"  # plad.evaluation.log_results logs metrics.json under eval/...
LOSS_KEY = "loss._target_"  # W&B config key that tells the losses apart (the loss name is a Hydra choice)


def _stat(row: Row, get: Callable[[Job, str], Any]) -> dict[str, Any]:
    """mean, std (ddof=1) and n over the row's seeds, as the report's table computes them."""
    s = row.stat(get) or {"mean": None, "std": None, "n": 0}
    return {"mean": s["mean"], "std": s["std"], "n": s["n"]}


def _stat_row(row: Row, get: Callable[[Job, str], Any], ids: dict[str, str]) -> dict[str, Any]:
    return {"label": row.label, "loss": row.loss, **_stat(row, get), "runs": [ids[j.name] for j in row.jobs]}


def _win_rate(pair: str) -> Callable[[Job, str], Any]:
    return lambda job, system: (((job.metrics or {}).get("win_rate") or {}).get(pair) or {}).get("rate")


def _section(g: Group, ids: dict[str, str]) -> dict[str, Any]:
    """One table's panels: main metric per loss (mean ± std over seeds), calibration scatter,
    win rates, the run table grouped by loss, and the config keys whose values differ."""
    losses = [r for r in g.rows if r.kind == "loss" and r.jobs]
    jobs = [j for r in losses for j in r.jobs]
    configs = {ids[j.name]: j.config.flat() for j in jobs}
    variant_keys = sorted({item.partition("=")[0] for r in losses for item in r.variant.split()})
    main = jobs[0].main_system if jobs else "student"
    metric = f"{PREFIX}/systems/{main}/{g.main_metric}"
    pairs = sorted({p for j in jobs for p in ((j.metrics or {}).get("win_rate") or {})})
    keys = sorted({k for c in configs.values() for k in c})
    differing = {
        k: {run: c.get(k) for run, c in configs.items()}
        for k in keys
        if len({repr(c.get(k)) for c in configs.values()}) > 1
    }
    references = [_stat_row(r, system_metric(g.main_metric), ids) for r in g.rows if r.kind != "loss" and r.jobs]
    return {
        "heading": f"{g.task} · {g.family} · split={g.split} · decoding={g.decoding}",
        "runs": list(configs),
        "groupby": [LOSS_KEY, *variant_keys],
        "panels": [
            {
                "kind": "bar",
                "title": f"{g.main_metric} per loss (mean ± std over seeds)",
                "metrics": [metric],
                "error_bars": "stddev",
                "higher_is_better": g.higher_is_better,
                "bars": [
                    _stat_row(r, system_metric(g.main_metric), ids)
                    | {"group": {k: configs[ids[r.jobs[0].name]].get(k) for k in [LOSS_KEY, *variant_keys]}}
                    for r in losses
                ],
                "references": references,
            },
            {
                "kind": "scatter",
                "title": "calibration: Spearman of likelihood vs quality, per run",
                "x": f"{PREFIX}/calibration/{main}/spearman",
                "y": metric,
                "points": [
                    {
                        "run": ids[j.name],
                        "label": r.label,
                        "seed": j.seed,
                        "x": calibration()(j, r.system(j)),
                        "y": system_metric(g.main_metric)(j, r.system(j)),
                    }
                    for r in losses
                    for j in r.jobs
                ],
            },
            {
                "kind": "bar",
                "title": "win rates of the distilled student (judge)",
                "error_bars": "stddev",
                "metrics": [f"{PREFIX}/win_rate/{p}/rate" for p in pairs],
                "bars": [{"label": r.label, "rates": {p: _stat(r, _win_rate(p)) for p in pairs}} for r in losses],
            },
            {
                "kind": "run_table",
                "title": "runs grouped by loss",
                "groupby": [LOSS_KEY, *variant_keys],
                "rows": [
                    {"label": r.label, "runs": [ids[j.name] for j in r.jobs], "seeds": list(r.by_seed())}
                    for r in losses
                ],
            },
            {"kind": "config_diff", "title": "config differences between the runs", "keys": differing},
        ],
    }


def build_spec(
    jobs: list[Job], run_ids: dict[str, str], entity: str, project: str, title: str | None = None
) -> dict[str, Any]:
    """The W&B Report as plain data; ``run_ids`` maps each job name to its W&B run id."""
    if missing := [j.name for j in jobs if j.metrics is not None and j.name not in run_ids]:
        raise InputError(f"job {missing[0]} has no W&B run (train with logger=wandb)")
    groups = [
        g
        for g in build_groups([j for j in jobs if j.name in run_ids])
        if any(r.kind == "loss" and r.jobs for r in g.rows)
    ]
    return {
        "title": title or f"PLaD report: {', '.join(sorted({f'{g.task} · {g.family}' for g in groups}))}",
        "entity": entity,
        "project": project,
        "description": f"{len(jobs)} jobs; numbers: mean ± std over seeds (ddof=1), as in plad.report's report.md",
        "sections": [_section(g, run_ids) for g in groups],
    }


def _markdown(section: dict[str, Any]) -> str:
    """The section's numbers as the report computed them (W&B's own error bars may differ in ddof)."""
    bar = section["panels"][0]
    lines = [f"| method | {bar['title'].split(' per ')[0]} | seeds |", "|---|---|---|"]
    lines += [
        f"| {r['label']} | {fmt_stat(r if r['mean'] is not None else None)} | {r['n']} |"
        for r in bar["references"] + bar["bars"]
    ]
    return "\n".join(lines)


def wandb_report(spec: dict[str, Any]) -> Any:
    """The spec as ``wandb_workspaces.reports.v2`` objects (not saved)."""
    import wandb_workspaces.reports.v2 as wr
    from wandb_workspaces import expr

    blocks: list[Any] = [wr.MarkdownBlock(text=spec["description"])]
    for section in spec["sections"]:
        group = [f"config.{k}" for k in section["groupby"]]
        one_key = wr.Config(section["groupby"][0]) if len(group) == 1 else None  # else: the runset's groups
        runset = wr.Runset(
            entity=spec["entity"],
            project=spec["project"],
            name=section["heading"],
            filters=[expr.Metric("ID").isin(section["runs"])],
            groupby=group,
        )
        panels = []
        for p in section["panels"]:
            if p["kind"] == "bar":
                panels.append(
                    wr.BarPlot(
                        title=p["title"],
                        metrics=p["metrics"],
                        groupby=one_key,
                        groupby_aggfunc="mean",
                        groupby_rangefunc=p["error_bars"],
                    )
                )
            elif p["kind"] == "scatter":
                panels.append(wr.ScatterPlot(title=p["title"], x=wr.SummaryMetric(p["x"]), y=wr.SummaryMetric(p["y"])))
            elif p["kind"] == "config_diff":
                panels.append(wr.RunComparer(diff_only="split"))
        # run_table: the panel grid's run set table, grouped by the runset's groupby
        blocks += [
            wr.H2(text=section["heading"]),
            wr.MarkdownBlock(text=_markdown(section)),
            wr.PanelGrid(runsets=[runset], panels=panels),
        ]
    return wr.Report(
        entity=spec["entity"],
        project=spec["project"],
        title=spec["title"][:128],
        description=spec["description"],
        blocks=blocks,
        width="fluid",
    )


def publish_target(sources: list[str], project: str | None) -> tuple[str, str]:
    """(entity, project) the panels point at: the wandb:// source's, else ``--project``; checked
    before any work, with the extra and the credentials."""
    url = next((s for s in sources if s.startswith(SCHEME)), "")
    target = (url[len(SCHEME) :] if url else project or "").strip("/").split("/")
    if len(target) != 2 or not all(target):
        raise InputError(
            "expected --project <entity>/<project> (the W&B project the runs were synced to) "
            "or a wandb://<entity>/<project> source"
        )
    try:
        import wandb_workspaces.reports.v2  # noqa: F401
    except ImportError:
        raise InputError(f"needs the {EXTRA} extra: pip install 'plad[{EXTRA}]'") from None
    import wandb

    try:
        wandb.Api(timeout=30)
    except Exception as e:
        raise InputError(f"no W&B credentials or network ({first_line(e)})") from None
    return target[0], target[1]


def publish(spec: dict[str, Any]) -> str:
    """Save the report on W&B; returns its URL."""
    report = wandb_report(spec)
    try:
        report.save()
        return str(report.url)
    except Exception as e:  # network, permissions: one line
        raise InputError(f"W&B did not save the report ({first_line(e)})") from None
