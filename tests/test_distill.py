"""DistillModule: non-finite guard, checkpoint rebuild, resume equivalence, one forward per batch."""

from pathlib import Path

import lightning as L
import pytest
import torch
from helpers.pairs import load_tiny, saved_pair_set
from omegaconf import OmegaConf
from torch import Tensor

from plad.data.pair_datamodule import PairDataModule
from plad.losses.base import CalibrationLoss, SequenceScores
from plad.models.logprobs import sequence_logprobs
from plad.training.modules import DistillModule

RANKING = {"_target_": "plad.losses.ranking.RankingLoss", "beta": 1.0, "reg_weight": 0.1}


class NaNLoss(CalibrationLoss):
    """Finite on the first ``finite_steps`` calls, NaN afterwards."""

    def __init__(self, finite_steps: int = 0) -> None:
        super().__init__()
        self.finite_steps, self.calls = finite_steps, 0

    def compute(self, s: SequenceScores) -> tuple[Tensor, dict[str, Tensor]]:
        self.calls += 1
        loss = -s.score().mean()
        return (loss if self.calls <= self.finite_steps else loss * float("nan")), {}


class FaultyLoss(CalibrationLoss):
    """Ranking-like loss with faults on chosen training calls: a NaN loss, or a finite loss whose
    gradient is NaN (``x * 0 + nan`` under a hook)."""

    def __init__(self, nan_loss_calls: list[int] = (), nan_grad_calls: list[int] = ()) -> None:
        super().__init__()
        self.nan_loss_calls, self.nan_grad_calls, self.calls = set(nan_loss_calls), set(nan_grad_calls), 0

    def compute(self, s: SequenceScores) -> tuple[Tensor, dict[str, Tensor]]:
        loss = -s.score().mean()
        if not torch.is_grad_enabled():  # validation: no fault
            return loss, {}
        self.calls += 1
        if self.calls in self.nan_loss_calls:
            return loss * float("nan"), {}
        if self.calls in self.nan_grad_calls:
            loss.register_hook(lambda g: g * float("nan"))
        return loss, {}


@pytest.fixture(scope="module")
def setup_(tmp_path_factory):
    root = tmp_path_factory.mktemp("distill")
    student, _, pairs = saved_pair_set(root, 24)
    return root, student, pairs


class Killed(Exception):
    pass


class KillAt(L.Callback):
    """Simulates a killed job: it dies before step ``step + 1``, once last.ckpt holds step ``step``."""

    def __init__(self, step: int) -> None:
        self.step = step

    def on_train_batch_start(self, trainer, *args) -> None:
        if trainer.global_step >= self.step:
            raise Killed


def _fit(
    root: Path,
    student: Path,
    pairs: Path,
    loss: dict,
    max_steps: int,
    ckpt_path=None,
    name="run",
    kill_at: int | None = None,
):
    L.seed_everything(0, verbose=False)
    module = DistillModule(str(student), loss, lr=1e-2, max_steps=max_steps, warmup_steps=1, max_nonfinite=3)
    dm = PairDataModule(
        pairs,
        module.tokenizer,
        False,
        inputs=module.loss_fn.inputs,
        batch_size=4,
        max_prompt_tokens=32,
        max_completion_tokens=8,
        val_size=4,
        seed=0,
    )
    ckpt = L.pytorch.callbacks.ModelCheckpoint(dirpath=root / name, save_last=True, every_n_train_steps=1)
    callbacks = [ckpt] + ([KillAt(kill_at)] if kill_at else [])
    trainer = L.Trainer(
        max_steps=max_steps,
        logger=False,
        callbacks=callbacks,
        enable_progress_bar=False,
        enable_model_summary=False,
        accelerator="cpu",
        val_check_interval=2,
        check_val_every_n_epoch=None,
        num_sanity_val_steps=0,
    )
    trainer.fit(module, dm, ckpt_path=ckpt_path)
    return module, trainer


def test_one_forward_per_batch_over_both_sequences(setup_):
    root, student, pairs = setup_
    module = DistillModule(str(student), RANKING, lr=1e-3, max_steps=1)
    calls = []
    module.student.register_forward_hook(lambda m, a, kw_out=None: calls.append(1))
    dm = PairDataModule(
        pairs, module.tokenizer, False, batch_size=4, max_prompt_tokens=32, max_completion_tokens=8, val_size=0
    )
    dm.prepare_data(), dm.setup("fit")
    batch = next(iter(dm.train_dataloader()))
    scores = module.scores(batch)
    assert len(calls) == 1 and batch["input_ids"].shape[0] == 2 * scores.logp.shape[0]
    assert scores.ref_logp is not None and scores.logp.shape == scores.ref_logp.shape


