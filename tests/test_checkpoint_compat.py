"""Checkpoints and run directories written before the training code moved into ``plad.training``
(``plad.module``, ``plad.optim``, ...) still load and resume (``plad/training/compat.py``).

The old layout is reproduced from a checkpoint written now, by putting back the only things that
named the old paths: the schedule's ``_target_`` in the hyper-parameters, and the ``_target_``s of
the saved Hydra config that ``ckpt_path=last`` compares with the current configuration."""

import inspect
from pathlib import Path

import lightning as L
import pytest
import torch
from helpers.configs import CONFIGS, compose_run_config
from helpers.pairs import saved_pair_set
from omegaconf import OmegaConf

from plad.data.pair_datamodule import PairDataModule
from plad.training.modules import DistillModule
from plad.training.resume import resolve_ckpt_path

# Where these lived before the move (git history), written out here rather than read from compat.py.
OLD_PATHS = {
    "plad.training.modules.DistillModule": "plad.module.DistillModule",
    "plad.training.optimizer.warmup_cosine": "plad.optim.warmup_cosine",
}
RANKING = {"_target_": "plad.losses.ranking.RankingLoss", "beta": 1.0, "reg_weight": 0.1}


def _old_layout(tree):
    """``tree`` as the old code wrote it: every moved ``_target_`` under its old path."""
    if isinstance(tree, dict):
        return {k: OLD_PATHS.get(v, v) if k == "_target_" else _old_layout(v) for k, v in tree.items()}
    if isinstance(tree, list):
        return [_old_layout(v) for v in tree]
    return tree


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    root = tmp_path_factory.mktemp("compat")
    student, _, pairs = saved_pair_set(root, 16)
    return root, student, pairs


def _fit(module: DistillModule, pairs: Path, root: Path, max_steps: int, ckpt_path: Path | None = None):
    L.seed_everything(0, verbose=False)
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
    ckpt = L.pytorch.callbacks.ModelCheckpoint(dirpath=root, save_last=True, every_n_train_steps=1)
    trainer = L.Trainer(
        max_steps=max_steps,
        logger=False,
        callbacks=[ckpt],
        enable_progress_bar=False,
        enable_model_summary=False,
        accelerator="cpu",
        limit_val_batches=0,
    )
    trainer.fit(module, dm, ckpt_path=ckpt_path)
    return trainer


def _module(student: Path) -> DistillModule:
    """Built as ``fit_distill`` builds it: configs as DictConfigs (the loss with its run key ``lr``)."""
    return DistillModule(
        str(student),
        OmegaConf.create({**RANKING, "lr": 1e-2}),
        lr=1e-2,
        max_steps=4,
        warmup_steps=1,
        optim=OmegaConf.load(Path(CONFIGS) / "optim" / "adamw.yaml"),
    )


def test_a_checkpoint_written_by_the_old_layout_loads_and_resumes(tiny):
    root, student, pairs = tiny
    module = _module(student)
    # save_hyperparameters(): every argument, the configs as plain dicts, the loss without its lr.
    assert list(module.hparams) == list(inspect.signature(DistillModule).parameters)
    assert module.hparams.loss == RANKING and type(module.hparams.optim) is dict
    _fit(module, pairs, root / "now", max_steps=2)
    new = root / "now" / "last.ckpt"
    # No plad object is pickled (the class path is never stored): the allowlisted loader opens it.
    ckpt = torch.load(new, weights_only=True)
    assert ckpt["hyper_parameters"]["optim"]["scheduler"]["_target_"] == "plad.training.optimizer.warmup_cosine"
    ckpt["hyper_parameters"] = _old_layout(ckpt["hyper_parameters"])
    ckpt["hparams_name"] = None  # the old hand-written save_hyperparameters dict
    old = root / "old.ckpt"
    torch.save(ckpt, old)

    rebuilt = DistillModule.load_from_checkpoint(old)
    assert rebuilt.hparams.optim["scheduler"]["_target_"] == "plad.training.optimizer.warmup_cosine"
    for (k, p), q in zip(module.student.state_dict().items(), rebuilt.student.state_dict().values()):
        assert torch.equal(p, q), k
    # Resumed from the old checkpoint (configure_optimizers builds the schedule again) and from the
    # new one: the same two further steps.
    trainer = _fit(rebuilt, pairs, root / "from_old", max_steps=4, ckpt_path=old)
    resumed = _fit(_module(student), pairs, root / "from_new", max_steps=4, ckpt_path=new).lightning_module
    assert trainer.global_step == 4
    for p, q in zip(rebuilt.student.parameters(), resumed.student.parameters()):
        assert torch.equal(p, q)


def test_ckpt_path_last_finds_a_run_saved_by_the_old_layout(tiny, tmp_path):
    """A job killed before the move saved a config naming ``plad.module.DistillModule``: a job of
    the same configuration after the move still resumes it."""
    cfg = compose_run_config(tmp_path / "logs", tmp_path / "new", "debug=fast", "ckpt_path=last")
    saved = _old_layout(OmegaConf.to_container(cfg, resolve=False))
    saved.pop("hydra")
    assert saved["distill"]["module"]["_target_"] == "plad.module.DistillModule"
    assert saved["optim"]["scheduler"]["_target_"] == "plad.optim.warmup_cosine"
    run = tmp_path / "logs" / "runs" / "2026-01-01" / "killed"
    (run / ".hydra").mkdir(parents=True)
    OmegaConf.save(OmegaConf.create(saved), run / ".hydra" / "config.yaml")
    (run / "checkpoints").mkdir()
    torch.save({"global_step": 3}, run / "checkpoints" / "last.ckpt")
    assert resolve_ckpt_path(cfg) == str(run / "checkpoints" / "last.ckpt")
