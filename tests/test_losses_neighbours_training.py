"""The neighbouring losses inside the pipeline: white-box losses refuse a teacher with another
tokenizer in one line (from the config, and when the module loads the teacher), PLaD's black-box
losses train on pairs whose teacher has another tokenizer, and TAID's schedule gets the training
progress, does not move on validation and resumes from a checkpoint."""

from __future__ import annotations

from pathlib import Path

import lightning as L
import pytest
import torch
from helpers.configs import CONFIGS, loss_config, loss_names
from helpers.pairs import FakeTask, pairs_cfg, prompt_dataset, saved_pair_set, tiny_llama, train_tokenizer
from hydra.utils import get_class

from plad.checks import InputError
from plad.data.pair_datamodule import PairDataModule
from plad.losses import DPKDLoss, GKDLoss, SequenceScores, SkewKLLoss, TAIDLoss
from plad.models.ref import ModelRef
from plad.pairs.build import obtain_pairs
from plad.training.modules import DistillModule, build_loss

NEIGHBOURS = {"gkd": GKDLoss, "skew_kl": SkewKLLoss, "taid": TAIDLoss, "dpkd": DPKDLoss}
ONE_TOKENIZER = "needs teacher and student to share a tokenizer"


def test_the_new_configs_build_their_losses_as_white_box_baselines_next_to_kd() -> None:
    for name, cls in NEIGHBOURS.items():
        loss = build_loss(loss_config(name))
        assert type(loss) is cls and loss.name == name and loss.needs_teacher, name
        assert loss.kind == "baseline" and 30 < loss.order < 40 and loss.reg_weight == 0.0, name
        assert loss_config(name).lr == 1.0e-3, name
    assert len({cls.order for cls in NEIGHBOURS.values()}) == len(NEIGHBOURS)


