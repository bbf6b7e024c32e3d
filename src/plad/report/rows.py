"""The report's tables as data: jobs grouped by (task, family, split, decoding), one row per system
(initial student, teacher, each model-free peer such as ``rule_based``) and per loss variant,
per-seed values, and paired comparisons.

Per-seed first, then over seeds: a row's value for a seed is the mean over that seed's jobs (one
job normally; duplicates are averaged, never dropped), and the table shows mean ± std over seeds.
The initial student and the teacher come from every job of the group; jobs of one seed must agree
on them (they are the same models), and a disagreement becomes a warning in the report.

Which rows are PLaD losses, which are baselines (compared against) and where each goes in the
table comes from the loss class (``CalibrationLoss.kind`` and ``order``, via plad.report.jobs):
one module + one YAML add a loss to the report too.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from plad.report.jobs import BEFORE, Job, natural_key
from plad.report.stats import average_quality, mean_curve, mean_std, pair_by_id, paired_bootstrap

NOISE_FIELDS = ("student_wins", "ties", "teacher_quality", "student_quality", "n_pairs")


@dataclass
class Row:
    """One table row: the initial student, the teacher, a peer system (``loss`` holds its name) or
    one loss variant (oracle apart)."""

    kind: str  # "initial" | "teacher" | "peer" | "loss"
    loss: str = ""
    variant: str = ""
    oracle: bool = False
    jobs: list[Job] = field(default_factory=list)
    missing: list[Job] = field(default_factory=list)  # jobs without metrics.json: failed or unfinished
    loss_kind: str = ""  # loss rows: the loss class's kind (plad | baseline | oracle)
    loss_order: int = 0  # loss rows: the loss class's display order

    @property
    def label(self) -> str:
        name = {"initial": "initial student", "teacher": "teacher"}.get(self.kind, self.loss)  # peer: its name
        return name + (f" · {self.variant}" if self.variant else "") + (" (oracle)" if self.oracle else "")

    def system(self, job: Job) -> str:
        if self.kind == "peer":
            return self.loss
        return {"initial": BEFORE, "teacher": "teacher"}.get(self.kind) or job.main_system

    def by_seed(self) -> dict[Any, list[Job]]:
        out: dict[Any, list[Job]] = defaultdict(list)
        for j in self.jobs:
            out[j.seed].append(j)
        return dict(sorted(out.items(), key=lambda kv: natural_key(str(kv[0]))))

    def per_seed(self, get: Callable[[Job, str], Any]) -> dict[Any, float | None]:
        """Each seed's value: the mean over that seed's jobs of ``get(job, system)``."""
        out = {}
        for seed, jobs in self.by_seed().items():
            stats = mean_std([get(j, self.system(j)) for j in jobs])
            out[seed] = None if stats is None else stats["mean"]
        return out

    def stat(self, get: Callable[[Job, str], Any]) -> dict[str, float] | None:
        return mean_std(list(self.per_seed(get).values()))

    def seed_quality(self, seed: Any, system: str | None = None) -> dict[Any, tuple[str, float]] | None:
        """Per-example quality of this row (or of ``system``) in one seed, averaged over its jobs."""
        runs = [j.quality(system or self.system(j)) for j in self.by_seed().get(seed, []) if j.samples()]
        return average_quality(runs)


def system_metric(name: str) -> Callable[[Job, str], Any]:
    return lambda job, system: ((job.metrics or {}).get("systems", {}).get(system) or {}).get(name)


def calibration(name: str = "spearman") -> Callable[[Job, str], Any]:
    return lambda job, system: (((job.metrics or {}).get("calibration") or {}).get(system) or {}).get(name)


def noise(name: str) -> Callable[[Job, str], Any]:
    return lambda job, system: (((job.metrics or {}).get("diagnostics") or {}).get("pseudo_label_noise") or {}).get(
        name
    )


@dataclass
class Group:
    """All rows of one table: same task, model family, evaluation split and decoding mode."""

    task: str
    family: str
    split: str
    decoding: str
    rows: list[Row]
    main_metric: str = "quality"
    higher_is_better: bool = True

    @property
    def slug(self) -> str:
        return f"{self.task}_{self.family}_{self.split}_{self.decoding}"

    def losses(self, kind: str, names: tuple[str, ...] | None = None) -> list[Row]:
        """Loss rows whose class is of ``kind`` (plad | baseline | oracle), or, when ``names`` is
        given, the rows of those loss names."""
        return [
            r for r in self.rows if r.kind == "loss" and (r.loss in names if names is not None else r.loss_kind == kind)
        ]

    def row(self, kind: str) -> Row | None:
        return next((r for r in self.rows if r.kind == kind), None)


def _row_order(row: Row) -> tuple:
    kind = ("initial", "teacher", "peer", "loss").index(row.kind)
    return kind, row.loss_order, row.loss, row.oracle, _variant_key(row.variant)


def _variant_key(variant: str) -> list[tuple]:
    """Variants in numeric order of their values (lr 1e-4 before 3e-4 before 1e-3)."""
    key = []
    for item in variant.split():
        name, _, value = item.partition("=")
        try:
            key.append((name, 0, float(value), ""))
        except ValueError:
            key.append((name, 1, 0.0, value))
    return key


def _loss_row(j: Job, oracle: bool) -> Row:
    return Row("loss", j.loss, j.variant, oracle, loss_kind=j.loss_kind, loss_order=j.loss_order)


def build_groups(jobs: list[Job]) -> list[Group]:
    """Group jobs into tables; jobs without metrics join their loss row (by loss and variant) as
    missing."""
    keyed: dict[tuple, dict[tuple, Row]] = defaultdict(dict)
    for j in sorted(jobs, key=lambda j: j.metrics is None):  # jobs with metrics first: they make the rows
        rows = keyed[(j.task, j.family, j.split, j.decoding)]
        if j.metrics is None:
            match = [r for k, r in rows.items() if k[:2] == (j.loss, j.variant)]
            row = match[0] if match else rows.setdefault((j.loss, j.variant, False), _loss_row(j, False))
            row.missing.append(j)
            continue
        systems = j.metrics.get("systems") or {}
        for kind, system in (("initial", BEFORE), ("teacher", "teacher")):
            if system in systems:
                rows.setdefault((kind,), Row(kind)).jobs.append(j)
        for peer in j.metrics.get("peer_systems") or []:  # model-free systems, e.g. rule_based
            if peer in systems:
                rows.setdefault(("peer", peer), Row("peer", peer)).jobs.append(j)
        rows.setdefault((j.loss, j.variant, j.oracle), _loss_row(j, j.oracle)).jobs.append(j)
    groups = []
    for (task, family, split, decoding), rows in sorted(keyed.items()):
        first = next((j.metrics for r in rows.values() for j in r.jobs), None) or {}
        groups.append(
            Group(
                task,
                family,
                split,
                decoding,
                sorted(rows.values(), key=_row_order),
                first.get("main_metric", "quality"),
                bool(first.get("higher_is_better", True)),
            )
        )
    return groups


def disagreements(group: Group) -> list[str]:
    """Seeds where jobs report different numbers for the same fixed system (initial student,
    teacher, peers)."""
    out = []
    for row in (group.row("initial"), group.row("teacher"), *(r for r in group.rows if r.kind == "peer")):
        for seed, jobs in row.by_seed().items() if row else []:
            values = [system_metric(group.main_metric)(j, row.system(j)) for j in jobs]
            values = [v for v in values if v is not None]
            if values and max(values) - min(values) > 1e-9:
                out.append(
                    f"{row.label}, seed {seed}: {group.main_metric} ranges {min(values):.4f}–"
                    f"{max(values):.4f} over jobs {', '.join(j.name for j in jobs)}"
                )
    return out


def compare(a: Row, b: Row, n_boot: int = 2000, seed: int = 0) -> dict[str, Any]:
    """Paired bootstrap of per-example quality, row ``a`` minus row ``b``, pooled over seeds.

    Against the initial student, ``b``'s quality comes from ``a``'s own jobs (same job, same
    texts); against another row, from that row's jobs of the same seed, paired by example id.
    """
    diffs, used, notes = [], [], []
    b_seeds = set(b.by_seed())
    a_missing = {j.seed: j.status for j in a.missing if j.seed not in a.by_seed()}
    for s in a.by_seed():
        qa = a.seed_quality(s)
        qb = a.seed_quality(s, BEFORE) if b.kind == "initial" else b.seed_quality(s)
        if b.kind != "initial" and s not in b_seeds:
            notes.append(f"seed {s}: no {b.label} job")
        elif qa is None or qb is None:
            notes.append(f"seed {s}: samples missing or inconsistent")
        elif (d := pair_by_id(qa, qb)) is None:
            notes.append(f"seed {s}: different test texts")
        else:
            diffs.append(d)
            used.append(s)
    if b.kind != "initial":
        notes += [f"seed {s}: no {a.label} job" for s in sorted(b_seeds - set(a.by_seed()) - set(a_missing), key=str)]
    notes += [f"seed {s}: {a.label} job {a_missing[s]}" for s in sorted(a_missing, key=str)]
    return {
        "a": a.label,
        "b": b.label,
        **paired_bootstrap(diffs, n_boot=n_boot, seed=seed),
        "seeds": used,
        "notes": notes,
    }


def comparisons(
    group: Group,
    plad: tuple[str, ...] | None = None,
    baselines: tuple[str, ...] | None = None,
    n_boot: int = 2000,
    seed: int = 0,
) -> list[dict[str, Any]]:
    """Each PLaD row against the initial student and each baseline row present; ``plad`` and
    ``baselines`` name the losses instead of their classes' kinds."""
    others = [r for r in [group.row("initial"), *group.losses("baseline", baselines)] if r is not None and r.jobs]
    return [compare(a, b, n_boot, seed) for a in group.losses("plad", plad) if a.jobs for b in others]


