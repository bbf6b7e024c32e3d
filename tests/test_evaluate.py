"""evaluate() end to end with tiny random models and a tiny task; log_results to offline loggers."""

from __future__ import annotations

import json

import matplotlib.image
import numpy as np
import pytest
import torch
from datasets import Dataset, DatasetDict
from transformers import AutoModelForCausalLM, LlamaConfig

from plad.backends.hf import HFBackend
from plad.evaluation.decoding import rerank
from plad.evaluation.degenerate import degenerate_share
from plad.evaluation.evaluate import evaluate, read_outputs
from plad.evaluation.judges import MetricJudge
from plad.evaluation.log_results import flatten, log_results
from plad.models.ref import ModelRef
from plad.models.tokenizer import train_tokenizer
from plad.tasks.base import Task

ROWS = [
    ("name: Ann Lee", "Ann"),
    ("city: Paris", "Paris"),
    ("name: Bob Stone", "Bob"),
    ("city: Rome", "Rome"),
    ("name: Eve Moss", "Eve"),
]


class CharTask(Task):
    """Quality = Jaccard overlap of character sets, so random outputs still get varied scores."""

    name = "chars"
    main_metric = "jaccard"

    def load(self, cache_root=None, validate=None) -> DatasetDict:
        ds = Dataset.from_dict({"prompt": [p for p, _ in ROWS], "reference": [r for _, r in ROWS]})
        return DatasetDict(train=ds, unlabeled=ds, validation=ds, test=ds)

    def quality(self, prediction: str, example: dict) -> float:
        a, b = set(prediction), set(example["reference"])
        return len(a & b) / len(a | b) if a | b else 1.0

    def metrics(self, predictions, examples) -> dict[str, float]:
        q = [self.quality(p, e) for p, e in zip(predictions, examples)]
        return {
            "jaccard": float(np.mean(q)),
            "exact": float(np.mean([p == e["reference"] for p, e in zip(predictions, examples)])),
        }

    def fingerprint(self) -> str:
        return "chars-v1"


CFG = {
    "max_examples": 4,
    "batch_size": 2,
    "progress": False,
    "generation": {"max_new_tokens": 6, "do_sample": False, "seed": 0, "max_prompt_tokens": 32},
    "calibration": {
        "enabled": True,
        "n_prompts": 3,
        "k": 4,
        "temperature": 1.5,
        "systems": ["student_init", "student", "teacher"],
    },
    "bootstrap": {"n": 200, "seed": 0},
}


def _model(tok, seed: int):
    torch.manual_seed(seed)
    return AutoModelForCausalLM.from_config(
        LlamaConfig(
            vocab_size=len(tok),
            hidden_size=16,
            intermediate_size=32,
            num_hidden_layers=1,
            num_attention_heads=2,
            num_key_value_heads=2,
            max_position_embeddings=128,
            pad_token_id=tok.pad_token_id,
            bos_token_id=tok.bos_token_id,
            eos_token_id=tok.eos_token_id,
        )
    )


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    task = CharTask()
    test = task.load()["test"]
    tok = train_tokenizer([p + " " + r for p, r in ROWS], vocab_size=270)
    student = _model(tok, 2)
    systems = {
        "teacher": ModelRef.in_memory(_model(tok, 0), tok),
        "student_init": ModelRef.in_memory(_model(tok, 1), tok),
        "student": ModelRef.in_memory(student, tok),
        "student_copy": ModelRef.in_memory(student, tok),
    }
    base = tmp_path_factory.mktemp("baseline_run")
    with open(base / "samples.jsonl", "w") as f:  # another run's outputs, saved in a different order
        for i, (p, _) in reversed(list(enumerate(ROWS))):
            f.write(json.dumps({"prompt": p, "main_system": "student", "outputs": {"student": f"base {i}"}}) + "\n")
    out = tmp_path_factory.mktemp("eval")
    metrics = evaluate(systems, task, test, CFG, MetricJudge(), out, baseline_outputs={"ce": base})
    return task, test, metrics, out


