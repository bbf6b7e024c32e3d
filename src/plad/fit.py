"""Running the two training stages with Lightning: SFT of a model on a task split (checkpoint chosen
on the validation split), and distillation of the student with the configured loss."""
from __future__ import annotations

import math
import time
from pathlib import Path
from typing import Any

import lightning as L
import torch
from datasets import Dataset, DatasetDict
from hydra.utils import get_class, instantiate
from omegaconf import DictConfig, OmegaConf

from plad.data.sft_datamodule import SFTDataModule
from plad.models.logprobs import is_encoder_decoder
from plad.module import DistillModule, SFTModule
from plad.resume import resolve_ckpt_path

# sft_selection.monitor -> the metric SFTModule logs (lower is better).
SFT_MONITORS = {"val_loss": "sft/val_loss"}


def _trainer(cfg: DictConfig, max_steps: int, **overrides: Any) -> L.Trainer:
    return instantiate(cfg.trainer, max_steps=max_steps, **overrides)


def check_sft_selection(sel: DictConfig) -> None:
    """Fail before any training when ``sft_selection`` holds a bad value (one line naming the field)."""
    if sel.monitor not in SFT_MONITORS:
        raise ValueError(f"sft_selection.monitor: expected one of {list(SFT_MONITORS)}, got {sel.monitor!r}")
    for key, lo in (("val_check_interval", 1), ("patience", 1)):
        v = sel[key]
        if isinstance(v, bool) or not isinstance(v, int) or v < lo:
            raise ValueError(f"sft_selection.{key}: expected an integer >= {lo}, got {v!r}")
    if isinstance(sel.min_delta, bool) or not isinstance(sel.min_delta, (int, float)) or sel.min_delta < 0:
        raise ValueError(f"sft_selection.min_delta: expected a number >= 0, got {sel.min_delta!r}")


class BestWeights(L.Callback):
    """Keeps, in memory, the weights of the best validation value so far and the whole curve.

    In memory because SFT models are small and saved once, after the best weights are restored;
    a checkpoint file per improvement would only be written and deleted again.
    """

    def __init__(self, monitor: str, min_delta: float = 0.0) -> None:
        self.monitor, self.min_delta = monitor, float(min_delta)
        self.curve: list[tuple[int, float]] = []
        self.best: float | None = None
        self.best_step: int | None = None
        self.state: dict[str, torch.Tensor] | None = None

    def on_validation_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if trainer.sanity_checking or self.monitor not in trainer.callback_metrics:
            return
        value, step = float(trainer.callback_metrics[self.monitor]), trainer.global_step
        self.curve.append((step, value))
        if math.isfinite(value) and (self.best is None or value < self.best - self.min_delta):
            self.best, self.best_step = value, step
            self.state = full_state(trainer, "model")  # every rank calls it: a collective when sharded


def is_sharded(strategy: Any) -> bool:
    """FSDP / DeepSpeed: parameters live in shards (and layers in wrappers) during and after a fit."""
    from lightning.pytorch.strategies import DeepSpeedStrategy, FSDPStrategy

    return isinstance(strategy, (FSDPStrategy, DeepSpeedStrategy))


def full_state(trainer: L.Trainer, attr: str) -> dict[str, torch.Tensor] | None:
    """Full weights of the LightningModule's ``attr`` (a Hugging Face model) on CPU; None on ranks
    other than 0 when the strategy shards parameters (gathered by the strategy, all ranks call)."""
    if is_sharded(trainer.strategy):
        state = trainer.strategy.lightning_module_state_dict()
        if not trainer.is_global_zero:
            return None
    else:
        state = trainer.lightning_module.state_dict()
    return {k[len(attr) + 1:]: v.detach().to("cpu", copy=True) for k, v in state.items() if k.startswith(attr + ".")}


def trained_model(trainer: L.Trainer, model: Any, state: dict[str, torch.Tensor] | None) -> Any:
    """The model to save: ``model`` itself (loaded with ``state`` when given) in one process or
    under DDP; under FSDP/DeepSpeed, whose wrapping changed ``model``, a fresh copy built from its
    config with the gathered ``state`` (rank 0; the other ranks get None)."""
    if not is_sharded(trainer.strategy):
        if state is not None:
            model.load_state_dict(state)
        return model
    if state is None:
        return None
    from plad.models.lora import fresh_copy

    fresh = fresh_copy(model)  # a LoRA model comes back with its adapters, merged when saved
    fresh.load_state_dict(state)
    return fresh


