"""Judges: position symmetry, ties, parity with a one-example-at-a-time reference; bootstrap."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from transformers import AutoModelForCausalLM, AutoModelForSequenceClassification, LlamaConfig

from plad.evaluation.judges import LLMJudge, MetricJudge, RewardModelJudge, win_rate
from plad.models.tokenizer import train_tokenizer

PROMPTS = ["name: Ann Lee", "city: Paris, France", "tell me a longer story about a cat"]
OUT_A = ["hello there", "A", "the cat sat on a mat and then slept for a long while"]
OUT_B = ["a much longer answer than the first one", "Paris", "no"]
EXAMPLES = [{"prompt": p, "reference": r} for p, r in zip(PROMPTS, ["hello there", "Paris", "cat"])]


class ExactTask:
    name = "exact"

    def quality(self, prediction: str, example: dict) -> float:
        return float(prediction.strip() == example["reference"])


@pytest.fixture(scope="module")
def tokenizer():
    texts = PROMPTS + OUT_A + OUT_B + ["Which response follows the instruction better? Answer A or B."]
    return train_tokenizer(texts * 3, vocab_size=300)


def _config(tok, **kw) -> LlamaConfig:
    return LlamaConfig(
        vocab_size=len(tok),
        hidden_size=32,
        intermediate_size=64,
        num_hidden_layers=2,
        num_attention_heads=4,
        num_key_value_heads=2,
        max_position_embeddings=512,
        pad_token_id=tok.pad_token_id,
        bos_token_id=tok.bos_token_id,
        eos_token_id=tok.eos_token_id,
        **kw,
    )


@pytest.fixture(scope="module")
def llm_dir(tokenizer, tmp_path_factory):
    torch.manual_seed(0)
    model = AutoModelForCausalLM.from_config(_config(tokenizer))
    torch.nn.init.normal_(model.lm_head.weight, std=1.0)  # non-trivial A/B preferences
    path = tmp_path_factory.mktemp("llm")
    model.save_pretrained(path)
    tokenizer.save_pretrained(path)
    return path


@pytest.fixture(scope="module")
def rm_dir(tokenizer, tmp_path_factory):
    torch.manual_seed(1)
    model = AutoModelForSequenceClassification.from_config(_config(tokenizer, num_labels=1))
    torch.nn.init.normal_(model.score.weight, std=1.0)
    path = tmp_path_factory.mktemp("rm")
    model.save_pretrained(path)
    tokenizer.save_pretrained(path)
    return path


def test_metric_judge_win_loss_tie_and_needs_task():
    a = ["hello there", "Paris", "dog"]
    b = ["hello", "Paris", "cat"]
    assert MetricJudge().bind(ExactTask()).compare(PROMPTS, a, b, EXAMPLES) == [1.0, 0.5, 0.0]
    assert MetricJudge(task=ExactTask()).compare(PROMPTS, b, a, EXAMPLES) == [0.0, 0.5, 1.0]
    with pytest.raises(ValueError, match="judge.task"):
        MetricJudge().compare(PROMPTS, a, b, EXAMPLES)
    with pytest.raises(ValueError, match="equal length"):
        MetricJudge(task=ExactTask()).compare(PROMPTS, a[:2], b, EXAMPLES)


def test_llm_judge_is_position_symmetric_and_matches_unbatched_reference(llm_dir):
    judge = LLMJudge(str(llm_dir), batch_size=4, device="cpu", progress=False)
    ab = judge.compare(PROMPTS, OUT_A, OUT_B, EXAMPLES)
    ba = judge.compare(PROMPTS, OUT_B, OUT_A, EXAMPLES)
    np.testing.assert_allclose(np.array(ab) + np.array(ba), 1.0, atol=1e-5)
    np.testing.assert_allclose(judge.compare(PROMPTS, OUT_A, OUT_A, EXAMPLES), 0.5, atol=1e-6)
    assert all(0.0 < s < 1.0 for s in ab) and np.ptp(ab) > 1e-4  # real, prompt-dependent preferences

    # Reference: each order scored alone (no padding), P(A) over the two answer tokens, averaged.
    model, tok = judge.load()
    ids = [tok.encode("A", add_special_tokens=False)[0], tok.encode("B", add_special_tokens=False)[0]]

    def p_first(text: str) -> float:
        enc = tok(text, add_special_tokens=False, return_tensors="pt")
        with torch.no_grad():
            logits = model(**enc).logits[0, -1]
        return torch.softmax(logits[ids], -1)[0].item()

    for i, (p, a, b) in enumerate(zip(PROMPTS, OUT_A, OUT_B)):
        text = lambda x, y: judge.template.format(prompt=p, a=x, b=y) + judge.answer_prefix  # noqa: E731, B023
        expected = (p_first(text(a, b)) + 1 - p_first(text(b, a))) / 2
        assert ab[i] == pytest.approx(expected, abs=1e-5)


def test_llm_judge_rejects_bad_choices_and_template(llm_dir):
    with pytest.raises(ValueError, match="judge.template"):
        LLMJudge(str(llm_dir), template="no placeholders")
    with pytest.raises(ValueError, match="judge.choices"):
        LLMJudge(str(llm_dir), choices=["A", "A"])
    judge = LLMJudge(str(llm_dir), choices=["Response A", "Response B"], device="cpu", progress=False)
    with pytest.raises(ValueError, match="one distinct token"):
        judge.compare(PROMPTS, OUT_A, OUT_B, EXAMPLES)


def test_reward_model_judge_loaded_by_path(rm_dir):
    judge = RewardModelJudge(str(rm_dir), batch_size=2, device="cpu", progress=False)
    ra, rb = judge.rewards(PROMPTS, OUT_A), judge.rewards(PROMPTS, OUT_B)
    model, tok = judge.load()
    # Reference: each (prompt, output) scored alone, no padding: padding must not change rewards.
    for p, o, r in zip(PROMPTS * 2, OUT_A + OUT_B, ra + rb):
        with torch.no_grad():
            ref = model(**tok(p, o, return_tensors="pt")).logits[0, 0].item()
        assert r == pytest.approx(ref, abs=1e-5)
    ab = judge.compare(PROMPTS, OUT_A, OUT_B, EXAMPLES)
    assert ab == [1.0 if x > y else 0.0 for x, y in zip(ra, rb)]
    assert judge.compare(PROMPTS, OUT_B, OUT_A, EXAMPLES) == [1.0 - s for s in ab]
    assert judge.compare(PROMPTS, OUT_A, OUT_A, EXAMPLES) == [0.5] * 3


def test_win_rate_bootstrap_contains_estimate_and_shrinks_with_n():
    rng = np.random.default_rng(0)
    small = rng.choice([0.0, 0.5, 1.0], size=30, p=[0.3, 0.1, 0.6])
    large = rng.choice([0.0, 0.5, 1.0], size=3000, p=[0.3, 0.1, 0.6])
    ws, wl = win_rate(small, n_boot=2000, seed=1), win_rate(large, n_boot=2000, seed=1)
    for w, s in ((ws, small), (wl, large)):
        assert w["rate"] == pytest.approx(s.mean()) and w["n"] == len(s)
        assert w["low"] < w["rate"] < w["high"]
    assert wl["high"] - wl["low"] < (ws["high"] - ws["low"]) / 4
    # The percentile interval of a mean matches the normal approximation for large n.
    half = 1.96 * large.std(ddof=1) / np.sqrt(len(large))
    assert (wl["high"] - wl["low"]) / 2 == pytest.approx(half, rel=0.15)
    assert win_rate([1.0] * 5) == {"rate": 1.0, "low": 1.0, "high": 1.0, "n": 5}
    assert win_rate([])["n"] == 0
