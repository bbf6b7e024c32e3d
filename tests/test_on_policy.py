"""On-policy student samples during distillation (plad.training.on_policy): which batches, which
sequence, the exact ids the current student generated, and the one-line refusals."""

from __future__ import annotations

import pytest
import torch
from helpers.pairs import PROMPTS, tiny_llama, tiny_t5, train_tokenizer

from plad.checks import InputError
from plad.data.pair_datamodule import PairCollator
from plad.losses.dpo import DPOLoss
from plad.losses.gkd import GKDLoss
from plad.losses.listwise import ListwiseLoss
from plad.losses.margin import MarginLoss
from plad.losses.ranking import RankingLoss
from plad.losses.seqkd import SeqKDLoss
from plad.losses.sft import SFTLoss
from plad.models.encoding import encode_example
from plad.training.on_policy import OnPolicy, replaced_column, resample


def test_lmbda_draws_share_and_are_a_function_of_seed_and_step():
    s = OnPolicy(lmbda=0.3, seed=1)
    draws = [s.active(step) for step in range(2000)]
    assert 0.25 < sum(draws) / len(draws) < 0.35
    assert draws == [OnPolicy(lmbda=0.3, seed=1).active(step) for step in range(2000)]  # a resumed run
    assert draws != [OnPolicy(lmbda=0.3, seed=2).active(step) for step in range(2000)]
    assert all(OnPolicy(lmbda=1.0).active(step) for step in range(50))
    assert [step for step in range(10) if OnPolicy(every=4).active(step)] == [0, 4, 8]
    assert len({s.sample_seed(step) for step in range(100)}) == 100  # new samples every step


def test_off_unless_lmbda_or_every():
    assert OnPolicy.from_config(None) is None
    assert OnPolicy.from_config({"lmbda": 0.0, "every": None}) is None
    assert OnPolicy.from_config({"every": 2}).every == 2


@pytest.mark.parametrize(
    ("cfg", "field"),
    [
        ({"lmbda": 1.5}, "distill.on_policy.lmbda"),
        ({"lmbda": "0.5"}, "distill.on_policy.lmbda"),
        ({"every": 0}, "distill.on_policy.every"),
        ({"lmbda": 0.5, "column": "teacher"}, "distill.on_policy.column"),
        ({"lmbda": 0.5, "temperature": 0}, "distill.on_policy.temperature"),
        ({"lmbda": 0.5, "share": 1}, "distill.on_policy: unknown keys ['share']"),
    ],
)
def test_bad_values_fail_in_one_line_naming_the_field(cfg, field):
    with pytest.raises(InputError) as e:
        OnPolicy.from_config(cfg)
    assert str(e.value).startswith(field) and "\n" not in str(e.value)


def test_which_sequence_is_replaced():
    on = OnPolicy(lmbda=0.5)
    assert replaced_column(on, RankingLoss) == 1  # y-: on-policy PLaD
    assert replaced_column(on, GKDLoss) == 0  # the white-box sequence: GKD
    for loss, says in [
        (SeqKDLoss, "learns from the teacher's samples only"),
        (DPOLoss, "reference log-likelihoods"),
        (MarginLoss, "quality scores"),
        (ListwiseLoss, "listwise"),
        (SFTLoss, "labeled train split"),
    ]:
        with pytest.raises(InputError, match=says):
            replaced_column(on, loss)
    with pytest.raises(InputError, match="distill.on_policy.column"):
        replaced_column(OnPolicy(lmbda=0.5, column="rejected"), GKDLoss)
    with pytest.raises(InputError, match="^distill.teacher_logits: GKDLoss on on-policy samples"):
        replaced_column(on, GKDLoss, teacher_logits="topk")  # the cache has no logits for new samples
    assert replaced_column(on, RankingLoss, teacher_logits="topk") == 1  # black-box: topk is ignored


@pytest.mark.parametrize("family", ["llama", "t5"])
def test_the_replaced_sequence_is_what_the_current_student_generated(family, monkeypatch):
    """The new y- holds exactly the generated ids (EOS only when the sample finished), the other
    sequence of each example is untouched, and the batch keeps its layout."""
    from plad.backends import hf_sampling

    tok = train_tokenizer()
    model = (tiny_llama if family == "llama" else tiny_t5)(tok, seed=3)
    enc_dec = family == "t5"
    prompts = PROMPTS[:4]
    rows = []
    for n, p in enumerate(prompts):
        feats = [
            encode_example(tok, p, [5 + n, 6, 7], enc_dec, 32, 8),
            encode_example(tok, p, [9] * (n + 1), enc_dec, 32, 8),
        ]
        rows.append({"input_ids": [f["input_ids"] for f in feats], "labels": [f["labels"] for f in feats], "prompt": p})
    pad = tok.pad_token_id
    batch = PairCollator(pad, enc_dec)(rows)
    assert batch["prompts"] == prompts

    calls = []
    real = hf_sampling.generate

    def spy(*args, **kwargs):
        out = real(*args, **kwargs)
        calls.append(out)
        return out

    monkeypatch.setattr(hf_sampling, "generate", spy)
    setting = OnPolicy(lmbda=1.0, max_new_tokens=6, max_prompt_tokens=32)
    new, seconds, cut = resample(model, tok, batch, 1, setting, seed=7, encoder_decoder=enc_dec)
    (out,) = calls
    assert seconds > 0 and 0.0 <= cut <= 1.0
    assert new["input_ids"].shape[0] == 8 and torch.equal(new["mask"], batch["mask"])
    for b, p in enumerate(prompts):
        ids, finished = out.token_ids[b][0], out.finished[b][0]
        want = encode_example(tok, p, ids, enc_dec, 32, 6, eos=finished)
        got_labels = new["labels"][2 * b + 1]
        got_labels = got_labels[got_labels != -100].tolist()
        assert got_labels == [t for t in want["labels"] if t != -100]
        assert (tok.eos_token_id in got_labels[len(ids) :]) == finished
        keep, old = new["attention_mask"][2 * b].bool(), batch["attention_mask"][2 * b].bool()  # y+ untouched
        assert new["input_ids"][2 * b][keep].tolist() == batch["input_ids"][2 * b][old].tolist()
        lab_new, lab_old = new["labels"][2 * b], batch["labels"][2 * b]
        assert lab_new[lab_new != -100].tolist() == lab_old[lab_old != -100].tolist()
    # Same seed, same weights: the same samples (what a resumed run relies on).
    again, _, _ = resample(model, tok, batch, 1, setting, seed=7, encoder_decoder=enc_dec)
    assert torch.equal(again["input_ids"], new["input_ids"]) and torch.equal(again["labels"], new["labels"])
