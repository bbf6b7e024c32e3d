"""Multirun report on fixture job folders (metrics.json, samples.jsonl, .hydra, CSV logs); no training.

Fixture: anonymization x llama, 4 test texts per seed. Per example, the initial student scores
0.5..0.8 + 0.01 * seed, the teacher +0.2, sft +[0.02, 0, 0.04, 0.02], seqkd +0.01 (seeds 0, 1
only), ranking +[0.05, 0.03, 0.04, 0.04] + 0.01 * seed, margin +0.03 (seed 2 unfinished: no
metrics.json, no run_summary.json), and an oracle sft run (+0.1, seeds 0, 1).
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
from helpers import HANG_S
from helpers.report_jobs import N_BOOT, SHIFT, _ranking_csv, _ranking_extra, tables, write_job

from plad.report import build_report, main
from plad.report.jobs import discover_jobs
from plad.report.stats import paired_bootstrap


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
            write_job(
                root,
                str(n),
                loss,
                seed,
                None if failed else shift,
                extra=_ranking_extra(seed) if loss == "ranking" else None,
                csv_rows=_ranking_csv(seed) if loss == "ranking" else None,
            )
            n += 1
        if seed < 2:
            write_job(root, str(n), "sft", seed, SHIFT["oracle"], oracle=True)
            n += 1
    (root / "multirun.yaml").write_text("hydra: {}\n")
    return root


def test_main_table_values_oracle_rows_and_failed_jobs(multirun):
    md = build_report(multirun, n_boot=N_BOOT).read_text()
    t = tables(md)["anonymization · llama · split=test · decoding=greedy"]
    assert t["method"] == [
        "method",
        "quality",
        "exact_match",
        "leak_rate",
        "degenerate",
        "Δ vs initial [95% CI]",
        "spearman",
        "seeds",
    ]
    assert list(t)[1:] == ["initial student", "teacher", "sft", "sft (oracle)", "seqkd", "ranking", "margin"]
    # initial student: per seed 0.65 + 0.01 s; ranking: 0.69 + 0.02 s; its exact match 0.2 + 0.1 s
    assert t["initial student"][1:3] == ["0.660 ± 0.010", "0.100 ± 0.000"]
    assert t["initial student"][5] == "0 (reference)"
    assert t["ranking"][1:5] == ["0.710 ± 0.020", "0.300 ± 0.100", "0.050 ± 0.000", "0.010 ± 0.010"]
    assert t["ranking"][6:] == ["0.200 ± 0.100", "3"] and t["initial student"][6] == "0.400 ± 0.000"
    assert t["sft (oracle)"][1] == "0.755 ± 0.007" and t["sft"][1] == "0.680 ± 0.010"
    assert t["margin"][-1] == "2 (+1 unfinished)" and t["seqkd"][-1] == "2"
    # ranking vs initial: per-example diffs 0.05,0.03,0.04,0.04 (+0.01 s), pooled mean 0.05
    diffs = [SHIFT["ranking"] + 0.01 * s for s in (0, 1, 2)]
    ci = paired_bootstrap(diffs, n_boot=N_BOOT, seed=0)
    assert t["ranking"][5] == f"{ci['mean']:+.3f} [{ci['low']:+.3f}, {ci['high']:+.3f}]*"
    assert ci["mean"] == pytest.approx(0.05)
    jobs = tables(md)["Jobs"]
    assert jobs["12"][1:] == [
        "anonymization",
        "llama",
        "margin",
        "–",
        "2",
        "test",
        "greedy",
        "no",
        "unfinished: no metrics.json yet (running, or stopped mid-run)",
    ]
    assert jobs["4"][8] == "yes" and len(jobs) == 1 + 13  # header + every job, the unfinished one included
    assert "job 12 (margin, seed 2) unfinished" in md


def test_plad_vs_baselines_are_paired_within_seed_and_pooled(multirun):
    build_report(multirun, n_boot=N_BOOT)
    (group,) = json.loads((multirun / "report.json").read_text())["groups"]
    comps = {(c["a"], c["b"]): c for c in group["comparisons"]}
    assert set(comps) == {
        (a, b) for a in ("ranking", "margin") for b in ("initial student", "sft", "sft (oracle)", "seqkd")
    }
    c = comps[("ranking", "sft")]
    expected = paired_bootstrap([SHIFT["ranking"] + 0.01 * s - SHIFT["sft"] for s in (0, 1, 2)], n_boot=N_BOOT, seed=0)
    assert c["mean"] == pytest.approx(0.03) and c["seeds"] == [0, 1, 2]
    assert (c["low"], c["high"], c["n"]) == pytest.approx((expected["low"], expected["high"], 12))
    seqkd = comps[("ranking", "seqkd")]
    assert seqkd["seeds"] == [0, 1] and seqkd["notes"] == ["seed 2: no seqkd job"] and seqkd["n"] == 8
    oracle = next(r for r in group["rows"] if r["label"] == "sft (oracle)")
    assert oracle["oracle"] and oracle["seeds"] == [0, 1] and oracle["stats"]["quality"]["n"] == 2
    assert seqkd["mean"] == pytest.approx(np.mean([0.04 - 0.01 + 0.01 * s for s in (0, 1)]))
    margin = comps[("margin", "initial student")]  # the unfinished seed is named, not silently absent
    assert margin["seeds"] == [0, 1] and margin["mean"] == pytest.approx(0.03) and margin["excludes_zero"]
    assert margin["notes"] == ["seed 2: margin job unfinished"] == comps[("margin", "sft")]["notes"]
    md = (multirun / "report.md").read_text()
    row = tables(md)["PLaD vs baselines (paired bootstrap)"]["ranking#sft"]
    assert row[2:5] == ["+0.030", f"[{expected['low']:+.3f}, {expected['high']:+.3f}]", "yes"]


def test_diagnostics_noise_and_charts(multirun):
    md = build_report(multirun, n_boot=N_BOOT).read_text()
    noise = tables(md)["Pseudo-label noise of the distillation pairs"]
    assert noise["ranking"][1:] == ["0.200 ± 0.100", "0.050 ± 0.000", "0.800 ± 0.000", "0.700 ± 0.000", "100 ± 0"]
    from plad.report.rows import build_groups, curves

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
            write_job(
                root,
                str(n),
                loss,
                0,
                SHIFT[loss] + (shift if loss == "ranking" else 0),
                split="validation",
                overrides=[f"distill.lr={lr}", "experiment=tune"],
            )
            n += 1
    write_job(
        root,
        str(n),
        "ranking",
        0,
        SHIFT["ranking"],
        decoding="rerank",
        overrides=["distill.lr=3e-4", "experiment=tune"],
    )
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


def test_resumed_and_relocated_jobs_share_a_row_and_real_overrides_do_not(tmp_path):
    """A job resumed from a checkpoint (ckpt_path) or written elsewhere (paths.*) computes what its
    run computes: the same row, pooled over seeds. A differing distill.lr is a row of its own."""
    root = tmp_path / "m"
    write_job(root, "0", "ranking", 0, SHIFT["ranking"], overrides=["ckpt_path=/x/last.ckpt", "paths.log_dir=/a"])
    write_job(root, "1", "ranking", 1, SHIFT["ranking"], overrides=["paths.log_dir=/b"])
    write_job(root, "2", "sft", 0, SHIFT["sft"], overrides=["distill.lr=1e-5"])
    write_job(root, "3", "sft", 1, SHIFT["sft"], overrides=["distill.lr=3e-6"])
    jobs = {j.name: j for j in discover_jobs(root)}
    assert [jobs[n].variant for n in "0123"] == ["", "", "distill.lr=1e-5", "distill.lr=3e-6"]
    t = tables(build_report(root, n_boot=N_BOOT).read_text())["anonymization · llama · split=test · decoding=greedy"]
    assert t["ranking"][-1] == "2"  # both seeds in one row


def test_an_override_at_the_value_a_preset_sets_is_not_a_variant(tmp_path):
    """`distill.lr=3e-6` on one command line and a preset resolving distill.lr to 3e-6 on another ran
    the same configuration: one row. A job whose resolved lr differs is its own row, named by it."""
    root = tmp_path / "m"
    preset = {"distill": {"lr": "${loss.lr}"}, "task": {"lrs": {"ranking": 3.0e-6}}}
    loss = {"_target_": "plad.losses.ranking.RankingLoss", "lr": "${oc.select:task.lrs.ranking,1.0e-3}"}
    write_job(root, "0", "ranking", 0, SHIFT["ranking"], overrides=["distill.lr=3e-6"], config=preset, loss_cfg=loss)
    write_job(root, "1", "ranking", 1, SHIFT["ranking"], config=preset, loss_cfg=loss)
    write_job(root, "2", "ranking", 2, SHIFT["ranking"], config={"distill": {"lr": 1e-5}}, loss_cfg=loss)
    jobs = {j.name: j for j in discover_jobs(root)}
    assert jobs["0"].variant == jobs["1"].variant == "distill.lr=3e-6"
    assert jobs["2"].variant == "distill.lr=1e-05"


def test_one_value_written_two_ways_is_one_row(tmp_path):
    """`loss.lr=3.0e-5` and `loss.lr=3e-5` on two command lines ran the same float: one row, named as
    the first job wrote it; rows compare resolved values, not override text."""
    root = tmp_path / "m"
    for seed, text in enumerate(("3.0e-5", "3e-5", "1e-5")):
        write_job(
            root,
            str(seed),
            "ranking",
            seed,
            SHIFT["ranking"],
            overrides=[f"loss.lr={text}"],
            loss_cfg={"_target_": "plad.losses.ranking.RankingLoss", "lr": float(text)},
        )
    jobs = {j.name: j for j in discover_jobs(root)}
    assert jobs["0"].variant == jobs["1"].variant == "loss.lr=3.0e-5"
    assert jobs["2"].variant == "loss.lr=1e-5"


def test_loss_name_precedence_and_nested_metrics(tmp_path):
    root = tmp_path / "m"
    write_job(root, "0", "margin", 0, SHIFT["sft"], loss_cfg={"_target_": "x.RankingLoss", "name": "ranking"})
    write_job(
        root, "1", "", 0, SHIFT["sft"], loss_cfg={"_target_": "x.MarginLoss", "name": "margin"}, metrics_subdir="eval"
    )
    write_job(root, "2", "", 0, SHIFT["sft"], loss_cfg={"_target_": "x.DPOLoss"})
    write_job(root, "3", "", 0, SHIFT["sft"], loss_cfg={"_target_": "x.SimPOLoss"}, choice="simpo")
    jobs = {j.name: j for j in discover_jobs(root)}
    assert {k: j.loss for k, j in jobs.items()} == {"0": "margin", "1 (eval)": "margin", "2": "DPOLoss", "3": "simpo"}
    assert all(j.status == "ok" for j in jobs.values())


def test_script_wrapper_defaults_to_multirun_dir_and_bad_input(multirun, tmp_path):
    script = Path(__file__).resolve().parents[1] / "scripts" / "report.py"
    res = subprocess.run(
        [sys.executable, str(script), str(multirun), "--n-boot", "50"], capture_output=True, text=True, timeout=HANG_S
    )
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
        per_type = {
            "student": {"leak_rate/NAME": 0.1 + 0.1 * seed, "leak_rate/EMAIL": 0.0},
            "teacher": {"leak_rate/NAME": 0.05},
        }
        write_job(root, str(n), loss, seed, SHIFT["ranking"], extra={"systems": per_type})
    t = tables(build_report(root, n_boot=N_BOOT).read_text())["Leak rate per PII type"]
    assert t["method"] == ["method", "EMAIL", "NAME"]
    assert t["ranking"][1:] == ["0.00 ± 0.00", "0.15 ± 0.07"] and t["seqkd"][1:] == ["0.00", "0.10"]
    assert t["teacher"][1:] == ["–", "0.05 ± 0.00"] and t["initial student"][1:] == ["–", "–"]
    plain = tmp_path / "plain"
    write_job(plain, "0", "ranking", 0, SHIFT["ranking"])
    assert "Leak rate per PII type" not in build_report(plain, n_boot=N_BOOT).read_text()


TOY_LOSSES = """
from plad.losses.base import CalibrationLoss


