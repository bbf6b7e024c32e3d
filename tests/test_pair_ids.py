"""Pairs carry what was generated: in every family, the token ids that the pair data module serves
(and every loss scores) are the ids the sampler produced, with an EOS after a sample only when it
ended with one. A sample cut at the budget contributes no EOS term to any loss.

The models are tiny and random, with their EOS logit raised (a forward hook on the output layer)
so that some samples end within the 6-token budget and some are cut. Their samples are random
token strings, so decoding and re-encoding a sample often gives other ids (the BPE merges it
differently): what the pairs store must be the generated ids, not the text's.
"""

from __future__ import annotations

import pytest
import torch
from helpers.configs import loss_config, loss_names
from helpers.pairs import FakeTask, pairs_cfg, prompt_dataset, tiny_llama, tiny_t5, train_tokenizer

import plad.backends.hf_sampling as generation
from plad.data.pair_datamodule import PairDataModule
from plad.models.logprobs import IGNORE_INDEX, _first_label_position, is_encoder_decoder
from plad.models.ref import ModelRef
from plad.pairs.build import obtain_pairs
from plad.training.modules import DistillModule, build_loss

FAMILIES = ("llama", "t5", "gpt_neo")
BUDGET = 6
TEACHER_SCORER = {"_target_": "plad.pairs.quality.TeacherLikelihoodScorer"}  # quality for margin


def tiny_gpt_neo(tokenizer, seed: int):
    from transformers import GPTNeoConfig, GPTNeoForCausalLM

    torch.manual_seed(seed)
    cfg = GPTNeoConfig(
        vocab_size=len(tokenizer),
        hidden_size=32,
        intermediate_size=64,
        num_layers=2,
        num_heads=4,
        attention_types=[[["global"], 2]],
        max_position_embeddings=512,
        bos_token_id=tokenizer.bos_token_id,
        eos_token_id=tokenizer.eos_token_id,
        pad_token_id=tokenizer.pad_token_id,
    )
    return GPTNeoForCausalLM(cfg).eval()


def eos_raised(model, eos: int, bias: float = 3.8):
    """p(EOS) ~ 0.12 per step for these near-uniform models: about half the samples end in 6 tokens."""

    def hook(module, inputs, output):
        output = output.clone()
        output[..., eos] += bias
        return output

    model.get_output_embeddings().register_forward_hook(hook)
    return model


def build_model(family: str, tok, seed: int):
    model = {"llama": tiny_llama, "t5": tiny_t5, "gpt_neo": tiny_gpt_neo}[family](tok, seed=seed)
    return eos_raised(model, tok.eos_token_id)


@pytest.fixture(scope="module", params=FAMILIES)
def built(request, tmp_path_factory):
    """(family, tokenizer, pair set, {(role, prompt): [(ids, finished) generated]}, saved student and
    teacher dirs). gpt_neo's tokenizer pads with its EOS, as GPT-style tokenizers do."""
    family = request.param
    tok = train_tokenizer()
    if family == "gpt_neo":
        tok.pad_token = tok.eos_token
    teacher, student = build_model(family, tok, 1), build_model(family, tok, 2)
    generated: dict[tuple[str, str], list[tuple[list[int], bool]]] = {}
    real = generation.generate

    def recording(model, tokenizer, prompts, **kw):
        out = real(model, tokenizer, prompts, **kw)
        role = kw["desc"].split()[0]
        for p, ids, ends in zip(prompts, out.token_ids, out.finished):
            generated.setdefault((role, p), []).extend(zip(ids, ends))
        return out

    root = tmp_path_factory.mktemp(f"ids-{family}")
    with pytest.MonkeyPatch.context() as m:
        m.setattr(generation, "generate", recording)
        ps = obtain_pairs(
            pairs_cfg(n_student=2, scorer=TEACHER_SCORER),
            prompt_dataset(6, with_reference=False),
            FakeTask(),
            ModelRef.in_memory(teacher, tok, "teacher"),
            ModelRef.in_memory(student, tok, "student"),
            root,
            64,
            BUDGET,
            0,
        )
    dirs = {}
    for role, model in (("student", student), ("teacher", teacher)):
        dirs[role] = root / role
        model.save_pretrained(dirs[role])
        tok.save_pretrained(dirs[role])
    return family, tok, ps, generated, dirs


def data_module(ps, tok, family: str, inputs: tuple[str, ...]) -> PairDataModule:
    dm = PairDataModule(
        ps,
        tok,
        encoder_decoder=family == "t5",
        inputs=inputs,
        batch_size=4,
        max_prompt_tokens=64,
        max_completion_tokens=BUDGET,
        val_size=0,
        seed=0,
    )
    dm.prepare_data()
    dm.setup("fit")
    return dm


