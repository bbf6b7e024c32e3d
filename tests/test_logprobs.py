"""sequence_logprobs against a slow one-token-at-a-time reference, for every family and padding side."""

from __future__ import annotations

import copy

import pytest
import torch
import torch.nn.functional as F
from omegaconf import OmegaConf

from plad.models.build import build_model, train_tokenizer
from plad.models.encoding import encode_example, encode_prompt, pad_batch
from plad.models.logprobs import IGNORE_INDEX, is_encoder_decoder, sequence_logprobs

CORPUS = [
    "Translate to French: hello world",
    "bonjour le monde",
    "Q: what is two plus two? A: four",
    "The quick brown fox jumps over the lazy dog.",
    "Email alice@example.com or call 555-0100.",
] * 4

# Ragged on purpose: prompts and completions of different lengths, one single-token prompt.
EXAMPLES = [
    ("Translate to French: hello world", "bonjour"),
    ("Q: what?", "A: four, and then a much longer tail of words"),
    ("x", "The lazy dog."),
]

TINY = {
    "llama": {
        "_target_": "transformers.LlamaConfig",
        "hidden_size": 32,
        "intermediate_size": 64,
        "num_hidden_layers": 2,
        "num_attention_heads": 4,
        "num_key_value_heads": 2,
        "max_position_embeddings": 128,
    },
    "t5": {
        "_target_": "transformers.T5Config",
        "d_model": 32,
        "d_kv": 8,
        "d_ff": 64,
        "num_layers": 1,
        "num_decoder_layers": 2,
        "num_heads": 4,
        "relative_attention_num_buckets": 8,
    },
    # window_size 4 < sequence length, so the local layer's window is exercised under padding.
    "gpt_neo": {
        "_target_": "transformers.GPTNeoConfig",
        "hidden_size": 32,
        "num_layers": 2,
        "num_heads": 4,
        "attention_types": [[["global", "local"], 1]],
        "window_size": 4,
        "max_position_embeddings": 128,
    },
}


@pytest.fixture(scope="module")
def tokenizer():
    return train_tokenizer(CORPUS, vocab_size=300)


@pytest.fixture(scope="module")
def pad_is_eos_tokenizer(tokenizer):
    tok = copy.deepcopy(tokenizer)
    tok.pad_token = tok.eos_token
    assert tok.pad_token_id == tok.eos_token_id
    return tok


def tiny_model(family: str, tokenizer, seed: int = 0) -> torch.nn.Module:
    spec = OmegaConf.create({"config": TINY[family], "dtype": "float32"})
    return build_model(spec, tokenizer, seed=seed).eval()


def encode_all(tokenizer, enc_dec: bool) -> list[dict[str, list[int]]]:
    return [
        encode_example(tokenizer, p, c, enc_dec, max_prompt_tokens=64, max_completion_tokens=64) for p, c in EXAMPLES
    ]


@torch.no_grad()
def slow_logprob(model, feature: dict[str, list[int]], skip_last: bool = False) -> tuple[float, int]:
    """Each example alone, unpadded: one forward per completion token, summing log_softmax of the next token."""
    total, n = 0.0, 0
    if is_encoder_decoder(model):
        encoder_ids = torch.tensor([feature["input_ids"]])
        decoded = [model.config.decoder_start_token_id]
        targets = feature["labels"][:-1] if skip_last else feature["labels"]
        for token in targets:
            logits = model(input_ids=encoder_ids, decoder_input_ids=torch.tensor([decoded])).logits[0, -1]
            total += F.log_softmax(logits.double(), -1)[token].item()
            decoded.append(token)
            n += 1
        return total, n
    ids, labels = feature["input_ids"], feature["labels"]
    last = len(ids) - 1 if skip_last else len(ids)
    for t in range(1, last):
        if labels[t] == IGNORE_INDEX:
            continue
        logits = model(input_ids=torch.tensor([ids[:t]])).logits[0, -1]
        total += F.log_softmax(logits.double(), -1)[ids[t]].item()
        n += 1
    return total, n


