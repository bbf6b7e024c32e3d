"""Running the two training stages with Lightning: SFT of a model on a task split, and
distillation of the student on cached pseudo-preference pairs."""
from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import lightning as L
from datasets import Dataset
from hydra.utils import get_class, instantiate
from omegaconf import DictConfig

from plad.data.sft import SFTDataModule
from plad.models.logprobs import is_encoder_decoder
from plad.module import DistillModule, SFTModule


def _trainer(cfg: DictConfig, max_steps: int, **overrides: Any) -> L.Trainer:
    return instantiate(cfg.trainer, max_steps=max_steps, **overrides)


def fit_sft(cfg: DictConfig, model: Any, tokenizer: Any, sft: DictConfig, train: Dataset,
            run_dir: Path, name: str) -> dict[str, float]:
    """Fine-tune ``model`` in place on (prompt, reference); returns timing and the final loss."""
    L.seed_everything(cfg.base_seed, verbose=False)
    dm = SFTDataModule(train, tokenizer, is_encoder_decoder(model), sft.batch_size,
                       cfg.task.max_prompt_tokens, cfg.task.max_new_tokens, seed=cfg.base_seed)
    module = SFTModule(model, lr=sft.lr, max_steps=sft.max_steps, warmup_steps=sft.warmup_steps,
                       weight_decay=sft.get("weight_decay", 0.0))
    trainer = _trainer(cfg, sft.max_steps, logger=L.pytorch.loggers.CSVLogger(run_dir, name=f"sft_{name}"),
                       callbacks=[L.pytorch.callbacks.TQDMProgressBar(refresh_rate=10)],
                       enable_checkpointing=False, limit_val_batches=0, num_sanity_val_steps=0)
    start = time.perf_counter()
    trainer.fit(module, dm)
    model.eval()
    loss = trainer.callback_metrics.get("sft/loss")
    return {"seconds": time.perf_counter() - start, "steps": trainer.global_step,
            "final_loss": float(loss) if loss is not None else float("nan")}


def fit_distill(cfg: DictConfig, student_path: Path, teacher_path: Path, pairs_path: Path,
                loggers: list[Any], out_dir: Path) -> tuple[DistillModule, L.Trainer]:
    """Train the student on pairs with the configured loss; checkpoints under ``out_dir``."""
    from plad.data.pairs import PairDataModule

    L.seed_everything(cfg.seed, verbose=False)
    d = cfg.distill
    loss_cls = get_class(cfg.loss._target_)
    module = DistillModule(str(student_path), cfg.loss, lr=d.lr, max_steps=d.max_steps,
                           warmup_steps=d.warmup_steps, weight_decay=d.weight_decay,
                           teacher_path=str(teacher_path) if loss_cls.needs_teacher else None,
                           max_nonfinite=d.max_nonfinite)
    dm = PairDataModule(pairs_path, module.tokenizer, is_encoder_decoder(module.student),
                        inputs=tuple(loss_cls.inputs), batch_size=d.batch_size,
                        max_prompt_tokens=cfg.task.max_prompt_tokens,
                        max_completion_tokens=cfg.task.max_new_tokens, val_size=d.val_size, seed=cfg.seed)
    callbacks = [instantiate(c) for c in cfg.callbacks.values()]
    trainer = _trainer(cfg, d.max_steps, logger=loggers or False, callbacks=callbacks,
                       default_root_dir=str(out_dir), val_check_interval=d.val_check_interval,
                       check_val_every_n_epoch=None, num_sanity_val_steps=0)
    trainer.fit(module, dm, ckpt_path=cfg.ckpt_path)
    module.student.eval()
    return module, trainer