def targets(batch: dict, row: int) -> list[int]:
    """The scored token ids of one sequence of a collated batch."""
    labels = batch["labels"][row]
    return labels[labels != IGNORE_INDEX].tolist()


def test_the_module_scores_exactly_the_generated_ids_and_an_eos_only_after_a_finished_sample(built):
    family, tok, ps, generated, _ = built
    rows = ps.pairwise.to_list()
    seen = {True: 0, False: 0}
    retokenized_differently = 0
    for r in rows:
        for col, role in (("chosen", "teacher"), ("rejected", "student")):
            # the pair set stores one of the samples generation produced, as it was produced
            assert (r[f"{col}_ids"], r[f"{col}_finished"]) in generated[role, r["prompt"]]
            retokenized_differently += tok(r[col], add_special_tokens=False)["input_ids"] != r[f"{col}_ids"]
    dm = data_module(ps, tok, family, ("chosen", "rejected"))
    n = 0
    for batch in dm.loader(dm.train_dataset):
        for b in range(batch["mask"].shape[0]):
            r = rows[n]
            for k, col in enumerate(("chosen", "rejected")):
                ends = r[f"{col}_finished"]
                assert targets(batch, 2 * b + k) == r[f"{col}_ids"] + [tok.eos_token_id] * ends, (family, col)
                seen[ends] += 1
            n += 1
    assert n == len(rows)
    assert seen[True] and seen[False], seen  # both kinds were checked
    assert retokenized_differently, "every sample re-encoded to its own ids: the check above proves nothing"


@pytest.mark.parametrize("family", FAMILIES)
def test_a_row_is_encoded_with_an_eos_exactly_where_its_sample_ended(family):
    """Each sequence of a pair row, with room in the budget (a cut sample of a pipeline has exactly
    the budget's ids, so truncation there would hide a wrongly appended EOS)."""
    from plad.data.pair_datamodule import _encode

    tok = train_tokenizer()
    row = {
        "prompt": "Anonymize: Bob",
        "chosen_ids": [40, 41, 42],
        "chosen_finished": True,
        "rejected_ids": [50, 51],
        "rejected_finished": False,
        "reference": "reference text",
    }
    out = _encode(
        row,
        tokenizer=tok,
        inputs=("chosen", "rejected", "reference"),
        encoder_decoder=family == "t5",
        max_prompt_tokens=32,
        max_completion_tokens=10,
        ref_cols=None,
        quality_cols=None,
    )
    got = [[t for t in labels if t != IGNORE_INDEX] for labels in out["labels"]]
    eos = tok.eos_token_id
    assert got == [[40, 41, 42, eos], [50, 51], tok("reference text", add_special_tokens=False)["input_ids"] + [eos]]


def _losses() -> list[str]:
    """Every shipped loss that trains on the pair set's samples (not on labeled or oracle references)."""
    return [
        name
        for name in loss_names()
        if (loss := build_loss(loss_config(name))).data_source == "pairs" and loss.inputs != ("reference",)
    ]


def _expected(row: dict, inputs: tuple[str, ...]) -> list[tuple[list[int], bool]]:
    """(generated ids, ended with EOS) of each sequence of one example, from the pair table."""
    if inputs == ("candidates",):
        return list(zip(row["candidates_ids"], row["candidates_finished"]))
    return [(row[f"{c}_ids"], row[f"{c}_finished"]) for c in inputs]


@pytest.mark.parametrize("loss_name", _losses())
def test_a_cut_sample_contributes_no_eos_term_to_any_loss(built, loss_name):
    """Its targets hold no EOS, and the loss's gradient on the logits after its last token (where an
    EOS would be predicted) is zero; after a finished y+'s last token it is not (its EOS is trained)."""
    family, tok, ps, _, dirs = built
    module = DistillModule(
        str(dirs["student"]), loss_config(loss_name), lr=1e-3, max_steps=1, teacher_path=str(dirs["teacher"])
    )
    inputs = module.loss_fn.inputs
    dm = data_module(ps, tok, family, inputs)
    source = dm._source().to_list()  # the examples in the order the module serves them (val_size=0)
    captured = []

    def keep_grad(mod, args, output):
        output.retain_grad()
        captured.append(output)

    module.student.get_output_embeddings().register_forward_hook(keep_grad)
    decoder_only = not is_encoder_decoder(module.student)
    checked, n = {"cut": 0, "finished y+": 0}, 0
    for batch in dm.loader(dm.train_dataset):
        captured.clear()
        module.loss_fn(module.scores(batch))[0].backward()
        grad, K = captured[0].grad, batch["mask"].shape[1]  # grad: [B*K, kept positions, V]
        start = _first_label_position(batch["labels"]) - 1  # the input position of the first kept logit
        for b in range(batch["mask"].shape[0]):
            for k, (ids, ends) in enumerate(_expected(source[n + b], inputs)):
                seq = b * K + k
                assert targets(batch, seq) == ids + [tok.eos_token_id] * ends, (loss_name, seq)
                if not decoder_only:
                    continue  # decoder positions are the targets: none predicts past a cut sample
                last = int(batch["attention_mask"][seq].nonzero().max()) - ends  # its last generated token
                g = grad[seq, last - start].abs().sum().item()
                if not ends:
                    assert g == 0.0, (loss_name, seq, g)
                    checked["cut"] += 1
                elif k == 0:
                    assert g > 0.0, (loss_name, seq)
                    checked["finished y+"] += 1
        n += batch["mask"].shape[0]
    assert n == len(source)
    if decoder_only:
        assert checked["cut"] and checked["finished y+"], checked


