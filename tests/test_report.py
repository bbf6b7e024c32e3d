"""Multirun report on fixture job folders (metrics.json, samples.jsonl, .hydra, CSV logs); no training.

Fixture: anonymization x llama, 4 test texts per seed. Per example, the initial student scores
0.5..0.8 + 0.01 * seed, the teacher +0.2, sft +[0.02, 0, 0.04, 0.02], seqkd +0.01 (seeds 0, 1
only), ranking +[0.05, 0.03, 0.04, 0.04] + 0.01 * seed, margin +0.03 (seed 2 failed: no
metrics.json), and an oracle sft run (+0.1, seeds 0, 1).
"""
from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path
from typing import Any

import matplotlib.image
import numpy as np
import pytest
import yaml

from plad.report import build_report, main
from plad.report_jobs import discover_jobs
from plad.report_stats import paired_bootstrap
from helpers import HANG_S

N_BOOT = 400
INIT = np.array([0.5, 0.6, 0.7, 0.8])
SHIFT = {"sft": np.array([0.02, 0.0, 0.04, 0.02]), "seqkd": np.full(4, 0.01),
         "ranking": np.array([0.05, 0.03, 0.04, 0.04]), "margin": np.full(4, 0.03), "oracle": np.full(4, 0.1)}


def write_job(root: Path, name: str, loss: str, seed: int, shift: np.ndarray | None, *, overrides: list[str] = (),
              split: str = "test", decoding: str = "greedy", oracle: bool = False, extra: dict | None = None,
              init_offset: float = 0.0, csv_rows: list[dict] | None = None, loss_cfg: dict | None = None,
              choice: str | None = None, metrics_subdir: str = "") -> Path:
    """One job folder; ``shift`` None = a failed job (no metrics.json)."""
    job = root / name
    (job / ".hydra").mkdir(parents=True)
    cfg = {"seed": seed, "task": {"_target_": "plad.tasks.anonymization.AnonymizationTask"},
           "model": {"family": "llama"},
           "loss": loss_cfg or {"_target_": f"plad.losses.{loss}.Loss"}, "eval": {"split": split}}
    (job / ".hydra" / "config.yaml").write_text(yaml.safe_dump(cfg))
    (job / ".hydra" / "overrides.yaml").write_text(yaml.safe_dump(([f"loss={loss}"] if loss else []) + [f"seed={seed}",
                                                                                                        *overrides]))
    choices = {"task": "anonymization", "model": "llama", **({"loss": choice} if choice else {})}
    (job / ".hydra" / "hydra.yaml").write_text(yaml.safe_dump({"hydra": {"runtime": {"choices": choices}}}))
    if shift is None:
        return job
    init = INIT + 0.01 * seed
    q = {"teacher": init + 0.2, "student_init": init, "student": init + shift}
    systems = {s: {"quality": float(v.mean()), "exact_match": 0.1, "leak_rate": 0.05, "degenerate": 0.02}
               for s, v in q.items()}
    systems["student_init"]["quality"] += init_offset
    metrics = {"task": "anonymization", "main_system": "student", "main_metric": "quality", "higher_is_better": True,
               "split": split, "decoding": decoding, "oracle": oracle, "systems": systems,
               "calibration": {"student_init": {"spearman": 0.4}, "student": {"spearman": 0.1 * (seed + 1)}}}
    for key, value in (extra or {}).items():
        metrics[key] = value if key != "systems" else {s: {**systems[s], **value.get(s, {})} for s in systems}
    out = job / metrics_subdir
    out.mkdir(parents=True, exist_ok=True)
    (out / "metrics.json").write_text(json.dumps(metrics))
    with open(out / "samples.jsonl", "w") as f:
        for i in range(4):
            row = {"id": i, "prompt": f"text {seed}-{i}", "reference": "r", "main_system": "student",
                   "outputs": {s: "o" for s in q}, "quality": {s: float(v[i]) for s, v in q.items()}}
            f.write(json.dumps(row) + "\n")
    if csv_rows:
        (job / "csv" / "version_0").mkdir(parents=True)
        cols = sorted({k for r in csv_rows for k in r})
        lines = [",".join(cols)] + [",".join(str(r.get(c, "")) for c in cols) for r in csv_rows]
        (job / "csv" / "version_0" / "metrics.csv").write_text("\n".join(lines) + "\n")
    return job


def _ranking_extra(seed: int) -> dict[str, Any]:
    return {"systems": {"student": {"exact_match": 0.2 + 0.1 * seed, "degenerate": 0.01 * seed}},
            "diagnostics": {"pseudo_label_noise": {"student_wins": 0.1 * (seed + 1), "ties": 0.05,
                                                   "teacher_quality": 0.8, "student_quality": 0.7, "n_pairs": 100}}}


