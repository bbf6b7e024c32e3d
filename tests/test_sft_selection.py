"""SFT picks its checkpoint on the validation split: the saved model is the argmin of the logged
validation curve (early stopping with patience), and the SFT stage's cache key follows the run seed."""

import csv
import json
import logging

import pytest
import torch
from datasets import Dataset
from helpers.pairs import tiny_llama, train_tokenizer
from omegaconf import OmegaConf, open_dict

from plad.data.sft_datamodule import SFTDataModule
from plad.models.build import load_saved, save_model
from plad.models.logprobs import sequence_logprobs
from plad.training.trainer import check_sft_selection, fit_sft

CFG = {
    "seed": 0,
    "task": {"max_prompt_tokens": 32, "max_new_tokens": 12},
    "sft_selection": {"val_check_interval": 3, "patience": 3, "monitor": "val_loss", "min_delta": 0.0},
    "trainer": {
        "_target_": "lightning.pytorch.Trainer",
        "accelerator": "cpu",
        "devices": 1,
        "enable_model_summary": False,
        "log_every_n_steps": 1,
    },
}
# Eight train rows of one phrasing, validation rows of another: the validation loss first falls
# (shared words, EOS), then rises as the model memorises the train rows.
TRAIN = Dataset.from_dict(
    {
        "prompt": [f"Anonymize: call Bob on {i}" for i in range(8)],
        "reference": [f"call [NAME] on the phone {i}" for i in range(8)],
    }
)
VALIDATION = Dataset.from_dict(
    {
        "prompt": [f"Anonymize: Alice lives in {i}" for i in range(6)],
        "reference": [f"[NAME] lives in the city {i}" for i in range(6)],
    }
)


def _val_nll(model, tok) -> float:
    """Token-averaged NLL of the validation references, computed apart from SFTModule's metric."""
    dm = SFTDataModule(VALIDATION, tok, False, 4, 32, 12, validation=VALIDATION)
    total, n = 0.0, 0
    with torch.no_grad():
        for batch in dm.val_dataloader():
            out = sequence_logprobs(model.eval(), batch["input_ids"], batch["attention_mask"], batch["labels"])
            total, n = total - out.sum_logp.sum().item(), n + out.n_tokens.sum().item()
    return total / n


def test_saved_model_is_the_best_validation_step(tmp_path):
    tok = train_tokenizer()
    model = tiny_llama(tok, seed=0)
    spec = OmegaConf.create({"batch_size": 4, "lr": 1e-2, "max_steps": 90, "warmup_steps": 0})
    model, stats = fit_sft(OmegaConf.create(CFG), model, tok, spec, TRAIN, VALIDATION, tmp_path, "student", seed=0)
    steps, values = zip(*stats["curve"])
    best = min(range(len(values)), key=values.__getitem__)

    # The logged curve (CSV under the run dir) is the one recorded, validated every 3 steps.
    with open(tmp_path / "sft_student" / "version_0" / "metrics.csv") as f:
        logged = [float(r["sft/val_loss"]) for r in csv.DictReader(f) if r["sft/val_loss"]]
    assert logged == pytest.approx(list(values), abs=1e-6)
    assert list(steps) == list(range(3, 3 * len(steps) + 1, 3))

    # Chosen = argmin of the curve; not the last check: training stopped `patience` checks later.
    assert stats["chosen_step"] == steps[best] and stats["best_value"] == pytest.approx(values[best])
    assert best < len(values) - 1 and stats["stopped_early"] and stats["steps"] < 90
    assert len(values) == best + 1 + 3

    # The saved weights are that step's: their validation loss is the logged best, not the last value.
    save_model(model, tok, tmp_path / "saved")
    saved, saved_tok = load_saved(tmp_path / "saved")
    assert _val_nll(saved, saved_tok) == pytest.approx(values[best], abs=1e-4)
    assert values[-1] - values[best] > 0.1


