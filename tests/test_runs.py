"""Whole jobs at debug=fast: every task x family and every loss runs (the multirun that reuses the
cached stages and the report over it: tests/test_report_wandb.py)."""

import csv
import json
import sys
import types
from pathlib import Path

import matplotlib.image as mpimg
import pytest

LOSSES = ["ranking", "margin", "listwise", "dpo", "ipo", "simpo", "sft", "seqkd", "kd"]


@pytest.fixture(scope="module")
def shared_logs(tmp_path_factory) -> Path:
    """One cache for the loss runs: SFT and pairs are built by the first job only."""
    return tmp_path_factory.mktemp("shared_logs")


def _assert_job_outputs(run_dir: Path, task_metric: str) -> dict:
    metrics = json.loads((run_dir / "metrics.json").read_text())
    models = set(metrics["systems"]) - set(metrics["peer_systems"])  # peers: anonymization's rule_based
    assert models == {"teacher", "student_init", "student"}
    for system in metrics["systems"].values():
        assert isinstance(system[task_metric], float)
    for w in metrics["win_rate"].values():
        assert w["low"] <= w["rate"] <= w["high"]
    assert set(metrics["calibration"]) == {"student_init", "student"}
    rows = [json.loads(line) for line in (run_dir / "samples.jsonl").read_text().splitlines()]
    assert len(rows) == metrics["n_examples"] > 0
    pngs = sorted(run_dir.glob("*.png"))
    assert pngs and all(mpimg.imread(p).ndim == 3 for p in pngs)
    return metrics


@pytest.mark.parametrize("task,metric", [("anonymization", "quality"), ("summarization", "rougeL")])
@pytest.mark.parametrize("model", ["llama", "t5", "gpt_neo"])
def test_every_task_and_family_runs_the_whole_loop(run_pipeline, task, metric, model):
    """Each run's numbers are checked against what they come from: the saved distilled student's own
    greedy outputs for the first test prompts are the outputs recorded in samples.jsonl, and each
    system's main metric is the mean of its recorded per-example quality."""
    from plad.backends.hf_sampling import generate
    from plad.models.build import load_saved

    results = run_pipeline(f"task={task}", f"model={model}", "debug=fast")
    metrics = _assert_job_outputs(results["run_dir"], metric)
    rows = [json.loads(line) for line in (results["run_dir"] / "samples.jsonl").read_text().splitlines()]
    student, tok = load_saved(results["systems"]["student"])
    from omegaconf import OmegaConf

    gen = OmegaConf.load(results["run_dir"] / "resolved.yaml").eval.generation  # written by run_pipeline
    out = generate(
        student,
        tok,
        [r["prompt"] for r in rows[:3]],
        do_sample=False,
        progress=False,
        max_new_tokens=gen["max_new_tokens"],
        max_prompt_tokens=gen["max_prompt_tokens"],
    )
    assert [t[0] for t in out.texts] == [r["outputs"]["student"] for r in rows[:3]]
    for system in ("teacher", "student_init", "student"):
        recorded = [r["quality"][system] for r in rows]
        assert metrics["systems"][system]["quality"] == pytest.approx(sum(recorded) / len(recorded), rel=1e-9)


@pytest.mark.parametrize("loss", LOSSES)
def test_every_loss_runs_on_the_shared_cache(run_pipeline, shared_logs, loss):
    results = run_pipeline(f"loss={loss}", "debug=fast", log_dir=shared_logs)
    metrics = _assert_job_outputs(results["run_dir"], "quality")
    # one pair set serves every loss (the oracle test's own pair set, if it ran first, is another)
    plain = [
        p
        for p in (shared_logs / "cache" / "pairs").iterdir()
        if (p / "stats.json").is_file() and not json.loads((p / "stats.json").read_text())["oracle"]
    ]
    assert len(plain) == 1
    assert metrics["oracle"] is False and metrics["decoding"] == "greedy"
    assert all(0.0 <= m["degenerate"] <= 1.0 for m in metrics["systems"].values())
    if loss == "ranking":  # the PLaD diagnostics reach the CSV logger every step and every validation
        with open(results["run_dir"] / "csv" / "version_0" / "metrics.csv") as f:
            rows = list(csv.DictReader(f))
        hinge = [int(r["step"]) for r in rows if r.get("train/hinge_active")]
        val_acc = [int(r["step"]) for r in rows if r.get("val/rank_acc")]
        assert hinge == [0, 1, 2, 3] and len(val_acc) == 2  # debug=fast: 4 steps, validation every 2


def test_oracle_run_is_marked_and_pair_diagnostics_reach_metrics(run_pipeline, shared_logs, monkeypatch):
    """sft_oracle trains on the unlabeled prompts' references (allowed with pairs.oracle_references=true):
    metrics.json says oracle: true. The pair stage's diagnostics land under metrics["diagnostics"]."""
    calls = []

    def pseudo_label_noise(pairwise, labeled, task):  # stands in for plad.pairs.diagnostics
        calls.append((len(pairwise), len(labeled)))
        return {"student_wins": 0.25, "n_pairs": len(pairwise)}

    fake = types.ModuleType("plad.pairs.diagnostics")
    fake.pseudo_label_noise = pseudo_label_noise
    monkeypatch.setitem(sys.modules, "plad.pairs.diagnostics", fake)
    results = run_pipeline("loss=sft_oracle", "++pairs.oracle_references=true", "debug=fast", log_dir=shared_logs)
    metrics = _assert_job_outputs(results["run_dir"], "quality")
    assert metrics["oracle"] is True
    n_pairs = results["pairs"]["stats"]["rows"]["pairwise"]
    assert calls == [(n_pairs, 32)]  # the pair table and the unlabeled split (debug=fast: 32 prompts)
    assert metrics["diagnostics"] == {"pseudo_label_noise": {"student_wins": 0.25, "n_pairs": n_pairs}}