def test_nonfinite_losses_skip_the_step_then_stop_the_run(setup_):
    root, student, pairs = setup_
    loss = {"_target_": "test_distill.NaNLoss", "finite_steps": 2}
    initial = load_tiny(student)[0].state_dict()
    with pytest.raises(RuntimeError, match="3 non-finite losses or gradients in a row"):
        _fit(root, student, pairs, loss, max_steps=20, name="nan")
    # Two finite steps changed the weights; the NaN steps after them were skipped, not applied.
    module = DistillModule.load_from_checkpoint(root / "nan" / "last.ckpt")
    assert all(torch.isfinite(p).all() for p in module.student.parameters())
    assert any(not torch.equal(p, initial[k]) for k, p in module.student.state_dict().items())


class Trace(L.Callback):
    """Per training batch: global step and lr before it, and whether the weights moved."""

    def __init__(self) -> None:
        self.rows: list[tuple[int, float, bool]] = []

    def on_train_batch_start(self, trainer, module, *args) -> None:
        self._before = [p.detach().clone() for p in module.student.parameters()]
        self._step, self._lr = trainer.global_step, trainer.optimizers[0].param_groups[0]["lr"]

    def on_train_batch_end(self, trainer, module, *args) -> None:
        moved = any(not torch.equal(a, b) for a, b in zip(self._before, module.student.parameters()))
        self.rows.append((self._step, self._lr, moved))


def test_nonfinite_loss_or_gradient_steps_are_not_applied_nor_counted(setup_):
    """NaN loss on training call 2, NaN gradient on call 4: those batches change no weight, do not
    advance global_step or the LR schedule, and the run still makes max_steps real updates."""
    root, student, pairs = setup_
    loss = {"_target_": "test_distill.FaultyLoss", "nan_loss_calls": [2], "nan_grad_calls": [4]}
    L.seed_everything(0, verbose=False)
    module = DistillModule(str(student), loss, lr=1e-2, max_steps=5, warmup_steps=2, max_nonfinite=3)
    dm = PairDataModule(
        pairs,
        module.tokenizer,
        False,
        inputs=module.loss_fn.inputs,
        batch_size=2,
        max_prompt_tokens=32,
        max_completion_tokens=8,
        val_size=4,
        seed=0,
    )
    trace = Trace()
    trainer = L.Trainer(
        max_steps=5,
        logger=False,
        callbacks=[trace],
        enable_progress_bar=False,
        enable_checkpointing=False,
        enable_model_summary=False,
        accelerator="cpu",
        limit_val_batches=0,
    )
    trainer.fit(module, dm)
    steps, lrs, moved = zip(*trace.rows)
    assert moved == (True, False, True, False, True, True, True)
    assert steps == (0, 1, 1, 2, 2, 3, 4) and trainer.global_step == 5
    assert lrs[1] == lrs[2] and lrs[3] == lrs[4]  # the schedule did not move on a skipped batch
    assert lrs[0] == pytest.approx(0.5e-2) and lrs[2] == pytest.approx(1e-2)  # warmup 2: steps 0, 1
    assert int(module.nonfinite_total) == 2
    assert all(torch.isfinite(p).all() for p in module.student.parameters())


def test_load_from_checkpoint_rebuilds_the_trained_student(setup_):
    root, student, pairs = setup_
    module, _ = _fit(root, student, pairs, RANKING, max_steps=3, name="ckpt")
    rebuilt = DistillModule.load_from_checkpoint(root / "ckpt" / "last.ckpt")
    assert rebuilt.hparams.loss == RANKING
    for (k, p), q in zip(module.student.state_dict().items(), rebuilt.student.state_dict().values()):
        assert torch.equal(p, q), k


def test_interrupted_and_resumed_run_ends_like_an_uninterrupted_one(setup_):
    root, student, pairs = setup_
    full, t_full = _fit(root, student, pairs, RANKING, max_steps=8, name="full")
    with pytest.raises(Killed):
        _fit(root, student, pairs, RANKING, max_steps=8, name="cut", kill_at=3)
    assert torch.load(root / "cut" / "last.ckpt", weights_only=False)["global_step"] == 3
    resumed, t_res = _fit(
        root, student, pairs, RANKING, max_steps=8, name="cut", ckpt_path=str(root / "cut" / "last.ckpt")
    )
    for p, q in zip(full.student.parameters(), resumed.student.parameters()):
        assert torch.allclose(p, q, atol=1e-6)
    for key in ("val/loss", "val/rank_acc"):
        assert torch.allclose(t_full.callback_metrics[key], t_res.callback_metrics[key], atol=1e-6)


def _continued_sft_cfg(max_steps: int = 6):

    distill_yaml = OmegaConf.load(Path(__file__).resolve().parents[1] / "configs" / "distill" / "default.yaml")
    cfg = OmegaConf.create(
        {
            "seed": 0,
            "ckpt_path": None,
            "callbacks": {},
            "task": {"max_prompt_tokens": 32, "max_new_tokens": 8},
            "loss": {"_target_": "plad.losses.sft.SFTLoss", "reg_weight": 0.0, "lr": 1e-2},
            "distill": {
                "max_steps": max_steps,
                "batch_size": 4,
                "lr": "${loss.lr}",
                "warmup_steps": 0,
                "weight_decay": 0.0,
                "val_size": 4,
                "val_check_interval": max_steps,
                "max_nonfinite": 3,
                "num_workers": 0,
                "accumulate_grad_batches": 1,
                "disable_dropout": True,
                "reference": "cached",
            },
            "model": {"student": {"lora": {"r": None}, "gradient_checkpointing": False}},
            "trainer": {
                "_target_": "lightning.pytorch.Trainer",
                "accelerator": "cpu",
                "devices": 1,
                "enable_progress_bar": False,
                "enable_model_summary": False,
            },
        }
    )
    cfg.distill.module, cfg.distill.datamodule = distill_yaml.module, distill_yaml.datamodule  # from config
    return cfg


