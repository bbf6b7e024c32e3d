"""PairDataModule / PairCollator: batches score exactly like single pairs; prompt-disjoint splits."""

from __future__ import annotations

import json

import pytest
import torch
from helpers.numerics import assert_sums_close
from helpers.pairs import FakeTask, pairs_cfg, prompt_dataset, tiny_llama, tiny_t5, train_tokenizer

from plad.data.pair_datamodule import PairDataModule, val_ids
from plad.models.encoding import encode_example, pad_batch
from plad.models.logprobs import sequence_logprobs
from plad.models.ref import ModelRef
from plad.pairs.build import obtain_pairs

TEACHER = [["good one"], ["good a", "good b", "fine c"], ["good x", "y"], ["z"], ["good w", "v", "u"], ["t"]]
LENS = dict(max_prompt_tokens=64, max_completion_tokens=6)


@pytest.fixture(scope="module")
def tok():
    return train_tokenizer()


@pytest.fixture(scope="module", params=["llama", "t5"])
def setup_(request, tok, tmp_path_factory):
    """(student, pair set) built with a black-box teacher (ragged outputs) and 2 student samples."""
    family = request.param
    student = tiny_llama(tok, seed=2) if family == "llama" else tiny_t5(tok, seed=2)
    root = tmp_path_factory.mktemp(f"pairs-{family}")
    path = root / "teacher.jsonl"
    path.write_text("".join(json.dumps({"id": f"p{i}", "outputs": o}) + "\n" for i, o in enumerate(TEACHER)))
    cfg = pairs_cfg(
        n_student=2,
        teacher_outputs=str(path),
        scorer={"_target_": "plad.pairs.quality.TaskMetricScorer"},
        oracle_references=True,
    )  # these tests serve the reference column too
    ps = obtain_pairs(
        cfg,
        prompt_dataset(len(TEACHER)),
        FakeTask(),
        ModelRef(None, "bb", loader=lambda: pytest.fail("teacher loaded")),
        ModelRef.in_memory(student, tok, "student"),
        root,
        64,
        6,
        0,
    )
    return family, student, ps


def module(ps, tok, family, inputs, **kw):
    dm = PairDataModule(
        ps, tok, encoder_decoder=family == "t5", inputs=inputs, batch_size=3, **{**LENS, "val_size": 0, "seed": 0, **kw}
    )
    dm.prepare_data()
    dm.setup("fit")
    return dm


def alone(model, tok, enc_dec, prompt, completion, finished=True):
    """(summed log-probability, scored tokens) of one sequence scored on its own: a completion is
    generated ids (with an EOS only when it ``finished``) or a reference text."""
    batch = pad_batch(
        [encode_example(tok, prompt, completion, enc_dec, **LENS, eos=finished)], tok.pad_token_id, enc_dec
    )
    out = sequence_logprobs(model, **batch)
    return out.sum_logp.item(), out.n_tokens.item()


def batch_logp(model, batch):
    """([B, K] summed log-probabilities, [B, K] scored tokens) of a collated batch."""
    with torch.no_grad():
        out = sequence_logprobs(model, batch["input_ids"], batch["attention_mask"], batch["labels"])
    return out.sum_logp.view(batch["mask"].shape), out.n_tokens.view(batch["mask"].shape)


@pytest.mark.parametrize("padding_side", ["right", "left"])
def test_pairwise_batches_score_like_single_pairs(setup_, tok, padding_side):
    family, model, ps = setup_
    if family == "t5" and padding_side == "left":
        pytest.skip("encoder-decoder inputs are always right padded")
    dm = module(ps, tok, family, ("chosen", "rejected"))
    dm.collator.padding_side = padding_side  # a collator property: sequence_logprobs handles either side
    rows = ps.pairwise.to_list()
    seen = 0
    for batch in dm.loader(dm.train_dataset):
        lp, n_tokens = batch_logp(model, batch)
        for b in range(lp.shape[0]):
            r = rows[seen + b]
            expected, n = zip(
                *(
                    alone(model, tok, family == "t5", r["prompt"], r[f"{c}_ids"], r[f"{c}_finished"])
                    for c in ("chosen", "rejected")
                )
            )
            assert n_tokens[b].tolist() == list(n)
            assert_sums_close(lp[b], expected, n)
            assert batch["quality"][b].tolist() == [r["chosen_score"], r["rejected_score"]]
        # the reference log-probs precomputed at pair building are the initial student's own
        assert_sums_close(batch["ref_logp"], lp, n_tokens)
        assert batch["mask"].all()
        seen += lp.shape[0]
    assert seen == len(rows)


def test_listwise_batches_pad_ragged_candidates(setup_, tok):
    family, model, ps = setup_
    dm = module(ps, tok, family, ("candidates",))
    rows = ps.listwise.to_list()
    sizes = [len(r["candidates"]) for r in rows]
    assert len(set(sizes)) > 1
    seen = 0
    for batch in dm.loader(dm.train_dataset):
        lp, n_tokens = batch_logp(model, batch)
        chunk = rows[seen : seen + lp.shape[0]]
        assert lp.shape[1] == max(len(r["candidates"]) for r in chunk)  # K fixed per batch
        assert batch["mask"].tolist() == [[k < len(r["candidates"]) for k in range(lp.shape[1])] for r in chunk]
        assert batch["n_teacher"].tolist() == [r["n_teacher"] for r in chunk]
        for b, r in enumerate(chunk):
            expected, n = zip(
                *(
                    alone(model, tok, family == "t5", r["prompt"], c, f)
                    for c, f in zip(r["candidates_ids"], r["candidates_finished"])
                )
            )
            assert_sums_close(lp[b, : len(expected)], expected, n)
            assert batch["quality"][b, : len(expected)].tolist() == r["scores"]
        assert_sums_close(batch["ref_logp"][batch["mask"]], lp[batch["mask"]], n_tokens[batch["mask"]])
        assert torch.isfinite(lp).all()
        seen += lp.shape[0]
    assert seen == len(rows)


