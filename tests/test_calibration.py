"""Calibration diagnostics on constructed rankings, and likelihood scoring against a slow reference."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F
from helpers.numerics import assert_means_close
from transformers import AutoModelForCausalLM, LlamaConfig

from plad.backends.hf import HFBackend
from plad.backends.hf_sampling import generate
from plad.evaluation.calibration import calibration_diagnostics, pairwise_rank_accuracy, spearman_per_prompt
from plad.models.likelihood import score_completions
from plad.models.ref import ModelRef
from plad.models.tokenizer import train_tokenizer


def test_perfect_and_reversed_calibration():
    quality = [[0.1, 0.5, 0.9, 0.3], [1.0, 0.0, 0.5]]
    aligned = [[-3.0, -2.0, -0.5, -2.5], [-0.1, -9.0, -1.0]]  # same order as quality
    reversed_ = [[-s for s in p] for p in aligned]
    assert spearman_per_prompt(aligned, quality) == {"spearman": pytest.approx(1.0), "n_used": 2, "n_prompts": 2}
    assert spearman_per_prompt(reversed_, quality)["spearman"] == pytest.approx(-1.0)
    assert pairwise_rank_accuracy(aligned, quality) == {"rank_acc": 1.0, "n_pairs": 6 + 3}
    assert pairwise_rank_accuracy(reversed_, quality) == {"rank_acc": 0.0, "n_pairs": 9}


def test_constant_prompts_skipped_and_hand_computed_mixture():
    scores = [
        [-1.0, -2.0, -3.0],  # quality constant -> no correlation, no pairs
        [-1.0, -1.0, -1.0],  # score constant -> skipped by Spearman, pairs tie (0.5 each)
        [-1.0, -3.0, -2.0],
    ]  # quality order 0 > 1 > 2: ranks (3,1,2) vs (3,2,1)
    quality = [[0.5, 0.5, 0.5], [0.0, 1.0, 0.5], [1.0, 0.5, 0.0]]
    sp = spearman_per_prompt(scores, quality)
    # Spearman of ranks (3,1,2) and (3,2,1): 1 - 6 * (0 + 1 + 1) / (3 * 8) = 0.5
    assert sp == {"spearman": pytest.approx(0.5), "n_used": 1, "n_prompts": 3}
    ra = pairwise_rank_accuracy(scores, quality)
    # prompt 2: three ties -> 1.5; prompt 3: (0,1) right, (0,2) right, (1,2) wrong -> 2
    assert ra == {"rank_acc": pytest.approx(3.5 / 6), "n_pairs": 6}
    empty = spearman_per_prompt([[0.0, 0.0]], [[1.0, 0.0]])
    assert math.isnan(empty["spearman"]) and empty["n_used"] == 0


def test_mismatched_lengths_raise():
    with pytest.raises(ValueError):
        spearman_per_prompt([[1.0, 2.0]], [[1.0, 2.0], [0.0, 1.0]])


def _tiny(texts: list[str]):
    tok = train_tokenizer(texts, vocab_size=280)
    torch.manual_seed(0)
    model = AutoModelForCausalLM.from_config(
        LlamaConfig(
            vocab_size=len(tok),
            hidden_size=16,
            intermediate_size=32,
            num_hidden_layers=1,
            num_attention_heads=2,
            num_key_value_heads=2,
            max_position_embeddings=256,
            pad_token_id=tok.pad_token_id,
            bos_token_id=tok.bos_token_id,
            eos_token_id=tok.eos_token_id,
        )
    ).eval()
    return model, tok


def _slow_mean_logp(model, tok, prompt: str, target: list[int]) -> float:
    prompt_ids = [tok.bos_token_id] + tok.encode(prompt, add_special_tokens=False)
    with torch.no_grad():
        logp = F.log_softmax(model(torch.tensor([prompt_ids + target])).logits[0].float(), -1)
    return sum(logp[len(prompt_ids) - 1 + t, y].item() for t, y in enumerate(target)) / len(target)


def test_score_completions_matches_token_by_token_reference():
    prompts = ["name: Ann", "city: Paris, France and more", "x"]
    completions = ["hello there", "", "a longer completion about Paris"]
    model, tok = _tiny(prompts + completions)
    got = score_completions(model, tok, prompts, completions, max_prompt_tokens=256, batch_size=2, progress=False)
    cut = score_completions(
        model,
        tok,
        prompts,
        completions,
        max_prompt_tokens=256,
        batch_size=2,
        progress=False,
        finished=[False, True, False],
    )
    for i, (p, c) in enumerate(zip(prompts, completions)):
        ids = tok.encode(c, add_special_tokens=False)
        assert_means_close(got.mean_logp[i], _slow_mean_logp(model, tok, p, ids + [tok.eos_token_id]), len(ids) + 1)
        assert got.n_tokens[i] == len(ids) + 1
        if i != 1:  # an unfinished sample: exactly its tokens, no EOS it never generated
            assert_means_close(cut.mean_logp[i], _slow_mean_logp(model, tok, p, ids), len(ids))
            assert cut.n_tokens[i] == len(ids)


class _Identity:
    def quality(self, output: str, example: dict) -> float:
        return float(len(output))


def test_calibration_scores_a_truncated_sample_without_an_eos():
    """An untrained model never emits EOS within 3 tokens: every calibration sample is cut at the
    budget, and its score must be the mean log-likelihood of exactly the 3 generated tokens (their
    ids, not the decoded text's, which may re-encode to others)."""
    texts = ["alpha beta gamma delta", "one two three four five", "red green blue"]
    model, tok = _tiny(texts)
    examples = [{"prompt": t} for t in texts]
    gen = generate(
        model,
        tok,
        texts,
        max_new_tokens=3,
        do_sample=True,
        num_return_sequences=2,
        seed=0,
        max_prompt_tokens=64,
        progress=False,
    )
    assert not any(f for fs in gen.finished for f in fs) and all(n == 3 for ns in gen.n_tokens for n in ns)
    out = calibration_diagnostics(
        HFBackend(),
        ModelRef.in_memory(model, tok),
        _Identity(),
        examples,
        k=2,
        max_new_tokens=3,
        seed=0,
        max_prompt_tokens=64,
        progress=False,
    )
    for ex, cands, scores in zip(examples, gen.token_ids, out["points"]["scores"]):
        for ids, s in zip(cands, scores):  # the generated ids, scored as they were sampled
            assert len(ids) == 3
            assert_means_close(s, _slow_mean_logp(model, tok, ex["prompt"], ids), len(ids))
            with pytest.raises(AssertionError):  # with an EOS it never generated, the score would differ
                assert_means_close(s, _slow_mean_logp(model, tok, ex["prompt"], ids + [tok.eos_token_id]), len(ids) + 1)
