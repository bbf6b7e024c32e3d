"""``distill.teacher_logits: topk``: the teacher's top-k log-probs cached once over the pair set and
served with the batches (plad.training.teacher_topk). With k = the vocabulary size a distillation
equals the online one; with a small k the rebuilt teacher distribution holds exactly the teacher's
top-k and the target token; the cache is reused; the module holds no teacher; bad values fail in
one line."""

from __future__ import annotations

from pathlib import Path

import lightning as L
import pytest
import torch
from helpers.configs import CONFIGS, loss_config
from helpers.pairs import saved_pair_set
from omegaconf import OmegaConf

import plad.models.build
import plad.training.teacher_topk as topk_mod
from plad.checks import InputError
from plad.data.pair_datamodule import PairDataModule
from plad.models.logprobs import IGNORE_INDEX, sequence_logprobs
from plad.training.modules import DistillModule
from plad.training.teacher_topk import FILL, check_teacher_logits, obtain_teacher_topk

DPKD = {"_target_": "plad.losses.dpkd.DPKDLoss", "loss_type": "dpkd", "beta": 1.0, "lr": 1.0}


@pytest.fixture(scope="module")
def saved(tmp_path_factory):
    root = tmp_path_factory.mktemp("topk")
    return saved_pair_set(root, 12)  # student, teacher, pair set (vocabulary 320)


def _cfg(loss, mode: str, k: int, out: Path):
    """``train.yaml`` as a run composes it: the pair set's lengths, 4 steps, validation at 2 and 4, SGD."""
    from hydra import compose, initialize_config_dir

    with initialize_config_dir(config_dir=str(CONFIGS), version_base="1.3"):
        cfg = compose(
            "train",
            overrides=[
                "callbacks=none",
                "task.max_prompt_tokens=32",
                "task.max_new_tokens=8",
                "distill.max_steps=4",
                "distill.batch_size=4",
                "distill.val_size=4",
                "distill.val_check_interval=2",
                "distill.warmup_steps=0",
                f"distill.teacher_logits={mode}",
                f"distill.topk={k}",
                "+trainer.enable_progress_bar=false",
                f"paths.output_dir={out}",
            ],
        )
    cfg.loss = loss
    cfg.optim.optimizer = {"_target_": "torch.optim.SGD", "_partial_": True}
    return cfg


def _fit(saved, loss, mode: str, k: int, out: Path):
    from plad.training.trainer import fit_distill

    student, teacher, pairs = saved
    module, trainer = fit_distill(_cfg(loss, mode, k, out), student, teacher, pairs, [], out)
    metrics = {key: float(v) for key, v in trainer.callback_metrics.items()}
    return module, metrics


@pytest.mark.parametrize("name", ["kd", "dpkd"])
def test_topk_with_k_the_vocabulary_size_trains_like_online(saved, tmp_path, name: str) -> None:
    """The acceptance test: every step's teacher distribution is the cached one, so the train and
    validation metrics and the weights match the online run's to float tolerance. Plain SGD: AdamW
    divides each gradient element by its own scale, so an element whose gradient is float noise takes
    a full step of random sign in either run; SGD keeps updates proportional to the gradients compared."""
    loss = {**OmegaConf.to_container(loss_config("kd")), "lr": 1.0} if name == "kd" else DPKD
    online, m_online = _fit(saved, loss, "online", 20, tmp_path / "online")
    vocab = online._teacher[0].get_output_embeddings().weight.shape[0]
    topk, m_topk = _fit(saved, loss, "topk", vocab, tmp_path / "topk")
    assert not topk._teacher and online._teacher
    assert {"train/loss", "val/loss"} <= set(m_online) and set(m_online) == set(m_topk)
    for key, value in m_online.items():
        assert m_topk[key] == pytest.approx(value, rel=1e-5, abs=1e-6), key
    for (key, p), q in zip(online.student.named_parameters(), topk.student.parameters()):
        torch.testing.assert_close(q, p, rtol=1e-5, atol=1e-6, msg=key)
    first, _ = plad.models.build.load_saved(saved[0])
    moved = max((p - q).abs().max().item() for p, q in zip(online.student.parameters(), first.parameters()))
    assert moved > 1e-3  # the runs trained: equal weights are not equal initial weights


