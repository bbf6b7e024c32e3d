"""The paper's protocol in the pair stage: unlabeled prompts carry no references into the pair
cache or any scorer unless the run is an oracle; the default scorer is label-free (the teacher's
mean log-likelihood); the pseudo-label-noise diagnostic reads references outside the stage."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from datasets import Dataset
from helpers.numerics import assert_means_close
from helpers.pairs import FakeTask, load_tiny, pairs_cfg, prompt_dataset, save_tiny
from omegaconf import OmegaConf

from plad.models.ref import ModelRef
from plad.pairs.build import obtain_pairs
from plad.pairs.diagnostics import pseudo_label_noise
from plad.pairs.quality import TeacherLikelihoodScorer, check_scorer

SENTINEL = "SENTINEL-REFERENCE-7f3a"
TEACHER_SCORER = {"_target_": "plad.pairs.quality.TeacherLikelihoodScorer"}


@pytest.fixture(scope="module")
def models(tmp_path_factory):
    root = tmp_path_factory.mktemp("models")
    return {"T": load_tiny(save_tiny(root / "teacher", seed=1)), "S": load_tiny(save_tiny(root / "student", seed=2))}


def build(models, root: Path, prompts: Dataset, **cfg):
    return obtain_pairs(
        pairs_cfg(scorer=TEACHER_SCORER, **cfg),
        prompts,
        FakeTask(),
        ModelRef(None, "teacher-fp", loader=lambda: models["T"]),
        ModelRef(None, "student-fp", loader=lambda: models["S"]),
        root,
        64,
        6,
        0,
    )


def sentinel_prompts(n: int = 6) -> Dataset:
    return prompt_dataset(n).map(lambda r: {"reference": SENTINEL})


def test_no_reference_reaches_the_pair_cache_or_the_scores(models, tmp_path):
    real = build(models, tmp_path / "a", prompt_dataset(6))
    masked = build(models, tmp_path / "b", sentinel_prompts())
    assert "reference" not in masked.pairwise.column_names and "ref_reference_logp" not in masked.pairwise.column_names
    files = [p for p in masked.path.rglob("*") if p.is_file()]
    assert files and not any(SENTINEL.encode() in p.read_bytes() for p in files)
    assert masked.path.name == real.path.name  # references do not even enter the cache key
    cols = ["chosen", "rejected", "chosen_score", "rejected_score"]
    assert masked.pairwise.select_columns(cols).to_list() == real.pairwise.select_columns(cols).to_list()
    assert masked.stats["oracle"] is False


def test_oracle_switch_brings_references_back(models, tmp_path):
    oracle = build(models, tmp_path, sentinel_prompts(), oracle_references=True)
    assert set(oracle.pairwise["reference"]) == {SENTINEL} and oracle.stats["oracle"] is True
    assert oracle.path.name != build(models, tmp_path, sentinel_prompts()).path.name


def test_teacher_likelihood_scores_equal_a_slow_per_example_computation(models):
    model, tok = models["T"]
    prompts, outputs = ["Anonymize: Alice Brown lives in Paris.", "Summarize: room 4"], ["[NAME] lives", "noon"]
    scorer = TeacherLikelihoodScorer()
    scorer.bind(lambda: models["T"], "fp", 64, 6, batch_size=2)
    got = scorer(outputs, [{"prompt": p} for p in prompts], FakeTask())
    for p, o, score in zip(prompts, outputs, got):
        prompt_ids = [tok.bos_token_id] + tok(p, add_special_tokens=False)["input_ids"]
        completion = (tok(o, add_special_tokens=False)["input_ids"] + [tok.eos_token_id])[:6]
        with torch.no_grad():
            logits = model(torch.tensor([prompt_ids + completion])).logits[0].float()
        logp = torch.log_softmax(logits, -1)
        slow = sum(logp[len(prompt_ids) - 1 + k, t].item() for k, t in enumerate(completion)) / len(completion)
        assert_means_close(score, slow, len(completion))


@pytest.mark.parametrize(
    "cfg,message",
    [
        ({"scorer": {"_target_": "plad.pairs.quality.TaskMetricScorer"}}, "pairs.oracle_references=true"),
        ({"scorer": TEACHER_SCORER, "teacher_outputs": "teacher.jsonl"}, "pairs.teacher_outputs"),
    ],
)
def test_scorer_rules_fail_in_one_line(cfg, message):
    with pytest.raises(ValueError, match="pairs.scorer") as err:
        check_scorer(OmegaConf.create(cfg))
    assert message in str(err.value) and "\n" not in str(err.value)
    check_scorer(OmegaConf.create({**cfg, "oracle_references": True, "teacher_outputs": None}))  # allowed


def test_pseudo_label_noise_counts_student_wins_against_the_reference():
    pairs = Dataset.from_list(
        [
            {"id": "a", "chosen": "good", "rejected": "bad"},
            {"id": "a", "chosen": "bad", "rejected": "good"},
            {"id": "b", "chosen": "bad", "rejected": "bad x"},
        ]
    )
    labeled = Dataset.from_list(
        [{"id": "a", "prompt": "p", "reference": "r"}, {"id": "b", "prompt": "q", "reference": "s"}]
    )
    noise = pseudo_label_noise(pairs, labeled, FakeTask())
    assert noise == {
        "student_wins": pytest.approx(1 / 3),
        "ties": pytest.approx(1 / 3),
        "teacher_quality": pytest.approx(1 / 3),
        "student_quality": pytest.approx(1 / 3),
        "n_pairs": 3,
    }
    assert pseudo_label_noise(pairs, labeled.remove_columns(["reference"]), FakeTask()) == {}