@pytest.mark.parametrize("name", sorted(NEIGHBOURS))
def test_white_box_losses_refuse_another_tokenizer_in_one_line(name: str) -> None:
    from types import SimpleNamespace

    cls = NEIGHBOURS[name]
    tok = lambda vocab: SimpleNamespace(get_vocab=lambda: dict(vocab))
    assert cls.check_compatible(tok({"a": 0, "b": 1}), tok({"b": 1, "a": 0})) == 2
    with pytest.raises(InputError, match=f"^loss={name} {ONE_TOKENIZER}: ") as e:
        cls.check_compatible(tok({"a": 0, "b": 1}), tok({"a": 1, "b": 0}))
    assert "\n" not in str(e.value)
    # and from logits of another width (vocab_size cuts an embedding padded wider)
    g = torch.Generator().manual_seed(0)
    student, teacher = torch.randn(2, 3, 8, generator=g), torch.randn(2, 3, 10, generator=g)
    k = len(cls.inputs)  # 2 sequences: one example of a pair, or two of y+ alone
    s = SequenceScores(
        logp=torch.zeros(2 // k, k),
        n_tokens=torch.full((2 // k, k), 3),
        logits=student,
        teacher_logits=teacher,
        labels=torch.ones(2, 3, dtype=torch.long),
    )
    with pytest.raises(InputError, match=f"^loss={name} {ONE_TOKENIZER}: logits have vocab sizes 10"):
        cls()(s)
    assert torch.isfinite(cls(vocab_size=8)(s)[0])


@pytest.mark.parametrize("name", sorted(NEIGHBOURS))
def test_preflight_refuses_a_white_box_loss_whose_teacher_has_another_tokenizer(name: str) -> None:
    from hydra import compose, initialize_config_dir

    from plad.stages.preflight import check_white_box

    with initialize_config_dir(config_dir=str(CONFIGS), version_base="1.3"):
        cfg = compose("train", overrides=[f"loss={name}", "model.teacher.pretrained=some/teacher"])
    with pytest.raises(InputError, match=f"{NEIGHBOURS[name].__name__} {ONE_TOKENIZER}") as e:
        check_white_box(cfg, get_class(cfg.loss._target_))
    assert "\n" not in str(e.value)


# --------------------------------------------------------------------------- two tokenizers
@pytest.fixture(scope="module")
def two_tokenizers(tmp_path_factory):
    """Pairs whose teacher has its own tokenizer (another BPE vocabulary); saved student and teacher."""
    root = tmp_path_factory.mktemp("two-tokenizers")
    student_tok, teacher_tok = train_tokenizer(), train_tokenizer(vocab_size=300)
    assert student_tok.get_vocab() != teacher_tok.get_vocab()
    student, teacher = tiny_llama(student_tok, seed=2), tiny_llama(teacher_tok, seed=1)
    ps = obtain_pairs(
        pairs_cfg(n_student=2, scorer={"_target_": "plad.pairs.quality.TeacherLikelihoodScorer"}),
        prompt_dataset(8, with_reference=False),
        FakeTask(),
        ModelRef.in_memory(teacher, teacher_tok, "teacher"),
        ModelRef.in_memory(student, student_tok, "student"),
        root / "cache",
        64,
        6,
        0,
    )
    for name, model, tok in (("student", student, student_tok), ("teacher", teacher, teacher_tok)):
        model.save_pretrained(root / name)
        tok.save_pretrained(root / name)
    return root / "student", root / "teacher", ps


def _pair_losses() -> list[str]:
    """Every shipped loss that trains on the pair set's samples."""
    return [
        name
        for name in loss_names()
        if (cls := get_class(loss_config(name)._target_)).data_source == "pairs" and not cls.needs_oracle_references
    ]


@pytest.mark.parametrize("name", _pair_losses())
def test_with_two_tokenizers_black_box_losses_train_and_white_box_ones_refuse(two_tokenizers, name: str) -> None:
    student_dir, teacher_dir, ps = two_tokenizers
    cls = get_class(loss_config(name)._target_)
    if cls.needs_teacher:  # named by its class's config name (gkd_on_policy is gkd + an on-policy share)
        with pytest.raises(InputError, match=f"^loss={cls.name} {ONE_TOKENIZER}: vocabularies differ") as e:
            DistillModule(str(student_dir), loss_config(name), lr=1e-3, max_steps=1, teacher_path=str(teacher_dir))
        assert "\n" not in str(e.value)
        return
    module = DistillModule(str(student_dir), loss_config(name), lr=1e-3, max_steps=1, teacher_path=str(teacher_dir))
    dm = PairDataModule(
        ps,
        module.tokenizer,
        False,
        inputs=module.loss_fn.inputs,
        batch_size=4,
        max_prompt_tokens=64,
        max_completion_tokens=6,
        val_size=0,
    )
    dm.prepare_data(), dm.setup("fit")
    loss, _ = module.loss_fn(module.scores(next(iter(dm.train_dataloader()))))
    loss.backward()
    grads = [p.grad for p in module.student.parameters() if p.grad is not None]
    assert torch.isfinite(loss) and grads and any(g.abs().sum() > 0 for g in grads), name


# --------------------------------------------------------------------------- TAID in a fit
TAID = {"_target_": "plad.losses.taid.TAIDLoss", "t_start": 0.1, "t_end": 1.0, "alpha": 0.2}


@pytest.fixture(scope="module")
def one_tokenizer(tmp_path_factory):
    root = tmp_path_factory.mktemp("taid")
    return root, *saved_pair_set(root, 24)


class Killed(Exception):
    pass


class Watch(L.Callback):
    """Records t around every validation; dies before step ``kill_at`` + 1 (last.ckpt holds step ``kill_at``)."""

    def __init__(self, kill_at: int | None = None) -> None:
        self.kill_at, self.around_validation = kill_at, []

    def on_train_batch_start(self, trainer, *args) -> None:
        if self.kill_at is not None and trainer.global_step >= self.kill_at:
            raise Killed

    def on_validation_start(self, trainer, module) -> None:
        self._t = module.loss_fn.t.item()

    def on_validation_end(self, trainer, module) -> None:
        self.around_validation.append((self._t, module.loss_fn.t.item()))


def _fit(root: Path, student: Path, teacher: Path, pairs: Path, name: str, kill_at=None, ckpt_path=None):
    L.seed_everything(0, verbose=False)
    module = DistillModule(str(student), TAID, lr=1e-2, max_steps=6, teacher_path=str(teacher))
    dm = PairDataModule(
        pairs,
        module.tokenizer,
        False,
        inputs=("chosen",),
        batch_size=4,
        max_prompt_tokens=32,
        max_completion_tokens=8,
        val_size=4,
        seed=0,
    )
    watch = Watch(kill_at)
    ckpt = L.pytorch.callbacks.ModelCheckpoint(dirpath=root / name, save_last=True, every_n_train_steps=1)
    trainer = L.Trainer(
        max_steps=6,
        logger=False,
        callbacks=[ckpt, watch],
        enable_progress_bar=False,
        enable_model_summary=False,
        accelerator="cpu",
        val_check_interval=2,
        check_val_every_n_epoch=None,
        num_sanity_val_steps=0,
    )
    trainer.fit(module, dm, ckpt_path=ckpt_path)
    return module, watch


def test_taid_schedule_in_a_fit_ignores_validation_and_resumes_after_a_kill(one_tokenizer) -> None:
    root, student, teacher, pairs = one_tokenizer
    full, watch = _fit(root, student, teacher, pairs, "full")
    t = full.loss_fn.t.item()
    # 6 updates (the first records the loss): t at least the linear floor of the last one, progress 5/6
    assert t >= 0.1 + 0.9 * 5 / 6 - 1e-6 and t <= 1.0
    assert watch.around_validation and all(before == after for before, after in watch.around_validation)
    with pytest.raises(Killed):
        _fit(root, student, teacher, pairs, "cut", kill_at=3)
    ckpt = torch.load(root / "cut" / "last.ckpt", weights_only=False)
    assert ckpt["global_step"] == 3
    assert {"loss_fn.t", "loss_fn.prev_loss", "loss_fn.momentum"} <= set(ckpt["state_dict"])
    resumed, _ = _fit(root, student, teacher, pairs, "cut", ckpt_path=str(root / "cut" / "last.ckpt"))
    for key, value in full.loss_fn.state_dict().items():
        torch.testing.assert_close(resumed.loss_fn.state_dict()[key], value, rtol=0, atol=1e-6)
    for p, q in zip(full.student.parameters(), resumed.student.parameters()):
        torch.testing.assert_close(p, q, rtol=0, atol=1e-6)