@pytest.mark.parametrize("family", ["llama", "t5"])
def test_the_collated_cache_rebuilds_the_teachers_log_probs_for_every_family_and_ragged_rows(family: str) -> None:
    """Decoder-only (shifted targets) and encoder-decoder (labels as targets) layouts, and a row with
    fewer sequences than the batch's K (the collator repeats its first sequence as a dummy)."""
    from helpers.pairs import PROMPTS, tiny_llama, tiny_t5, train_tokenizer

    from plad.data.pair_datamodule import PairCollator
    from plad.models.encoding import encode_example
    from plad.training.teacher_topk import dense_teacher_logits, teacher_topk_table

    tok = train_tokenizer()
    model = (tiny_llama if family == "llama" else tiny_t5)(tok, seed=3)
    enc_dec = family == "t5"
    texts = [["good words here", "bad"], ["another completion of five"], ["x", "longer completion text y"]]
    rows = []
    for prompt, completions in zip(PROMPTS, texts):
        feats = [encode_example(tok, prompt, c, enc_dec, 32, 8) for c in completions]
        rows.append({"input_ids": [f["input_ids"] for f in feats], "labels": [f["labels"] for f in feats]})
    vocab = model.get_output_embeddings().weight.shape[0]
    table = teacher_topk_table(
        model,
        [r["input_ids"] for r in rows],
        [r["labels"] for r in rows],
        tok.pad_token_id,
        enc_dec,
        vocab,
        batch_size=2,
    )
    batch = PairCollator(tok.pad_token_id, enc_dec)([{**r, **table[i]} for i, r in enumerate(rows)])
    assert batch["mask"].tolist() == [[True, True], [True, False], [True, True]]
    with torch.no_grad():
        online = sequence_logprobs(model, batch["input_ids"], batch["attention_mask"], batch["labels"], True)
    dense = dense_teacher_logits(batch, online.labels, vocab)
    mask = online.labels != IGNORE_INDEX
    torch.testing.assert_close(dense[mask], torch.log_softmax(online.logits[mask].float(), -1), rtol=1e-5, atol=1e-5)
    assert torch.all(dense[~mask] == FILL)


def _module_and_batch(saved, k: int):
    """A topk DistillModule (kd), its data module served from the cache, and one training batch."""
    student, teacher, pairs = saved
    module = DistillModule(
        str(student), loss_config("kd"), lr=1e-3, max_steps=1, teacher_path=str(teacher), teacher_logits="topk"
    )
    dm = PairDataModule(
        pairs,
        module.tokenizer,
        False,
        inputs=("chosen", "rejected"),
        batch_size=4,
        max_prompt_tokens=32,
        max_completion_tokens=8,
        val_size=4,
    )
    dm.teacher_topk = obtain_teacher_topk(dm, teacher, k, "32-true", torch.device("cpu"), batch_size=5)
    dm.setup("fit")
    return module, dm, next(iter(dm.train_dataloader()))


def test_small_k_keeps_the_teachers_top_k_and_target_token_and_fills_the_rest(saved, tmp_path) -> None:
    module, _, batch = _module_and_batch(saved, 4)
    scores = module.scores(batch)
    teacher, _ = plad.models.build.load_saved(saved[1])
    with torch.no_grad():
        online = sequence_logprobs(teacher, batch["input_ids"], batch["attention_mask"], batch["labels"], True)
    assert torch.equal(online.labels, scores.labels)
    mask = scores.labels != IGNORE_INDEX
    rebuilt, full = scores.teacher_logits[mask], torch.log_softmax(online.logits[mask].float(), -1)  # [M, V]
    kept = torch.zeros_like(full, dtype=torch.bool)
    kept.scatter_(1, full.topk(4, -1).indices, True)
    kept.scatter_(1, scores.labels[mask].unsqueeze(1), True)
    assert mask.sum() > 10 and set(kept.sum(-1).tolist()) <= {4, 5} and (kept.sum(-1) == 5).any()
    torch.testing.assert_close(rebuilt[kept], full[kept], rtol=1e-5, atol=1e-6)
    assert torch.all(rebuilt[~kept] == FILL)
    assert torch.all(scores.teacher_logits[~mask] == FILL)
    loss, _ = module.loss_fn(scores)  # finite: FILL is not -inf
    assert torch.isfinite(loss)