def fit_sft(cfg: DictConfig, model: Any, tokenizer: Any, sft: DictConfig, train: Dataset,
            validation: Dataset | None, run_dir: Path, name: str, seed: int) -> tuple[Any, dict[str, Any]]:
    """Fine-tune ``model`` on (prompt, reference) and return it at the step with the best validation
    value (``cfg.sft_selection``; None on ranks > 0 under FSDP/DeepSpeed), with timing, the chosen
    step and the curve."""
    sel = cfg.sft_selection
    L.seed_everything(seed, verbose=False)
    accumulate = int(sft.get("accumulate_grad_batches", 1))
    dm = SFTDataModule(train, tokenizer, is_encoder_decoder(model), sft.batch_size, cfg.task.max_prompt_tokens,
                       cfg.task.max_new_tokens, seed=seed, validation=validation, accumulate_grad_batches=accumulate)
    module = SFTModule(model, lr=sft.lr, max_steps=sft.max_steps, warmup_steps=sft.warmup_steps,
                       weight_decay=sft.get("weight_decay", 0.0), optim=cfg.get("optim"),
                       max_nonfinite=OmegaConf.select(cfg, "distill.max_nonfinite", default=10))
    monitor = SFT_MONITORS[sel.monitor]
    best = BestWeights(monitor, sel.min_delta)
    callbacks: list[L.Callback] = [L.pytorch.callbacks.TQDMProgressBar(refresh_rate=10), best]
    if validation is not None and len(validation):
        callbacks.append(L.pytorch.callbacks.EarlyStopping(monitor, min_delta=sel.min_delta, patience=sel.patience,
                                                           mode="min", check_on_train_epoch_end=False))
        # At least one validation, at the last step, when the interval exceeds the budget.
        val_kw: dict[str, Any] = {"val_check_interval": min(sel.val_check_interval, sft.max_steps) * accumulate,
                                  "check_val_every_n_epoch": None}
    else:
        val_kw = {"limit_val_batches": 0}
    trainer = _trainer(cfg, sft.max_steps, logger=L.pytorch.loggers.CSVLogger(run_dir, name=f"sft_{name}"),
                       callbacks=callbacks, enable_checkpointing=False, num_sanity_val_steps=0, **val_kw)
    start = time.perf_counter()
    trainer.fit(module, dm)
    if best.best_step is not None:
        state = best.state
    else:  # no validation: the last weights (only sharded strategies need them gathered)
        state = full_state(trainer, "model") if is_sharded(trainer.strategy) else None
    model = trained_model(trainer, model, state)
    if model is not None:
        model.eval()
    loss = trainer.callback_metrics.get("sft/loss")
    return model, {"seconds": time.perf_counter() - start, "steps": trainer.global_step,
            "final_loss": float(loss) if loss is not None else float("nan"),
            "chosen_step": best.best_step if best.best_step is not None else trainer.global_step,
            "best_val_loss": best.best, "curve": best.curve,
            "stopped_early": trainer.global_step < sft.max_steps,
            "selection": {"monitor": sel.monitor, "val_check_interval": sel.val_check_interval,
                          "patience": sel.patience, "min_delta": sel.min_delta}}


def fit_distill(cfg: DictConfig, student_path: Path, teacher_path: Path, pairs_path: Path | None,
                loggers: list[Any], out_dir: Path, data: DatasetDict | None = None
                ) -> tuple[DistillModule, L.Trainer]:
    """Train the student with the configured loss on the data its class declares (``data_source``:
    the pair cache, or the labeled train split); checkpoints under ``out_dir``."""
    L.seed_everything(cfg.seed, verbose=False)
    d = cfg.distill
    loss_cls = get_class(cfg.loss._target_)
    if loss_cls.data_source not in d.datamodule:
        raise ValueError(f"loss: {loss_cls.__name__}.data_source: expected one of {list(d.datamodule)} "
                         f"(distill.datamodule), got {loss_cls.data_source!r}")
    module = instantiate(d.module)(student_path=str(student_path), loss=cfg.loss, optim=cfg.get("optim"),
                                   teacher_path=str(teacher_path) if loss_cls.needs_teacher else None)
    make_data = instantiate(d.datamodule[loss_cls.data_source])
    enc_dec = is_encoder_decoder(module.student)
    if loss_cls.data_source == "pairs":
        if pairs_path is None:
            raise ValueError(f"loss: {loss_cls.__name__} trains on pairs, but the pairs stage did not run (stages)")
        dm = make_data(pairs_path, module.tokenizer, enc_dec, inputs=tuple(loss_cls.inputs))
    else:
        if data is None or "train" not in data:
            raise ValueError(f"loss: {loss_cls.__name__} trains on the labeled train split, but no data was given")
        dm = make_data(data, module.tokenizer, enc_dec)
    callbacks = [instantiate(c) for c in cfg.callbacks.values()]
    # Lightning counts validation intervals in batches; ours are in optimizer steps.
    accumulate = int(d.get("accumulate_grad_batches", 1))
    trainer = _trainer(cfg, d.max_steps, logger=loggers or False, callbacks=callbacks,
                       default_root_dir=str(out_dir), val_check_interval=d.val_check_interval * accumulate,
                       check_val_every_n_epoch=None, num_sanity_val_steps=0,
                       log_every_n_steps=d.get("log_every_n_steps", 1))
    trainer.fit(module, dm, ckpt_path=resolve_ckpt_path(cfg))
    module.student.eval()
    return module, trainer
