"""Evaluation decoding: the degenerate-output metric on hand-made strings, rerank against an
independent likelihood computation, and the eval output cache keyed by the decoding settings."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
import torch.nn.functional as F
from helpers.numerics import assert_means_close
from helpers.pairs import PROMPTS, tiny_llama, train_tokenizer

from plad.backends.hf import HFBackend
from plad.backends.hf_sampling import generate
from plad.evaluation.decoding import decoding_settings, rerank
from plad.evaluation.degenerate import degenerate_share, is_degenerate
from plad.models.ref import ModelRef
from plad.stages.evaluate import output_cache_entries


@pytest.mark.parametrize(
    "text,expected",
    [
        ("I sent the camera camera camera is ready at [ADDRESS].", True),
        ("Camera, camera CAMERA.", True),  # case-insensitive, punctuation between
        ("from the clddddddddd", True),  # 9 x "d"
        ("wait........ then go", True),  # 8 x "."
        ("from the cldddddddd", True),  # exactly 8 x "d"
        ("from the clddddddd", False),  # 7 x "d"
        ("the camera camera is ready", False),  # only twice
        ("the theory the thesis the end", False),  # "the" not in a row
        ("Hi [NAME], call [PHONE] on [DATE].", False),
        ("aaaaaaa b", False),  # 7 x "a"
        ("", False),
    ],
)
def test_degenerate_on_hand_made_outputs(text, expected):
    assert is_degenerate(text) is expected


def test_degenerate_share_counts_outputs():
    outs = ["ok output", "go go go", "zzzzzzzzzz", "fine"]
    assert degenerate_share(outs) == 0.5 and degenerate_share([]) == 0.0


def _slow_mean_logp(model, tok, prompt: str, ids: list[int], finished: bool) -> tuple[float, int]:
    """(mean log p(generated ids (+ EOS if it generated one) | BOS + prompt), tokens), one unpadded sequence."""
    prompt_ids = [tok.bos_token_id] + tok.encode(prompt, add_special_tokens=False)
    target = list(ids) + [tok.eos_token_id] * finished
    with torch.no_grad():
        logp = F.log_softmax(model(torch.tensor([prompt_ids + target])).logits[0].float(), -1)
    return sum(logp[len(prompt_ids) - 1 + t, y].item() for t, y in enumerate(target)) / len(target), len(target)


def test_rerank_returns_the_candidate_with_the_highest_mean_logp():
    tok = train_tokenizer()
    model = tiny_llama(tok, seed=3)
    prompts = PROMPTS[:6]
    kw = dict(temperature=1.3, top_p=1.0, top_k=0, seed=5, max_new_tokens=8, max_prompt_tokens=64)
    r = rerank(HFBackend(), ModelRef.in_memory(model, tok), prompts, n=5, batch_size=4, progress=False, **kw)
    # The same seeded samples, scored independently one sequence at a time, as they were generated.
    gen = generate(model, tok, prompts, num_return_sequences=5, do_sample=True, batch_size=2, progress=False, **kw)
    assert r.candidates == gen.texts
    assert {f for fs in gen.finished for f in fs} == {True, False}  # both kinds are scored below
    for prompt, cands, ids, done, got, idx, scores in zip(
        prompts, gen.texts, gen.token_ids, gen.finished, r.texts, r.chosen, r.scores
    ):
        slow, n_tokens = zip(*(_slow_mean_logp(model, tok, prompt, i, f) for i, f in zip(ids, done)))
        assert_means_close(scores, slow, n_tokens)
        assert idx == max(range(len(slow)), key=slow.__getitem__) and got == cands[idx]
    assert any(i != 0 for i in r.chosen)  # the choice is not simply the first sample
    with pytest.raises(ValueError, match="eval.rerank.n"):
        rerank(HFBackend(), ModelRef.in_memory(model, tok), prompts, n=0, progress=False)


def test_eval_output_cache_is_keyed_by_decoding(tmp_path: Path):
    class T:
        def fingerprint(self) -> str:
            return "t"

    base = {
        "split": "test",
        "max_examples": 4,
        "batch_size": 2,
        "decoding": "greedy",
        "generation": {"do_sample": False, "seed": 0, "max_new_tokens": 8},
        "rerank": {"n": 8, "temperature": 1.0, "top_p": 1.0},
    }
    systems = {"teacher": ModelRef(tmp_path, "fp"), "student": ModelRef(tmp_path, "")}

    def entry(**changes) -> Path:
        cfg = {**base, **changes}
        entries = output_cache_entries(cfg, T(), systems, tmp_path, cfg.get("backend", {"backend": "hf"}))
        assert set(entries) == {"teacher"}  # run-local models are never cached
        return entries["teacher"]

    greedy = entry()
    assert entry(generation={**base["generation"], "seed": 1}) == greedy  # greedy ignores the seed
    rr = entry(decoding="rerank")
    assert rr != greedy
    assert entry(decoding="rerank", generation={**base["generation"], "seed": 1}) != rr
    assert entry(decoding="rerank", rerank={**base["rerank"], "n": 4}) != rr
    assert entry(backend={"backend": "vllm", "dtype": "auto"}) != greedy  # two backends never share an entry
    with pytest.raises(ValueError, match="eval.decoding"):
        decoding_settings({**base, "decoding": "beam"})