def test_the_cache_is_reused_and_keyed_by_k(saved, tmp_path, monkeypatch) -> None:
    student, teacher, pairs = saved
    tok = plad.models.build.load_saved(student)[1]
    dm = PairDataModule(
        pairs, tok, False, inputs=("chosen",), batch_size=4, max_prompt_tokens=32, max_completion_tokens=8, val_size=4
    )
    runs = []
    real = topk_mod.teacher_topk_table
    monkeypatch.setattr(topk_mod, "teacher_topk_table", lambda *a, **kw: runs.append(a[5]) or real(*a, **kw))
    first = obtain_teacher_topk(dm, teacher, 3, "32-true", torch.device("cpu"))
    assert runs == [3] and first.parent == pairs / "teacher_topk"

    def no_teacher(*args, **kwargs):
        raise AssertionError("the teacher was loaded although its top-k is cached")

    monkeypatch.setattr(plad.models.build, "load_saved", no_teacher)
    assert obtain_teacher_topk(dm, teacher, 3, "32-true", torch.device("cpu")) == first
    assert runs == [3]
    monkeypatch.undo()
    monkeypatch.setattr(topk_mod, "teacher_topk_table", lambda *a, **kw: runs.append(a[5]) or real(*a, **kw))
    assert obtain_teacher_topk(dm, teacher, 5, "32-true", torch.device("cpu")) != first  # another k: another entry
    assert runs == [3, 5]


def test_with_topk_the_module_loads_and_holds_no_teacher(saved, monkeypatch) -> None:
    student, teacher, _ = saved
    loaded = []
    real = plad.models.build.load_saved
    monkeypatch.setattr(plad.models.build, "load_saved", lambda p: loaded.append(Path(p)) or real(p))
    module = DistillModule(
        str(student), loss_config("kd"), lr=1e-3, max_steps=1, teacher_path=str(teacher), teacher_logits="topk"
    )
    assert loaded == [student] and module._teacher == [] and module._teacher_vocab == 320
    assert sum(p.numel() for p in module.parameters()) == sum(p.numel() for p in module.student.parameters())
    # a black-box loss ignores the setting: no teacher, no top-k
    ranking = DistillModule(str(student), loss_config("ranking"), lr=1e-3, max_steps=1, teacher_logits="topk")
    assert ranking._teacher == [] and loaded == [student, student]


@pytest.mark.parametrize(
    "mode,k,message",
    [
        ("cached", 20, "distill.teacher_logits: expected online or topk, got 'cached'"),
        ("topk", 0, "distill.topk: expected a positive integer, got 0"),
        ("topk", True, "distill.topk: expected a positive integer, got True"),
    ],
)
def test_bad_values_fail_in_one_line_naming_the_field(saved, tmp_path, mode, k, message) -> None:
    with pytest.raises(InputError, match=f"^{message}$"):
        check_teacher_logits(mode, k)
    with pytest.raises(InputError, match=f"^{message}$"):  # a run fails before any stage
        from plad.stages.preflight import preflight

        cfg = _cfg(loss_config("kd"), mode, k, tmp_path)
        cfg.paths.log_dir = str(tmp_path / "logs")
        preflight(cfg)
    if k == 20:
        with pytest.raises(InputError, match=f"^{message}$"):
            DistillModule(str(saved[0]), loss_config("kd"), lr=1e-3, max_steps=1, teacher_logits=mode)


def test_a_black_box_loss_ignores_topk(saved, tmp_path) -> None:
    """teacher_logits=topk with a black-box loss: no cache is built, training runs as before."""
    L.seed_everything(0)
    cfg = _cfg(loss_config("ranking"), "topk", 4, tmp_path)
    from plad.training.trainer import fit_distill

    before = set((saved[2]).glob("teacher_topk/*"))
    module, trainer = fit_distill(cfg, saved[0], saved[1], saved[2], [], tmp_path)
    assert trainer.global_step == 4 and module._teacher == []
    assert set((saved[2]).glob("teacher_topk/*")) == before
