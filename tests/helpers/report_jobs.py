"""Fake multirun job folders for the report tests (metrics.json, samples.jsonl, .hydra, CSV logs):
anonymization x llama, 4 test texts per seed; the initial student scores 0.5..0.8 + 0.01 * seed,
the teacher +0.2, a loss its ``shift``. ``tables`` reads a report.md back as cells."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import yaml

N_BOOT = 400
INIT = np.array([0.5, 0.6, 0.7, 0.8])
SHIFT = {
    "sft": np.array([0.02, 0.0, 0.04, 0.02]),
    "seqkd": np.full(4, 0.01),
    "ranking": np.array([0.05, 0.03, 0.04, 0.04]),
    "margin": np.full(4, 0.03),
    "oracle": np.full(4, 0.1),
}
# the saved loss._target_: the report reads each loss's kind (plad / baseline) and order from its class
LOSS_CLASSES = {
    "sft": "plad.losses.sft.SFTLoss",
    "seqkd": "plad.losses.seqkd.SeqKDLoss",
    "ranking": "plad.losses.ranking.RankingLoss",
    "margin": "plad.losses.margin.MarginLoss",
}


def write_job(
    root: Path,
    name: str,
    loss: str,
    seed: int,
    shift: np.ndarray | None,
    *,
    overrides: list[str] = (),
    split: str = "test",
    decoding: str = "greedy",
    oracle: bool = False,
    extra: dict | None = None,
    init_offset: float = 0.0,
    csv_rows: list[dict] | None = None,
    loss_cfg: dict | None = None,
    choice: str | None = None,
    metrics_subdir: str = "",
    finished: bool = False,
    config: dict | None = None,
) -> Path:
    """One job folder; ``shift`` None = no metrics.json: unfinished, or failed when ``finished``
    (run_summary.json written)."""
    job = root / name
    (job / ".hydra").mkdir(parents=True)
    cfg = {
        "seed": seed,
        "task": {"_target_": "plad.tasks.anonymization.AnonymizationTask"},
        "model": {"family": "llama"},
        "loss": loss_cfg or {"_target_": LOSS_CLASSES[loss]},
        "eval": {"split": split},
        **(config or {}),
    }
    (job / ".hydra" / "config.yaml").write_text(yaml.safe_dump(cfg))
    (job / ".hydra" / "overrides.yaml").write_text(
        yaml.safe_dump(([f"loss={loss}"] if loss else []) + [f"seed={seed}", *overrides])
    )
    choices = {"task": "anonymization", "model": "llama", **({"loss": choice} if choice else {})}
    (job / ".hydra" / "hydra.yaml").write_text(yaml.safe_dump({"hydra": {"runtime": {"choices": choices}}}))
    if finished:
        (job / "run_summary.json").write_text("{}")
    if shift is None:
        return job
    init = INIT + 0.01 * seed
    q = {"teacher": init + 0.2, "student_init": init, "student": init + shift}
    systems = {
        s: {"quality": float(v.mean()), "exact_match": 0.1, "leak_rate": 0.05, "degenerate": 0.02} for s, v in q.items()
    }
    systems["student_init"]["quality"] += init_offset
    metrics = {
        "task": "anonymization",
        "main_system": "student",
        "main_metric": "quality",
        "higher_is_better": True,
        "split": split,
        "decoding": decoding,
        "oracle": oracle,
        "systems": systems,
        "calibration": {"student_init": {"spearman": 0.4}, "student": {"spearman": 0.1 * (seed + 1)}},
    }
    for key, value in (extra or {}).items():
        metrics[key] = value if key != "systems" else {s: {**systems[s], **value.get(s, {})} for s in systems}
    out = job / metrics_subdir
    out.mkdir(parents=True, exist_ok=True)
    (out / "metrics.json").write_text(json.dumps(metrics))
    with open(out / "samples.jsonl", "w") as f:
        for i in range(4):
            row = {
                "id": i,
                "prompt": f"text {seed}-{i}",
                "reference": "r",
                "main_system": "student",
                "outputs": {s: "o" for s in q},
                "quality": {s: float(v[i]) for s, v in q.items()},
            }
            f.write(json.dumps(row) + "\n")
    if csv_rows:
        (job / "csv" / "version_0").mkdir(parents=True)
        cols = sorted({k for r in csv_rows for k in r})
        lines = [",".join(cols)] + [",".join(str(r.get(c, "")) for c in cols) for r in csv_rows]
        (job / "csv" / "version_0" / "metrics.csv").write_text("\n".join(lines) + "\n")
    return job


def _ranking_extra(seed: int) -> dict[str, Any]:
    return {
        "systems": {"student": {"exact_match": 0.2 + 0.1 * seed, "degenerate": 0.01 * seed}},
        "diagnostics": {
            "pseudo_label_noise": {
                "student_wins": 0.1 * (seed + 1),
                "ties": 0.05,
                "teacher_quality": 0.8,
                "student_quality": 0.7,
                "n_pairs": 100,
            }
        },
    }


def _ranking_csv(seed: int) -> list[dict]:
    return [
        {"step": 0, "train/hinge_active": 0.9 - 0.1 * seed},
        {"step": 10, "train/hinge_active": 0.5},
        {"step": 10, "val/rank_acc": 0.6 + 0.1 * seed, "val/loss": 1.0},
    ]


def tables(md: str) -> dict[str, dict[str, list[str]]]:
    """{heading: {key: cells}} for every markdown table; key = first cell, or "first#second" when
    the first cell repeats (the comparison table's PLaD column)."""
    out: dict[str, dict[str, list[str]]] = {}
    heading = ""
    for line in md.splitlines():
        if line.startswith("#"):
            heading = line.lstrip("# ").strip()
        elif line.startswith("| ") and not line.startswith("|---"):
            cells = [c.strip() for c in line.strip().strip("|").split("|")]
            rows = out.setdefault(heading, {})
            rows[cells[0] if cells[0] not in rows else f"{cells[0]}#{cells[1]}"] = cells
    return out