def test_teacher_text_is_tokenised_once_by_the_student_when_its_ids_are_not_the_students(tmp_path):
    """A teacher with another tokenizer, and a black-box teacher file: their texts become the
    student's ids once, at pair building; a file's outputs ended, a model's keep their flag."""
    import json

    student_tok, teacher_tok = train_tokenizer(), train_tokenizer(vocab_size=300)
    student, teacher = build_model("llama", student_tok, 2), build_model("llama", teacher_tok, 1)
    prompts = prompt_dataset(4, with_reference=False)
    file = tmp_path / "teacher.jsonl"
    file.write_text("".join(json.dumps({"id": f"p{i}", "output": f"good answer {i}"}) + "\n" for i in range(4)))
    for name, source, ref in (
        ("model", None, ModelRef.in_memory(teacher, teacher_tok, "teacher")),
        ("file", str(file), ModelRef(None, "bb", loader=lambda: pytest.fail("teacher loaded"))),
    ):
        ps = obtain_pairs(
            pairs_cfg(n_student=1, teacher_outputs=source),
            prompts,
            FakeTask(),
            ref,
            ModelRef.in_memory(student, student_tok, "student"),
            tmp_path / name,
            64,
            BUDGET,
            0,
        )
        rows = ps.pairwise.to_list()
        assert rows
        for r in rows:
            assert r["chosen_ids"] == student_tok(r["chosen"], add_special_tokens=False)["input_ids"], name
        if name == "file":
            assert all(r["chosen_finished"] for r in rows)


def test_cut_samples_drop_leaves_out_pairs_and_candidates_with_a_cut_sample_and_counts_them():
    from plad.pairs.rows import Sample, build_rows

    ended, cut = Sample("a b", (5, 6), True), Sample("c d e", (7, 8, 9), False)
    other, late = Sample("x", (10,), True), Sample("y z", (11, 12), False)
    examples = [{"id": "p0", "prompt": "P0"}, {"id": "p1", "prompt": "P1"}]
    teacher, student = [[ended], [late]], [[cut, other], [other]]

    def logp(prompts, completions, finished):
        return [-float(len(c)) - 0.5 * f for c, f in zip(completions, finished)]

    def rows(mode):
        return build_rows(
            examples,
            teacher,
            student,
            listwise=True,
            has_reference=False,
            filter_by_score=False,
            score_fn=None,
            logp_fn=logp,
            cut_samples=mode,
        )

    (kept, kept_stats), (dropped, dropped_stats) = rows("keep"), rows("drop")
    assert [(r["chosen"], r["rejected"]) for r in kept["pairwise"]] == [("a b", "c d e"), ("a b", "x"), ("y z", "x")]
    assert [(r["chosen"], r["rejected"]) for r in dropped["pairwise"]] == [("a b", "x")]
    assert dropped_stats["pairwise"]["dropped"] == {
        **kept_stats["pairwise"]["dropped"],
        "cut_chosen": 1,
        "cut_rejected": 1,
    }
    assert [r["candidates"] for r in dropped["listwise"]] == [["a b", "x"]]
    assert (
        dropped_stats["listwise"]["dropped_candidates"]["cut"] == 2
        and dropped_stats["listwise"]["dropped_prompts"] == 1
    )
    assert kept_stats["cut"] == {"teacher": 1, "student": 1}
    # each sequence's reference is the log-likelihood of its own ids, with an EOS only if it ended
    first = kept["pairwise"][0]
    assert (first["ref_chosen_logp"], first["ref_rejected_logp"]) == (-2.5, -3.0)
    assert (first["chosen_ids"], first["chosen_finished"], first["rejected_ids"], first["rejected_finished"]) == (
        [5, 6],
        True,
        [7, 8, 9],
        False,
    )
    with pytest.raises(ValueError, match=r"^pairs.cut_samples: expected one of \['keep', 'drop'\], got 'cut'$"):
        rows("cut")
