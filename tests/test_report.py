"""Multirun report on fabricated job folders: grouping, loss from overrides, mean ± std, charts."""
from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import matplotlib.image
import numpy as np
import pytest
import yaml

from plad.report import build_report, main

# (job, loss config, overrides, seed, student rougeL, win vs teacher, spearman before, after[, hydra choice])
RANKING = {"_target_": "plad.losses.ranking.RankingLoss", "name": "ranking"}
JOBS = [
    ("0", RANKING, ["loss=ranking", "seed=0"], 0, 0.2, 0.30, -0.1, 0.2),
    ("1", RANKING, ["loss=ranking", "seed=1"], 1, 0.4, 0.50, 0.1, 0.4),
    # Config says ranking, the command line says margin: the override is the truth.
    ("2", RANKING, ["loss=margin", "seed=0"], 0, 0.5, 0.60, -0.1, 0.5),
    # No loss override: the config's name (metrics.json may sit below the job folder).
    ("3/eval", {"_target_": "plad.losses.margin.MarginLoss", "name": "margin"}, ["seed=1"], 1, 0.6, 0.70, 0.1, 0.7),
    # No name and no override: the loss class name.
    ("4", {"_target_": "plad.losses.dpo.DPOLoss"}, [], 0, 0.1, 0.20, -0.1, 0.0),
    # No override, but Hydra recorded which loss option it picked (.hydra/hydra.yaml).
    ("5", {"_target_": "plad.losses.simpo.SimPOLoss"}, ["seed=0"], 0, 0.3, 0.40, -0.1, 0.1, "simpo"),
]


def _write_job(root: Path, job: str, loss: dict, overrides: list, seed: int, rouge: float, win: float,
               before: float, after: float, choice: str | None = None) -> None:
    job_dir = root / job.split("/")[0]
    (job_dir / ".hydra").mkdir(parents=True)
    if choice:
        choices = {"task": "summarization", "model": "llama", "loss": choice}
        (job_dir / ".hydra" / "hydra.yaml").write_text(yaml.safe_dump({"hydra": {"runtime": {"choices": choices}}}))
    cfg = {"seed": seed, "task": {"name": "summarize", "_target_": "plad.tasks.x.Summarize"},
           "model": {"family": "llama"}, "loss": loss}
    (job_dir / ".hydra" / "config.yaml").write_text(yaml.safe_dump(cfg))
    (job_dir / ".hydra" / "overrides.yaml").write_text(yaml.safe_dump(overrides))
    metrics = {"task": "summarize", "main_system": "student", "main_metric": "rougeL", "higher_is_better": True,
               "systems": {"student": {"rougeL": rouge}, "student_init": {"rougeL": 0.15}, "teacher": {"rougeL": 0.7}},
               "win_rate": {"student_vs_teacher": {"rate": win, "low": 0, "high": 1, "n": 10}},
               "calibration": {"student_init": {"spearman": before, "rank_acc": 0.5},
                               "student": {"spearman": after, "rank_acc": None}}}
    (root / job / "metrics.json").parent.mkdir(parents=True, exist_ok=True)
    (root / job / "metrics.json").write_text(json.dumps(metrics))


@pytest.fixture()
def multirun(tmp_path) -> Path:
    root = tmp_path / "multirun"
    for job in JOBS:
        _write_job(root, *job)
    (root / "multirun.yaml").write_text("hydra: {}\n")
    return root


def test_report_groups_losses_and_aggregates_seeds(multirun, tmp_path):
    out = tmp_path / "out"
    main([str(multirun), "--out", str(out)])
    groups = {g["loss"]: g for g in json.loads((out / "report.json").read_text())["groups"]}
    assert set(groups) == {"ranking", "margin", "DPOLoss", "simpo"}
    r, m = groups["ranking"]["stats"], groups["margin"]["stats"]
    assert groups["ranking"]["seeds"] == [0, 1] and groups["margin"]["seeds"] == [0, 1]
    assert r["rougeL/distilled"]["mean"] == pytest.approx(0.3)
    assert r["rougeL/distilled"]["std"] == pytest.approx(np.std([0.2, 0.4], ddof=1))
    assert m["rougeL/distilled"]["mean"] == pytest.approx(0.55)
    assert m["win/teacher"]["mean"] == pytest.approx(0.65)
    assert m["spearman/before"]["mean"] == pytest.approx(0.0)
    assert m["spearman/after"]["mean"] == pytest.approx(0.6)
    assert "rank_acc/after" not in m  # only nulls: no statistic
    assert groups["DPOLoss"]["stats"]["rougeL/distilled"] == {"mean": 0.1, "std": 0.0, "n": 1}

    md = (out / "report.md").read_text()
    assert "## summarize (main metric: rougeL)" in md
    for line in ("| llama | ranking | 0,1 | 0.300 ± 0.141", "| llama | margin | 0,1 | 0.550 ± 0.071",
                 "| llama | DPOLoss | 0 | 0.100 ± 0.000"):
        assert line in md
    for name in ("report_summarize_main.png", "report_summarize_calibration.png"):
        assert f"]({name})" in md
        img = matplotlib.image.imread(out / name)
        assert img.ndim == 3 and img.shape[1] > 200


def test_report_defaults_to_multirun_dir_and_script_wrapper(multirun):
    script = Path(__file__).resolve().parents[1] / "scripts" / "report.py"
    res = subprocess.run([sys.executable, str(script), str(multirun)], capture_output=True, text=True, timeout=60)
    assert res.returncode == 0, res.stderr
    assert Path(res.stdout.strip()) == multirun / "report.md" and (multirun / "report.md").is_file()
    assert build_report(multirun).read_text() == (multirun / "report.md").read_text()


def test_report_rejects_folder_without_jobs(tmp_path):
    with pytest.raises(ValueError, match="multirun dir"):
        build_report(tmp_path)
    with pytest.raises(ValueError, match="multirun dir"):
        build_report(tmp_path / "missing")