def test_metrics_json_matches_samples(run):
    task, test, metrics, out = run
    assert json.loads((out / "metrics.json").read_text()) == metrics
    names = {"teacher", "student_init", "student", "student_copy", "ce"}
    assert set(metrics["systems"]) == names and metrics["n_examples"] == 4
    assert metrics["main_metric"] == "jaccard" and metrics["main_system"] == "student"
    rows = [json.loads(line) for line in (out / "samples.jsonl").read_text().splitlines()]
    examples = [dict(test[i]) for i in range(4)]
    assert [r["prompt"] for r in rows] == [e["prompt"] for e in examples]
    assert [r["outputs"]["ce"] for r in rows] == [f"base {i}" for i in range(4)]
    for name in names:
        outs = [r["outputs"][name] for r in rows]
        expected = task.metrics(outs, examples)
        for k, v in expected.items():
            assert metrics["systems"][name][k] == pytest.approx(v)
        for r, o, e in zip(rows, outs, examples):
            assert r["quality"][name] == pytest.approx(task.quality(o, e))
    assert "gen_tokens" in metrics["systems"]["teacher"] and "gen_tokens" not in metrics["systems"]["ce"]
    for name in names:  # the task-independent degenerate share, for every system incl. saved baselines
        assert metrics["systems"][name]["degenerate"] == degenerate_share([r["outputs"][name] for r in rows])
    assert metrics["decoding"] == "greedy" and "rerank" not in metrics


def test_rerank_decoding_outputs_and_record(run, tmp_path):
    task, test, _, _ = run
    tok = train_tokenizer([p + " " + r for p, r in ROWS], vocab_size=270)
    systems = {"student": ModelRef.in_memory(_model(tok, 2), tok)}
    cfg = {
        **CFG,
        "decoding": "rerank",
        "rerank": {"n": 3, "temperature": 1.0, "top_p": 1.0},
        "calibration": {"enabled": False},
    }
    metrics = evaluate(systems, task, test, cfg, None, tmp_path, extra={"oracle": False, "diagnostics": {"x": 1}})
    expected = rerank(
        HFBackend(),
        systems["student"],
        [p for p, _ in ROWS[:4]],
        n=3,
        seed=0,
        max_new_tokens=6,
        max_prompt_tokens=32,
        batch_size=2,
        progress=False,
    ).texts
    rows = [json.loads(line) for line in (tmp_path / "samples.jsonl").read_text().splitlines()]
    assert [r["outputs"]["student"] for r in rows] == expected
    assert metrics["decoding"] == "rerank" and metrics["rerank"] == cfg["rerank"]
    assert metrics["oracle"] is False and metrics["diagnostics"] == {"x": 1}


def test_win_rates_against_every_other_system(run):
    task, test, metrics, out = run
    rows = [json.loads(line) for line in (out / "samples.jsonl").read_text().splitlines()]
    wr = metrics["win_rate"]
    assert set(wr) == {f"student_vs_{n}" for n in ("teacher", "student_init", "student_copy", "ce")}
    # Greedy decoding of the same model gives the same outputs: every comparison is a tie.
    assert wr["student_vs_student_copy"] == {"rate": 0.5, "low": 0.5, "high": 0.5, "n": 4}
    for other in ("teacher", "student_init", "ce"):
        qa = [r["quality"]["student"] for r in rows]
        qb = [r["quality"][other] for r in rows]
        expected = [1.0 if a > b else 0.5 if a == b else 0.0 for a, b in zip(qa, qb)]
        assert [r["judge"][f"student_vs_{other}"] for r in rows] == expected
        w = wr[f"student_vs_{other}"]
        assert w["rate"] == pytest.approx(np.mean(expected)) and w["low"] <= w["rate"] <= w["high"]