def _nll(model, tok, rows) -> float:
    """Token-averaged NLL of the rows' references (one padded batch)."""
    from plad.data.collate import Collator
    from plad.models.logprobs import sequence_logprobs

    batch = Collator(tok, False, 32, 8)(rows)
    with torch.no_grad():
        out = sequence_logprobs(model.eval(), batch["input_ids"], batch["attention_mask"], batch["labels"])
    return (-out.sum_logp.sum() / out.n_tokens.sum()).item()


def test_sft_baseline_trains_on_the_labeled_train_split_not_the_pairs(setup_, tmp_path):
    """loss=sft (continued SFT) needs no pair set: it reads (prompt, reference) of the train split and
    reports val/loss on the validation split's first val_size rows."""
    from datasets import Dataset, DatasetDict

    from plad.training.trainer import fit_distill

    root, student, _ = setup_
    train = Dataset.from_dict(
        {"prompt": [f"Anonymize: row {i}" for i in range(12)], "reference": ["good text here"] * 12}
    )
    validation = Dataset.from_dict(
        {
            "prompt": [f"Anonymize: other {i}" for i in range(6)],
            "reference": ["good text here"] * 3 + ["unrelated words"] * 3,
        }
    )
    model0, tok = load_tiny(student)
    before = _nll(model0, tok, [dict(r) for r in train])
    module, trainer = fit_distill(
        _continued_sft_cfg(), student, student, None, [], tmp_path, data=DatasetDict(train=train, validation=validation)
    )
    assert trainer.global_step == 6 and module.hparams.lr == 1e-2 and "lr" not in module.hparams.loss
    assert _nll(module.student, tok, [dict(r) for r in train]) < before - 0.5
    assert trainer.callback_metrics["val/loss"].item() == pytest.approx(
        _nll(module.student, tok, [dict(validation[i]) for i in range(4)]), abs=1e-4
    )
    cfg = _continued_sft_cfg()
    cfg.loss = {"_target_": "plad.losses.ranking.RankingLoss", "lr": 1e-2}
    with pytest.raises(ValueError, match="pairs stage did not run"):
        fit_distill(cfg, student, student, None, [], tmp_path, data=DatasetDict(train=train, validation=validation))


@pytest.mark.parametrize("family,disable", [("llama", True), ("gpt_neo", True), ("t5", True), ("t5", False)])
def test_at_step_0_the_student_scores_its_pairs_like_the_cached_reference(family: str, disable: bool, tmp_path):
    """DPO's implicit reward beta * (log pi(y) - log ref(y)) must be 0 before any update: the training-mode
    student (what DistillModule scores) must give the eval-mode log-likelihoods the pair cache stores
    as ``ref_logp``. With ``distill.disable_dropout`` (the default) it does for every family; without
    it, T5's 0.1 dropout breaks it (the other presets have no dropout)."""
    from plad.data.sft_datamodule import DistillLayoutCollator
    from plad.models.build import build_model, save_model
    from plad.models.tokenizer import train_tokenizer

    texts = [f"Rewrite: Ana Li lives at {n} Oak Road." for n in range(40)]
    tok = train_tokenizer(texts + ["Ana Li lives at [ADDRESS]."], vocab_size=300)
    spec = OmegaConf.load(Path(__file__).resolve().parents[1] / "configs" / "model" / f"{family}.yaml").student
    save_model(build_model(spec, tok, seed=0), tok, tmp_path / "student")
    module = DistillModule(
        str(tmp_path / "student"),
        {"_target_": "plad.losses.dpo.DPOLoss"},
        lr=1e-3,
        max_steps=1,
        disable_dropout=disable,
    )
    enc_dec = module.student.config.is_encoder_decoder
    batch = DistillLayoutCollator(tok, enc_dec, 32, 16)(
        [{"prompt": t, "reference": "Ana Li lives at [ADDRESS]."} for t in texts[:8]]
    )
    torch.manual_seed(0)
    with torch.no_grad():
        train_mode = module.scores(batch).logp
        ref = sequence_logprobs(
            module.student.eval(), batch["input_ids"], batch["attention_mask"], batch["labels"]
        ).sum_logp.view_as(train_mode)
    reward_at_step_0 = (train_mode - ref).abs().max().item()
    if disable:
        assert reward_at_step_0 < 1e-4
    else:  # T5 with its dropout left on
        assert reward_at_step_0 > 1e-2