class ToyLoss(CalibrationLoss):
    kind = "plad"
    order = 45  # between ranking (40) and margin (50)

    def compute(self, s):
        return -s.score().mean(), {}


class ToyBaseline(CalibrationLoss):
    order = 5  # kind: the default, a baseline; listed before sft (10)

    def compute(self, s):
        return -s.score().mean(), {}
"""


def test_a_new_loss_needs_no_report_change(tmp_path, monkeypatch):
    """Adding a loss = one module + one YAML: the report reads its kind and order from the class
    the job's saved ``loss._target_`` names. A class that no longer imports gets the defaults (a
    baseline, listed last) and the report still works."""
    (tmp_path / "toy_losses.py").write_text(TOY_LOSSES)
    monkeypatch.syspath_prepend(str(tmp_path))
    root = tmp_path / "m"
    jobs = [
        ("sft", None),
        ("ranking", None),
        ("margin", None),
        ("toy", "toy_losses.ToyLoss"),
        ("toy_base", "toy_losses.ToyBaseline"),
        ("old", "plad.losses.gone.OldLoss"),
    ]
    for n, (loss, target) in enumerate((loss, target) for seed in (0, 1) for loss, target in jobs):
        shift = SHIFT.get(loss, np.full(4, 0.02))
        write_job(root, str(n), loss, n // len(jobs), shift, loss_cfg={"_target_": target} if target else None)
    md = build_report(root, n_boot=N_BOOT).read_text()
    t = tables(md)["anonymization · llama · split=test · decoding=greedy"]
    assert list(t)[1:] == ["initial student", "teacher", "toy_base", "sft", "ranking", "toy", "margin", "old"]
    (group,) = json.loads((root / "report.json").read_text())["groups"]
    pairs = {(c["a"], c["b"]) for c in group["comparisons"]}
    assert pairs == {
        (a, b) for a in ("ranking", "toy", "margin") for b in ("initial student", "toy_base", "sft", "old")
    }
    assert "| toy | sft |" in md


def test_unfinished_job_is_not_called_failed(tmp_path):
    """No metrics.json and no run_summary.json (written last by the pipeline): still running, or
    stopped mid-run, which look the same on disk; a job that finished without metrics failed."""
    root = tmp_path / "m"
    write_job(root, "0", "ranking", 0, SHIFT["ranking"], finished=True)
    write_job(root, "1", "ranking", 1, None)
    write_job(root, "2", "sft", 0, None, finished=True)
    md = build_report(root, n_boot=N_BOOT).read_text()
    assert "3 jobs: 1 complete, 1 failed, 1 unfinished (running, or stopped mid-run), 0 incomplete" in md
    assert "job 1 (ranking, seed 1) unfinished" in md and "job 2 (sft, seed 0) failed" in md
    jobs = tables(md)["Jobs"]
    assert jobs["1"][-1] == "unfinished: no metrics.json yet (running, or stopped mid-run)"
    assert jobs["2"][-1] == "failed: no metrics.json" and jobs["0"][-1] == "ok"
    t = tables(md)["anonymization · llama · split=test · decoding=greedy"]
    assert t["ranking"][-1] == "1 (+1 unfinished)" and t["sft"][-1] == "0 (+1 failed)"
    rows = {r["label"]: r for r in json.loads((root / "report.json").read_text())["groups"][0]["rows"]}
    assert (rows["ranking"]["unfinished"], rows["ranking"]["failed"]) == (["1"], [])
    assert (rows["sft"]["unfinished"], rows["sft"]["failed"]) == ([], ["2"])