def test_calibration_and_plots(run):
    _, _, metrics, out = run
    cal = metrics["calibration"]
    assert set(cal) == {"student_init", "student", "teacher"}
    for c in cal.values():  # values, not NaNs: every prompt's samples differ in quality and likelihood
        assert c["n_prompts"] == 3 and 1 <= c["n_used"] <= 3 and 1 <= c["n_pairs"] <= 3 * 6
        assert -1.0 <= c["spearman"] <= 1.0 and 0.0 <= c["rank_acc"] <= 1.0
        assert 0.0 <= c["mean_quality"] <= 1.0
    assert metrics["plots"] == ["metrics.png", "win_rate.png", "calibration.png"]
    for name in metrics["plots"]:
        img = matplotlib.image.imread(out / name)
        assert img.ndim == 3 and img.shape[0] > 100 and img.shape[1] > 100


def test_a_misspelled_calibration_system_is_an_error_not_a_silent_skip(run, tmp_path):
    task, test, _, _ = run
    cfg = {**CFG, "calibration": {**CFG["calibration"], "systems": ["student", "studnet"]}}
    with pytest.raises(
        ValueError,
        match=r"^eval.calibration.systems: expected names among "
        r"\['teacher', 'student_init', 'student'\], got \['studnet'\]$",
    ):
        evaluate({}, task, test, cfg, None, tmp_path)


def test_bad_inputs_name_the_field(run, tmp_path):
    task, test, _, out = run
    with pytest.raises(ValueError, match="baseline_outputs"):
        read_outputs(out / "samples.jsonl", ["a prompt never evaluated"])
    with pytest.raises(ValueError, match="main_system"):
        evaluate(
            {},
            task,
            test,
            {**CFG, "calibration": {"enabled": False}},
            MetricJudge(),
            tmp_path,
            main_system="student",
            baseline_outputs={"ce": out},
        )


def test_log_results_to_csv_and_tensorboard(run, tmp_path):
    from lightning.pytorch.loggers import CSVLogger, TensorBoardLogger
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    _, _, metrics, out = run
    csv, tb = CSVLogger(tmp_path, name="csv"), TensorBoardLogger(tmp_path, name="tb", default_hp_metric=False)
    flat = log_results([csv, tb], metrics, out)  # samples and plots read from the eval folder
    assert flat["eval/win_rate/student_vs_student_copy/rate"] == 0.5
    assert flat == flatten(metrics, "eval") and not any("plots" in k for k in flat)
    lines = open(f"{csv.log_dir}/metrics.csv").read().splitlines()
    row = dict(zip(lines[0].split(","), lines[1].split(",")))
    assert float(row["eval/systems/teacher/jaccard"]) == pytest.approx(metrics["systems"]["teacher"]["jaccard"])
    acc = EventAccumulator(tb.log_dir, size_guidance={"images": 0, "scalars": 0, "tensors": 0}).Reload()
    assert {"eval/metrics", "eval/win_rate", "eval/calibration"} <= set(acc.Tags()["images"])
    assert acc.Scalars("eval/systems/student/jaccard")[0].value == pytest.approx(
        metrics["systems"]["student"]["jaccard"]
    )


def test_log_results_to_offline_wandb(run, tmp_path, monkeypatch):
    import wandb
    from lightning.pytorch.loggers import WandbLogger

    monkeypatch.setenv("WANDB_MODE", "offline")
    monkeypatch.setenv("WANDB_SILENT", "true")
    _, _, metrics, out = run
    samples = [json.loads(line) for line in (out / "samples.jsonl").read_text().splitlines()]
    logger = WandbLogger(project="plad-test", save_dir=str(tmp_path), offline=True)
    try:
        log_results([logger], metrics, samples, [out / p for p in metrics["plots"]])
        run_dir = logger.experiment.dir
        assert (
            logger.experiment.summary["eval/win_rate/student_vs_teacher/rate"]
            == metrics["win_rate"]["student_vs_teacher"]["rate"]
        )
    finally:
        wandb.finish()
    pngs, tables = list((tmp_path / "wandb").rglob("*.png")), list((tmp_path / "wandb").rglob("*.table.json"))
    assert sorted(p.name.rsplit("_", 2)[0] for p in pngs) == ["calibration", "metrics", "win_rate"]
    table = json.loads(tables[0].read_text())
    assert len(table["data"]) == 4 and "output/ce" in table["columns"] and "quality/student" in table["columns"]
    assert run_dir.startswith(str(tmp_path))