@pytest.mark.parametrize("family", ["llama", "t5", "gpt_neo"])
@pytest.mark.parametrize("side", ["left", "right"])
def test_matches_slow_reference(tokenizer, family, side):
    model = tiny_model(family, tokenizer)
    enc_dec = is_encoder_decoder(model)
    feats = encode_all(tokenizer, enc_dec)
    batch = pad_batch(feats, tokenizer.pad_token_id, enc_dec, padding_side=side)
    assert (batch["attention_mask"] == 0).any(), "the batch must actually contain padding"
    with torch.no_grad():
        out = sequence_logprobs(model, **batch)
    ref = [slow_logprob(model, f) for f in feats]
    torch.testing.assert_close(
        out.sum_logp, torch.tensor([r[0] for r in ref], dtype=torch.float32), atol=1e-5, rtol=1e-5
    )
    assert out.n_tokens.tolist() == [r[1] for r in ref]
    # Every completion token, EOS included, is counted.
    n_completion = [len(tokenizer(c, add_special_tokens=False)["input_ids"]) + 1 for _, c in EXAMPLES]
    assert out.n_tokens.tolist() == n_completion
    torch.testing.assert_close(out.mean_logp, out.sum_logp / out.n_tokens)


@pytest.mark.parametrize("family", ["llama", "t5", "gpt_neo"])
def test_pad_equal_to_eos_still_scores_eos(pad_is_eos_tokenizer, family):
    tok = pad_is_eos_tokenizer
    model = tiny_model(family, tok)
    enc_dec = is_encoder_decoder(model)
    feats = encode_all(tok, enc_dec)
    assert all(f["labels"][-1] == tok.eos_token_id for f in feats)
    # Right padding puts pad (== eos) ids right after each completion's EOS: only the first may count.
    batch = pad_batch(feats, tok.pad_token_id, enc_dec, padding_side="right")
    with torch.no_grad():
        out = sequence_logprobs(model, **batch)
    with_eos = [slow_logprob(model, f) for f in feats]
    without_eos = [slow_logprob(model, f, skip_last=True) for f in feats]
    assert out.n_tokens.tolist() == [n for _, n in with_eos] == [n + 1 for _, n in without_eos]
    torch.testing.assert_close(
        out.sum_logp, torch.tensor([s for s, _ in with_eos], dtype=torch.float32), atol=1e-5, rtol=1e-5
    )
    # The EOS term is a real (negative) log-probability, so dropping it would change the sum.
    assert all(s < s_no - 1e-3 for (s, _), (s_no, _) in zip(with_eos, without_eos))


@pytest.mark.parametrize("family", ["llama", "t5"])
def test_returned_logits_align_with_labels(tokenizer, family):
    model = tiny_model(family, tokenizer)
    enc_dec = is_encoder_decoder(model)
    batch = pad_batch(encode_all(tokenizer, enc_dec), tokenizer.pad_token_id, enc_dec, padding_side="left")
    with torch.no_grad():
        out = sequence_logprobs(model, **batch, return_logits=True)
    assert out.logits.shape[:2] == out.labels.shape
    mask = out.labels != IGNORE_INDEX
    logp = F.log_softmax(out.logits.float(), -1).gather(-1, out.labels.clamp(min=0).unsqueeze(-1)).squeeze(-1)
    torch.testing.assert_close((logp * mask).sum(-1), out.sum_logp)
    assert mask.sum(-1).tolist() == out.n_tokens.tolist()


def test_prompt_truncation_keeps_the_end(tokenizer):
    ids = tokenizer("one two three four five", add_special_tokens=False)["input_ids"]
    assert encode_prompt(tokenizer, "one two three four five", False, 3) == [tokenizer.bos_token_id] + ids[-2:]
    assert encode_prompt(tokenizer, "one two three four five", False, 1) == [tokenizer.bos_token_id]
    assert encode_prompt(tokenizer, "one two three four five", True, 3) == ids[:2] + [tokenizer.eos_token_id]
