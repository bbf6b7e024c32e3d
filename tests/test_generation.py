"""Batched sampling: exact sampling distribution, independence of batching, parity with HF."""

from __future__ import annotations

import pytest
import torch
from helpers.pairs import PROMPTS, tiny_llama, tiny_t5, train_tokenizer

from plad.backends.hf_sampling import GumbelSampler, generate
from plad.models.encoding import encode_prompt


@pytest.fixture(scope="module")
def tok():
    return train_tokenizer()


@pytest.fixture(scope="module")
def llama(tok):
    return tiny_llama(tok, seed=0)


@pytest.fixture(scope="module")
def t5(tok):
    return tiny_t5(tok, seed=0)


def test_gumbel_noise_draws_from_the_softmax():
    logits = torch.tensor([2.0, 1.0, 0.0, -1.0, float("-inf")])
    n = 40000
    sampler = GumbelSampler(torch.arange(n) * 7919 + 13)
    scores = sampler(torch.zeros(n, 3, dtype=torch.long), logits.expand(n, -1).clone())
    freq = torch.bincount(scores.argmax(-1), minlength=5).float() / n
    assert freq[4] == 0  # filtered tokens are never drawn
    assert torch.allclose(freq, torch.softmax(logits, -1), atol=0.01)
    # a later step draws fresh noise for the same rows
    again = sampler(torch.zeros(n, 4, dtype=torch.long), logits.expand(n, -1).clone())
    assert (again.argmax(-1) != scores.argmax(-1)).float().mean() > 0.3


@pytest.mark.parametrize("family", ["llama", "t5"])
def test_samples_do_not_depend_on_batch_size_or_order(family, request):
    model, tok = request.getfixturevalue(family), request.getfixturevalue("tok")
    kw = dict(max_new_tokens=10, num_return_sequences=2, seed=3, temperature=0.8, top_p=0.95, top_k=50, progress=False)
    a = generate(model, tok, PROMPTS, batch_size=3, **kw)
    b = generate(model, tok, PROMPTS[::-1], batch_size=8, **kw)
    c = generate(model, tok, PROMPTS[2:5], batch_size=1, **kw)
    assert a.texts == b.texts[::-1] and a.n_tokens == b.n_tokens[::-1]
    assert c.texts == a.texts[2:5]
    assert sum(s[0] != s[1] for s in a.texts) >= len(PROMPTS) - 1  # the two samples of a prompt differ
    assert generate(model, tok, PROMPTS, batch_size=3, **kw).texts == a.texts
    assert generate(model, tok, PROMPTS, batch_size=3, **{**kw, "seed": 4}).texts != a.texts


@pytest.mark.parametrize("family", ["llama", "t5"])
def test_greedy_batched_matches_hf_generate_per_prompt(family, request):
    model, tok = request.getfixturevalue(family), request.getfixturevalue("tok")
    out = generate(model, tok, PROMPTS, max_new_tokens=8, do_sample=False, batch_size=4, progress=False)
    enc_dec = family == "t5"
    for prompt, texts in zip(PROMPTS, out.texts):
        ids = torch.tensor([encode_prompt(tok, prompt, enc_dec, 256)])
        ref = model.generate(
            input_ids=ids,
            attention_mask=torch.ones_like(ids),
            max_new_tokens=8,
            do_sample=False,
            pad_token_id=tok.pad_token_id,
        )
        new = ref[0, 1:] if enc_dec else ref[0, ids.shape[1] :]
        assert texts == [tok.decode(new, skip_special_tokens=True).strip()]
    # top_k=1 sampling is greedy decoding
    top1 = generate(model, tok, PROMPTS, max_new_tokens=8, top_k=1, batch_size=3, seed=9, progress=False)
    assert top1.texts == out.texts


def test_token_counts_include_eos_and_text_excludes_it(tok, llama):
    """A head that only ever emits 'a' or EOS makes the expected text follow from the count."""
    head = torch.nn.Linear(llama.config.hidden_size, len(tok), bias=True)
    a_id = tok.convert_tokens_to_ids("a")
    with torch.no_grad():
        head.weight.zero_()
        head.bias.fill_(-1e4)
        head.bias[[a_id, tok.eos_token_id]] = 0.0
    model = tiny_llama(tok, seed=0)
    model.lm_head = head
    out = generate(model, tok, PROMPTS, max_new_tokens=6, num_return_sequences=4, batch_size=3, progress=False)
    counts = [n for ns in out.n_tokens for n in ns]
    assert len(set(counts)) > 2  # ragged lengths inside batches
    for text, n in zip([t for ts in out.texts for t in ts], counts):
        assert text in ("a" * (n - 1), "a" * n) and (text == "a" * (n - 1) or n == 6)
    with torch.no_grad():
        head.bias[tok.eos_token_id] = 5.0  # EOS always wins unless banned
    eos = generate(model, tok, PROMPTS[:2], max_new_tokens=6, do_sample=False, progress=False)
    assert eos.texts == [[""], [""]] and eos.n_tokens == [[1], [1]]
    late = generate(model, tok, PROMPTS[:2], max_new_tokens=6, min_new_tokens=3, do_sample=False, progress=False)
    assert late.texts == [["aaa"], ["aaa"]] and late.n_tokens == [[4], [4]]


@pytest.mark.parametrize(
    "bad, field",
    [
        ({"top_p": 0.0}, "generate.top_p"),
        ({"batch_size": 0}, "generate.batch_size"),
        ({"temperature": -1.0}, "generate.temperature"),
    ],
)
def test_bad_settings_name_the_field(tok, llama, bad, field):
    with pytest.raises(ValueError, match=field):
        generate(llama, tok, PROMPTS[:1], progress=False, **bad)