def _ranking_csv(seed: int) -> list[dict]:
    return [{"step": 0, "train/hinge_active": 0.9 - 0.1 * seed}, {"step": 10, "train/hinge_active": 0.5},
            {"step": 10, "val/rank_acc": 0.6 + 0.1 * seed, "val/loss": 1.0}]


@pytest.fixture()
def multirun(tmp_path) -> Path:
    root = tmp_path / "multirun"
    n = 0
    for seed in (0, 1, 2):
        for loss in ("sft", "seqkd", "ranking", "margin"):
            if loss == "seqkd" and seed == 2:
                continue
            failed = loss == "margin" and seed == 2
            shift = SHIFT[loss] + (0.01 * seed if loss == "ranking" else 0.0)
            write_job(root, str(n), loss, seed, None if failed else shift,
                      extra=_ranking_extra(seed) if loss == "ranking" else None,
                      csv_rows=_ranking_csv(seed) if loss == "ranking" else None)
            n += 1
        if seed < 2:
            write_job(root, str(n), "sft", seed, SHIFT["oracle"], oracle=True)
            n += 1
    (root / "multirun.yaml").write_text("hydra: {}\n")
    return root


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


def test_main_table_values_oracle_rows_and_failed_jobs(multirun):
    md = build_report(multirun, n_boot=N_BOOT).read_text()
    t = tables(md)["anonymization · llama · split=test · decoding=greedy"]
    assert t["method"] == ["method", "quality", "exact_match", "leak_rate", "degenerate", "Δ vs initial [95% CI]",
                           "spearman", "seeds"]
    assert list(t)[1:] == ["initial student", "teacher", "sft", "sft (oracle)", "seqkd", "ranking", "margin"]
    # initial student: per seed 0.65 + 0.01 s; ranking: 0.69 + 0.02 s; its exact match 0.2 + 0.1 s
    assert t["initial student"][1:3] == ["0.660 ± 0.010", "0.100 ± 0.000"]
    assert t["initial student"][5] == "0 (reference)"
    assert t["ranking"][1:5] == ["0.710 ± 0.020", "0.300 ± 0.100", "0.050 ± 0.000", "0.010 ± 0.010"]
    assert t["ranking"][6:] == ["0.200 ± 0.100", "3"] and t["initial student"][6] == "0.400 ± 0.000"
    assert t["sft (oracle)"][1] == "0.755 ± 0.007" and t["sft"][1] == "0.680 ± 0.010"
    assert t["margin"][-1] == "2 (+1 failed)" and t["seqkd"][-1] == "2"
    # ranking vs initial: per-example diffs 0.05,0.03,0.04,0.04 (+0.01 s), pooled mean 0.05
    diffs = [SHIFT["ranking"] + 0.01 * s for s in (0, 1, 2)]
    ci = paired_bootstrap(diffs, n_boot=N_BOOT, seed=0)
    assert t["ranking"][5] == f"{ci['mean']:+.3f} [{ci['low']:+.3f}, {ci['high']:+.3f}]*"
    assert ci["mean"] == pytest.approx(0.05)
    jobs = tables(md)["Jobs"]
    assert jobs["12"][1:] == ["anonymization", "llama", "margin", "–", "2", "test", "greedy", "no",
                              "failed: no metrics.json"]
    assert jobs["4"][8] == "yes" and len(jobs) == 1 + 13  # header + every job, the failed one included
    assert "job 12 (margin, seed 2) failed" in md


def test_plad_vs_baselines_are_paired_within_seed_and_pooled(multirun):
    build_report(multirun, n_boot=N_BOOT)
    (group,) = json.loads((multirun / "report.json").read_text())["groups"]
    comps = {(c["a"], c["b"]): c for c in group["comparisons"]}
    assert set(comps) == {(a, b) for a in ("ranking", "margin")
                          for b in ("initial student", "sft", "sft (oracle)", "seqkd")}
    c = comps[("ranking", "sft")]
    expected = paired_bootstrap([SHIFT["ranking"] + 0.01 * s - SHIFT["sft"] for s in (0, 1, 2)], n_boot=N_BOOT, seed=0)
    assert c["mean"] == pytest.approx(0.03) and c["seeds"] == [0, 1, 2]
    assert (c["low"], c["high"], c["n"]) == pytest.approx((expected["low"], expected["high"], 12))
    seqkd = comps[("ranking", "seqkd")]
    assert seqkd["seeds"] == [0, 1] and seqkd["notes"] == ["seed 2: no seqkd job"] and seqkd["n"] == 8
    oracle = next(r for r in group["rows"] if r["label"] == "sft (oracle)")
    assert oracle["oracle"] and oracle["seeds"] == [0, 1] and oracle["stats"]["quality"]["n"] == 2
    assert seqkd["mean"] == pytest.approx(np.mean([0.04 - 0.01 + 0.01 * s for s in (0, 1)]))
    margin = comps[("margin", "initial student")]  # the failed seed is named, not silently absent
    assert margin["seeds"] == [0, 1] and margin["mean"] == pytest.approx(0.03) and margin["excludes_zero"]
    assert margin["notes"] == ["seed 2: margin job failed"] == comps[("margin", "sft")]["notes"]
    md = (multirun / "report.md").read_text()
    row = tables(md)["PLaD vs baselines (paired bootstrap)"]["ranking#sft"]
    assert row[2:5] == ["+0.030", f"[{expected['low']:+.3f}, {expected['high']:+.3f}]", "yes"]