def _placeholder_share(outputs: list[str]) -> float:
    """A task-free quality: the share of outputs that contain a placeholder."""
    return sum("[NAME]" in o for o in outputs) / len(outputs)


def test_val_quality_keeps_the_step_whose_greedy_outputs_score_best(tmp_path):
    """sft.monitor=val_quality: the curve is the quality of greedy outputs on the validation prompts
    (higher is better), the saved weights are its argmax, whatever the validation NLL did."""
    from plad.backends.hf_sampling import generate

    tok = train_tokenizer()
    model = tiny_llama(tok, seed=0)
    spec = OmegaConf.create({"batch_size": 4, "lr": 1e-2, "max_steps": 45, "warmup_steps": 0, "monitor": "val_quality"})
    model, stats = fit_sft(
        OmegaConf.create(CFG),
        model,
        tok,
        spec,
        TRAIN,
        VALIDATION,
        tmp_path,
        "student",
        seed=0,
        quality=_placeholder_share,
    )
    steps, values = zip(*stats["curve"])
    best = max(range(len(values)), key=values.__getitem__)  # the first of equal maxima
    assert stats["selection"]["monitor"] == "val_quality" and stats["chosen_step"] == steps[best]
    assert len(set(values)) > 1  # the curve moved: the choice was not trivial
    with open(tmp_path / "sft_student" / "version_0" / "metrics.csv") as f:
        logged = [float(r["sft/val_quality"]) for r in csv.DictReader(f) if r.get("sft/val_quality")]
    assert logged == pytest.approx(list(values))
    out = generate(
        model, tok, list(VALIDATION["prompt"]), do_sample=False, max_new_tokens=12, max_prompt_tokens=32, progress=False
    )
    assert _placeholder_share([t[0] for t in out.texts]) == pytest.approx(values[best])
    with pytest.raises(ValueError, match=r"^sft.monitor: val_quality needs the task's quality of outputs"):
        fit_sft(OmegaConf.create(CFG), tiny_llama(tok, seed=0), tok, spec, TRAIN, VALIDATION, tmp_path, "x", seed=0)


@pytest.mark.parametrize(
    "key,value", [("val_check_interval", 0), ("patience", 0), ("monitor", "bleu"), ("min_delta", -1.0)]
)
def test_bad_selection_settings_name_the_field(key, value):
    sel = OmegaConf.create({**CFG["sft_selection"], key: value})
    with pytest.raises(ValueError, match=f"sft_selection.{key}: expected"):
        check_sft_selection(sel)


def test_student_sft_cache_follows_the_run_seed_teacher_the_data_seed(run_pipeline, tmp_path):
    """Another run seed rebuilds the student's SFT (new init and data order); the same seed reuses
    it; the teacher is a fixed model seeded by the data seed and shared by every run seed."""
    logs = tmp_path / "logs"
    fast = ["debug=fast", "stages=[sft]", "model.teacher.sft.max_steps=1", "model.student.sft.max_steps=2"]
    first = run_pipeline(*fast, "seed=0", log_dir=logs, name="a")
    again = run_pipeline(*fast, "seed=0", log_dir=logs, name="b")
    other = run_pipeline(*fast, "seed=1", log_dir=logs, name="c")
    assert not first["reused"]["student_init"] and again["reused"]["student_init"]
    assert not other["reused"]["student_init"] and other["reused"]["teacher"]
    students = sorted((logs / "cache" / "models").glob("llama-student-*"))
    assert len(students) == 2
    weights = [load_saved(p)[0].state_dict() for p in students]
    assert any(not torch.equal(weights[0][k], weights[1][k]) for k in weights[0])
    stats = [json.loads((p / "sft_stats.json").read_text()) for p in students]
    assert sorted(s["seed"] for s in stats) == [0, 1]
    assert all(s["chosen_step"] == 2 and s["curve"][-1][0] == 2 and not s["stopped_early"] for s in stats)


