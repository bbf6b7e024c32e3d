"""Markdown tables of one report group beyond the main table: PLaD vs baselines, leak rate per
PII type (anonymization), the pseudo-label noise of the pairs. Formatting helpers shared with
plad.report.build and plad.report.publish."""

from __future__ import annotations

from typing import Any

from plad.report.rows import NOISE_FIELDS, Group, noise, system_metric

PER_TYPE = "leak_rate/"  # anonymization's metrics.json: leak_rate/<TYPE> per system


def fmt_stat(s: dict[str, float] | None, digits: int = 3) -> str:
    if s is None:
        return "–"
    return f"{s['mean']:.{digits}f}" if s["n"] < 2 else f"{s['mean']:.{digits}f} ± {s['std']:.{digits}f}"


def fmt_ci(c: dict[str, Any] | None) -> str:
    if not c or not c["n"]:
        return "–"
    return f"{c['mean']:+.3f} [{c['low']:+.3f}, {c['high']:+.3f}]" + ("*" if c["excludes_zero"] else "")


def comparison_table(comps: list[dict[str, Any]]) -> list[str]:
    lines = [
        "### PLaD vs baselines (paired bootstrap)",
        "",
        "Difference of per-example quality (PLaD − baseline) on the same test texts, paired within "
        "each seed, resampled within seed, pooled over seeds.",
        "",
        "| PLaD | baseline | Δ mean | 95% CI | excludes 0 | seed ids | n | notes |",
        "|---" * 8 + "|",
    ]
    for c in comps:
        ci = f"[{c['low']:+.3f}, {c['high']:+.3f}]" if c["n"] else "–"
        lines.append(
            f"| {c['a']} | {c['b']} | {c['mean']:+.3f} | {ci} | {'yes' if c['excludes_zero'] else 'no'} | "
            f"{','.join(map(str, c['seeds'])) or '–'} | {c['n']} | {'; '.join(c['notes'])} |"
        )
    return lines + [""]


def noise_table(g: Group) -> list[str]:
    rows = [(r, [r.stat(noise(f)) for f in NOISE_FIELDS]) for r in g.rows if r.kind == "loss"]
    rows = [(r, s) for r, s in rows if any(x is not None for x in s)]
    if not rows:
        return []
    lines = [
        "### Pseudo-label noise of the distillation pairs",
        "",
        "student_wins: share of pairs whose student sample beats the teacher sample by the task metric "
        "(against the unlabeled prompts' references, measured for this diagnosis only); qualities are "
        "the pairs' mean task quality. Mean ± std over seeds.",
        "",
        "| method | " + " | ".join(NOISE_FIELDS) + " |",
        "|---" * (len(NOISE_FIELDS) + 1) + "|",
    ]
    lines += [
        f"| {r.label} | " + " | ".join(fmt_stat(x, 0 if f == "n_pairs" else 3) for f, x in zip(NOISE_FIELDS, s)) + " |"
        for r, s in rows
    ]
    return lines + [""]


def per_type_table(g: Group) -> list[str]:
    """Leak rate per PII type for every row (systems and losses), when the task measures it: the
    overall leak rate hides which kinds of personal data a system lets through."""
    types = sorted(
        {
            k[len(PER_TYPE) :]
            for r in g.rows
            for j in r.jobs
            for s in ((j.metrics or {}).get("systems") or {}).values()
            for k in s
            if k.startswith(PER_TYPE)
        }
    )
    if not types:
        return []
    lines = [
        "### Leak rate per PII type",
        "",
        "Share of the gold values of each type found verbatim in the output (lower is better); mean ± std over seeds.",
        "",
        "| method | " + " | ".join(types) + " |",
        "|---" * (len(types) + 1) + "|",
    ]
    lines += [
        f"| {r.label} | " + " | ".join(fmt_stat(r.stat(system_metric(PER_TYPE + t)), 2) for t in types) + " |"
        for r in g.rows
    ]
    return lines + [""]