def test_diagnostics_noise_and_charts(multirun):
    md = build_report(multirun, n_boot=N_BOOT).read_text()
    noise = tables(md)["Pseudo-label noise of the distillation pairs"]
    assert noise["ranking"][1:] == ["0.200 ± 0.100", "0.050 ± 0.000", "0.800 ± 0.000", "0.700 ± 0.000", "100 ± 0"]
    from plad.report_rows import build_groups, curves
    (group,) = build_groups(discover_jobs(multirun))
    c = curves(group, ("train/hinge_active", "val/rank_acc", "val/missing"))
    assert set(c) == {"train/hinge_active", "val/rank_acc"} and set(c["val/rank_acc"]) == {"ranking"}
    steps, mean, n = c["train/hinge_active"]["ranking"]
    assert steps.tolist() == [0, 10] and mean.tolist() == pytest.approx([0.8, 0.5]) and n.tolist() == [3, 3]
    assert c["val/rank_acc"]["ranking"][1].tolist() == pytest.approx([0.7])
    for kind in ("delta", "calibration", "diagnostics"):
        name = f"report_anonymization_llama_test_greedy_{kind}.png"
        assert f"]({name})" in md
        img = matplotlib.image.imread(multirun / name)
        assert img.ndim == 3 and img.shape[1] > 200


def test_disagreeing_initial_student_within_a_seed_is_warned(tmp_path):
    root = tmp_path / "m"
    write_job(root, "0", "sft", 0, SHIFT["sft"])
    write_job(root, "1", "ranking", 0, SHIFT["ranking"], init_offset=0.01)
    write_job(root, "2", "ranking", 1, SHIFT["ranking"])
    md = build_report(root, n_boot=N_BOOT).read_text()
    assert "initial student, seed 0: quality ranges 0.6500–0.6600 over jobs 0, 1" in md
    assert "seed 1:" not in md.split("**Warnings**")[1].split("##")[0]


def test_decoding_modes_and_validation_tuning_tables(tmp_path):
    root = tmp_path / "m"
    n = 0
    for lr, shift in (("1e-4", 0.01), ("3e-4", 0.04), ("1e-3", 0.02)):
        for loss in ("sft", "ranking"):
            write_job(root, str(n), loss, 0, SHIFT[loss] + (shift if loss == "ranking" else 0), split="validation",
                      overrides=[f"distill.lr={lr}", "experiment=tune"])
            n += 1
    write_job(root, str(n), "ranking", 0, SHIFT["ranking"], decoding="rerank",
              overrides=["distill.lr=3e-4", "experiment=tune"])
    md = build_report(root, n_boot=N_BOOT).read_text()
    t = tables(md)
    val = t["anonymization · llama · split=validation · decoding=greedy — TUNING (validation split)"]
    variants = [f"{loss} · distill.lr={lr}" for loss in ("sft", "ranking") for lr in ("1e-4", "3e-4", "1e-3")]
    assert list(val)[1:] == ["initial student", "teacher", *variants]
    assert "**Validation split: for choosing hyper-parameters only; these are not test results.**" in md
    assert "- ranking · distill.lr=3e-4: 0.730" in md and "- sft · distill.lr=1e-4: 0.670" in md
    assert "anonymization · llama · split=test · decoding=rerank" in t
    validation_part = md.split("— TUNING")[1].split("## Jobs")[0]
    assert "PLaD vs baselines" not in validation_part  # pairwise tests only on the test split
    assert md.split("decoding=rerank")[1].split("\n## ")[0].count("| ranking | initial student |") == 1