def test_the_student_sees_its_label_budget_and_copy_pretrains_on_unlabeled_texts_only(run_pipeline, tmp_path, caplog):
    """debug=fast: the student's SFT on the first 32 of 64 train rows (its label budget), the
    teacher's on all 64, each after 4 copy pretraining steps on the unlabeled texts. The sft
    baseline's data module serves the student's 32 rows."""
    from plad.stages.sft import copy_rows
    from plad.tasks.anonymization import AnonymizationTask

    logs = tmp_path / "logs"
    run_pipeline("debug=fast", "stages=[sft]", "model.teacher.sft.max_steps=1", log_dir=logs)
    stats = {
        p.name.split("-")[1]: json.loads((p / "sft_stats.json").read_text())
        for p in (logs / "cache" / "models").glob("llama-*")
        if "_pretrained-" not in p.name
    }
    assert stats["student"]["train_examples"] == 32 and stats["teacher"]["train_examples"] == 64
    for role in ("student", "teacher"):
        assert stats[role]["pretrain"]["texts"] == 32 and stats[role]["pretrain"]["steps"] == 4
    # the copy-pretrained start is an entry of its own: another label budget reuses it
    starts = sorted((logs / "cache" / "models").glob("llama-student_pretrained-*/COMPLETE"))
    assert len(starts) == 1
    with caplog.at_level(logging.INFO, logger="plad"):
        run_pipeline(
            "debug=fast",
            "stages=[sft]",
            "model.teacher.sft.max_steps=1",
            "model.student.sft.train_examples=16",
            log_dir=logs,
            name="other_budget",
        )
    assert any("reusing its copy-pretrained start" in r.getMessage() for r in caplog.records)
    assert sorted((logs / "cache" / "models").glob("llama-student_pretrained-*/COMPLETE")) == starts
    assert len(list((logs / "cache" / "models").glob("llama-student-[0-9a-f]*/COMPLETE"))) == 2

    task = AnonymizationTask(seed=0, n_train=64, n_unlabeled=32, n_validation=16, n_test=16)
    data = task.load()
    rows = copy_rows(task, data["unlabeled"], "Repeat: {text}\nOutput:")
    assert rows[0] == {
        "prompt": f"Repeat: {data['unlabeled'][0]['text']}\nOutput:",
        "reference": data["unlabeled"][0]["text"],
    }  # the input text, never its reference
    assert all(r["reference"] != u["reference"] for r, u in zip(rows, data["unlabeled"]))
    dm = SFTDataModule.for_distillation(data, train_tokenizer(), False, 8, 32, 12, val_size=4, train_examples=32)
    assert dm.train["id"] == data["train"]["id"][:32]


@pytest.mark.parametrize("model", ["llama", "smollm2"])
def test_a_listed_null_monitor_keys_as_an_absent_one_and_a_set_one_rebuilds(model, tmp_path):
    """Every model config lists ``sft.monitor: null`` (so ``model.teacher.sft.monitor=val_quality``
    needs no ``+``); null falls back to ``sft_selection.monitor``, which the key already holds, so the
    cached SFT models of configs written before the field was listed are still found."""
    from helpers.configs import compose_run_config

    from plad.stages import sft
    from plad.stages.preflight import preflight

    keys = {}
    for name in ("listed", "absent", "set"):
        extra = ["model.teacher.sft.monitor=val_quality"] if name == "set" else []
        cfg = compose_run_config(tmp_path / "logs", tmp_path / name, "debug=fast", f"model={model}", *extra)
        assert cfg.model.teacher.sft.monitor == (None if name != "set" else "val_quality")
        if name == "absent":  # the config as written before the field was listed
            with open_dict(cfg):
                del cfg.model.teacher.sft.monitor
        task = preflight(cfg)[0]
        keys[name] = sft.entry(cfg, "teacher", task, tmp_path).fingerprint
    assert keys["listed"] == keys["absent"] != keys["set"]