def deltas_to_initial(group: Group, n_boot: int = 2000, seed: int = 0) -> dict[str, dict[str, Any]]:
    """Every row but the initial student against the initial student (label -> comparison)."""
    init = group.row("initial")
    if init is None:
        return {}
    return {r.label: compare(r, init, n_boot, seed) for r in group.rows if r.kind != "initial" and r.jobs}


def curves(group: Group, columns: tuple[str, ...], losses: tuple[str, ...] | None = None) -> dict[str, dict]:
    """{column: {row label: (steps, mean over seeds, n seeds)}} from the jobs' CSV logs of the
    PLaD rows (or of the ``losses`` named)."""
    out: dict[str, dict] = {}
    for col in columns:
        for row in group.losses("plad", losses):
            per_seed = [[p for j in jobs for p in j.curve(col)] for jobs in row.by_seed().values()]
            per_seed = [c for c in per_seed if c]
            if per_seed:
                out.setdefault(col, {})[row.label] = mean_curve(per_seed)
    return out


def best_variants(group: Group) -> list[Row]:
    """Per loss (oracle apart), the variant with the best main metric mean: the tuning sweep's pick."""
    sign = 1 if group.higher_is_better else -1
    best: dict[tuple, tuple[float, Row]] = {}
    for row in group.rows:
        s = row.stat(system_metric(group.main_metric)) if row.kind == "loss" and row.variant else None
        key = (row.loss, row.oracle)
        if s is not None and (key not in best or sign * s["mean"] > sign * best[key][0]):
            best[key] = (s["mean"], row)
    return [r for _, r in sorted(best.values(), key=lambda v: _row_order(v[1]))]
