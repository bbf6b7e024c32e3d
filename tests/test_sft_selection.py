"""SFT picks its checkpoint on the validation split: the saved model is the argmin of the logged
validation curve (early stopping with patience), and the SFT stage's cache key follows the run seed."""
import csv
import json

import pytest
import torch
from datasets import Dataset
from omegaconf import OmegaConf

from pairs_testlib import tiny_llama, train_tokenizer
from plad.data.sft_datamodule import SFTDataModule
from plad.models.build import load_saved, save_model
from plad.models.logprobs import sequence_logprobs
from plad.fit import check_sft_selection, fit_sft

CFG = {"seed": 0, "task": {"max_prompt_tokens": 32, "max_new_tokens": 12},
       "sft_selection": {"val_check_interval": 3, "patience": 3, "monitor": "val_loss", "min_delta": 0.0},
       "trainer": {"_target_": "lightning.pytorch.Trainer", "accelerator": "cpu", "devices": 1,
                   "enable_model_summary": False, "log_every_n_steps": 1}}
# Eight train rows of one phrasing, validation rows of another: the validation loss first falls
# (shared words, EOS), then rises as the model memorises the train rows.
TRAIN = Dataset.from_dict({"prompt": [f"Anonymize: call Bob on {i}" for i in range(8)],
                           "reference": [f"call [NAME] on the phone {i}" for i in range(8)]})
VALIDATION = Dataset.from_dict({"prompt": [f"Anonymize: Alice lives in {i}" for i in range(6)],
                                "reference": [f"[NAME] lives in the city {i}" for i in range(6)]})


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
    assert stats["chosen_step"] == steps[best] and stats["best_val_loss"] == pytest.approx(values[best])
    assert best < len(values) - 1 and stats["stopped_early"] and stats["steps"] < 90
    assert len(values) == best + 1 + 3

    # The saved weights are that step's: their validation loss is the logged best, not the last value.
    save_model(model, tok, tmp_path / "saved")
    saved, saved_tok = load_saved(tmp_path / "saved")
    assert _val_nll(saved, saved_tok) == pytest.approx(values[best], abs=1e-4)
    assert values[-1] - values[best] > 0.1


@pytest.mark.parametrize("key,value", [("val_check_interval", 0), ("patience", 0), ("monitor", "bleu"),
                                       ("min_delta", -1.0)])
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