def test_single_column_inputs_serve_each_text_once(setup_, tok):
    family, _, ps = setup_
    chosen = module(ps, tok, family, ("chosen",)).train_dataset
    assert len(chosen) == len({(r["id"], r["chosen"]) for r in ps.pairwise}) < len(ps.pairwise)
    ref = module(ps, tok, family, ("reference",))
    assert sorted(ref.train_dataset["id"]) == sorted(set(ps.pairwise["id"]))
    batch = next(iter(ref.loader(ref.train_dataset)))
    first = {r["id"]: r["ref_reference_logp"] for r in ps.pairwise}
    assert batch["ref_logp"].shape[1] == 1 and "quality" not in batch
    assert batch["ref_logp"][:, 0].tolist() == pytest.approx([first[i] for i in ref.train_dataset["id"][:3]])


def test_validation_holds_out_whole_prompts(setup_, tok):
    family, _, ps = setup_
    dm = module(ps, tok, family, ("chosen", "rejected"), val_size=5, seed=3)
    train, val = set(dm.train_dataset["id"]), set(dm.val_dataset["id"])
    assert val and not train & val and len(dm.train_dataset) + len(dm.val_dataset) == len(ps.pairwise)
    assert len(dm.val_dataset) >= 5
    again = module(ps, tok, family, ("chosen", "rejected"), val_size=5, seed=3)
    assert set(again.val_dataset["id"]) == val


def test_val_ids_rule():
    ids = [f"q{i // 3}" for i in range(90)]  # 30 prompts, 3 rows each
    held = val_ids(ids, 10, seed=0)
    covered = sum(i in held for i in ids)
    assert 10 <= covered < 13  # whole prompts, stopping as soon as 10 rows are covered
    assert val_ids(ids, 10, seed=0) == held and val_ids(ids, 10, seed=1) != held
    assert sum(i in val_ids(ids, 0.5, seed=0) for i in ids) in (45, 46, 47)
    assert val_ids(list(reversed(ids)), 10, seed=0) == held  # order of rows does not matter
    with pytest.raises(ValueError, match="val_size"):
        val_ids(ids, 1.5, seed=0)


def test_tokenized_cache_is_keyed_and_reused(setup_, tok, monkeypatch):
    family, _, ps = setup_
    first = module(ps, tok, family, ("chosen", "rejected"))
    from datasets import Dataset

    monkeypatch.setattr(Dataset, "map", lambda *a, **k: pytest.fail("re-tokenized"))
    again = module(ps, tok, family, ("chosen", "rejected"))
    assert again.cache_dir == first.cache_dir and len(again.train_dataset) == len(first.train_dataset)
    other = PairDataModule(
        ps,
        tok,
        family == "t5",
        ("chosen", "rejected"),
        batch_size=3,
        max_prompt_tokens=64,
        max_completion_tokens=4,
        val_size=0,
    )
    assert other.cache_dir != first.cache_dir
    with pytest.raises(RuntimeError, match="prepare_data"):
        other.setup("fit")


def test_bad_inputs_are_rejected(setup_, tok):
    family, _, ps = setup_
    with pytest.raises(ValueError, match="inputs"):
        PairDataModule(ps, tok, family == "t5", ("candidates", "chosen"))
    with pytest.raises(ValueError, match="inputs: expected columns"):
        module(ps, tok, family, ("chosen", "nonexistent"))
    # ref_logp scored sequences cut at 6 completion tokens: served cut at 5 they belong to others
    with pytest.raises(
        ValueError,
        match=r"^distill.datamodule.pairs.max_completion_tokens: expected 6, the length "
        r"the pair set's ref_logp were computed with \(.*\), got 5$",
    ):
        module(ps, tok, family, ("chosen", "rejected"), max_completion_tokens=5)


def test_lightning_runs_prepare_setup_and_serves_every_row_once(setup_, tok, tmp_path):
    import lightning as L

    family, model, ps = setup_

    class Probe(L.LightningModule):
        def __init__(self):
            super().__init__()
            self.w = torch.nn.Parameter(torch.zeros(()))
            self.seen = {"train": 0, "val": 0}

        def training_step(self, batch, i):
            self.seen["train"] += batch["mask"].shape[0]
            return (self.w - 1) ** 2

        def validation_step(self, batch, i):
            self.seen["val"] += batch["mask"].shape[0]

        def configure_optimizers(self):
            return torch.optim.SGD(self.parameters(), lr=0.1)

    dm = PairDataModule(ps, tok, family == "t5", ("chosen", "rejected"), batch_size=4, val_size=4, seed=1, **LENS)
    probe = Probe()
    L.Trainer(
        max_epochs=1,
        logger=False,
        enable_checkpointing=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        num_sanity_val_steps=0,
        default_root_dir=tmp_path,
    ).fit(probe, dm)
    assert probe.seen == {"train": len(dm.train_dataset), "val": len(dm.val_dataset)}
    assert len(dm.train_dataset) + len(dm.val_dataset) == len(ps.pairwise)