def test_loss_name_precedence_and_nested_metrics(tmp_path):
    root = tmp_path / "m"
    write_job(root, "0", "margin", 0, SHIFT["sft"], loss_cfg={"_target_": "x.RankingLoss", "name": "ranking"})
    write_job(root, "1", "", 0, SHIFT["sft"], loss_cfg={"_target_": "x.MarginLoss", "name": "margin"},
              metrics_subdir="eval")
    write_job(root, "2", "", 0, SHIFT["sft"], loss_cfg={"_target_": "x.DPOLoss"})
    write_job(root, "3", "", 0, SHIFT["sft"], loss_cfg={"_target_": "x.SimPOLoss"}, choice="simpo")
    jobs = {j.name: j for j in discover_jobs(root)}
    assert {k: j.loss for k, j in jobs.items()} == {"0": "margin", "1 (eval)": "margin", "2": "DPOLoss", "3": "simpo"}
    assert all(j.status == "ok" for j in jobs.values())


def test_script_wrapper_defaults_to_multirun_dir_and_bad_input(multirun, tmp_path):
    script = Path(__file__).resolve().parents[1] / "scripts" / "report.py"
    res = subprocess.run([sys.executable, str(script), str(multirun), "--n-boot", "50"], capture_output=True, text=True,
                         timeout=HANG_S)
    assert res.returncode == 0, res.stderr
    assert Path(res.stdout.strip()) == multirun / "report.md" and (multirun / "report.md").is_file()
    main([str(multirun), "--n-boot", "50", "--out", str(tmp_path / "again")])
    assert (tmp_path / "again" / "report.md").read_text() == (multirun / "report.md").read_text()
    with pytest.raises(ValueError, match="multirun dir"):
        build_report(tmp_path / "empty_missing")
    (tmp_path / "empty").mkdir()
    with pytest.raises(ValueError, match="multirun dir"):
        build_report(tmp_path / "empty")
    with pytest.raises(ValueError, match="n_boot"):
        build_report(multirun, n_boot=0)


def test_main_chart_draws_differences_to_the_initial_student(multirun, monkeypatch):
    """The chart gets each method's Δ with its CI (teacher named in the title, not drawn: its gap
    would flatten the methods' differences) and the calibration chart the initial student as reference."""
    from plad.evaluation import plots

    calls = {}
    real = plots.interval_chart

    def record(items: dict, path: Path, *args: Any, **kwargs: Any) -> Path:
        calls[Path(path).stem.rsplit("_", 1)[-1]] = (items, args, kwargs)
        return real(items, path, *args, **kwargs)

    monkeypatch.setattr(plots, "interval_chart", record)
    build_report(multirun, n_boot=N_BOOT)
    items, (ylabel, title), _ = calls["delta"]
    assert list(items) == ["sft", "sft (oracle)", "seqkd", "ranking", "margin"] and "teacher: +0.200" in title
    ci = paired_bootstrap([SHIFT["ranking"] + 0.01 * s for s in (0, 1, 2)], n_boot=N_BOOT, seed=0)
    assert items["ranking"] == pytest.approx((0.05, ci["low"], ci["high"]))
    cal_items, _, kwargs = calls["calibration"]
    assert kwargs == {"zero_line": False, "reference": pytest.approx(0.4)}
    assert cal_items["ranking"] == pytest.approx((0.2, 0.1, 0.3))


def test_leak_rate_per_pii_type_is_a_table_of_every_row(tmp_path):
    """Anonymization's leak_rate/<TYPE> values: one column per type, mean ± std over seeds; a type a
    row never measured shows as –; tasks without per-type values get no such table."""
    root = tmp_path / "multirun"
    for n, (loss, seed) in enumerate([("ranking", 0), ("ranking", 1), ("seqkd", 0)]):
        per_type = {"student": {"leak_rate/NAME": 0.1 + 0.1 * seed, "leak_rate/EMAIL": 0.0},
                    "teacher": {"leak_rate/NAME": 0.05}}
        write_job(root, str(n), loss, seed, SHIFT["ranking"], extra={"systems": per_type})
    t = tables(build_report(root, n_boot=N_BOOT).read_text())["Leak rate per PII type"]
    assert t["method"] == ["method", "EMAIL", "NAME"]
    assert t["ranking"][1:] == ["0.00 ± 0.00", "0.15 ± 0.07"] and t["seqkd"][1:] == ["0.00", "0.10"]
    assert t["teacher"][1:] == ["–", "0.05 ± 0.00"] and t["initial student"][1:] == ["–", "–"]
    plain = tmp_path / "plain"
    write_job(plain, "0", "ranking", 0, SHIFT["ranking"])
    assert "Leak rate per PII type" not in build_report(plain, n_boot=N_BOOT).read_text()
