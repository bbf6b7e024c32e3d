"""Running the two training stages with Lightning: SFT of a model on a task split (checkpoint chosen
on the validation split), and distillation of the student with the configured loss."""

from __future__ import annotations

import logging
import time
from pathlib import Path
from typing import Any

import lightning as L
from datasets import Dataset, DatasetDict
from hydra.utils import get_class, instantiate
from omegaconf import DictConfig, OmegaConf

from plad.checks import InputError, integer, number
from plad.data.sft_datamodule import SFTDataModule
from plad.models.logprobs import is_encoder_decoder
from plad.training.callbacks import BestWeights, ValidationQuality
from plad.training.modules import DistillModule, SFTModule
from plad.training.resume import resolve_ckpt_path
from plad.training.teacher_topk import check_teacher_logits, obtain_teacher_topk
from plad.training.weights import full_state, is_sharded, trained_model

log = logging.getLogger(__name__)

# sft_selection.monitor (or a role's sft.monitor) -> (the logged metric, "min" | "max"). val_loss:
# token-averaged validation NLL, logged by SFTModule. val_quality: the task's quality of greedy
# outputs on the validation split (ValidationQuality): a small model fine-tuned on few labels keeps
# improving its outputs long after its validation NLL has turned up (it grows confident, and its
# few errors cost more nats), so NLL would choose an under-trained checkpoint.
SFT_MONITORS = {"val_loss": ("sft/val_loss", "min"), "val_quality": ("sft/val_quality", "max")}


def _trainer(cfg: DictConfig, max_steps: int, **overrides: Any) -> L.Trainer:
    return instantiate(cfg.trainer, max_steps=max_steps, **overrides)


def check_monitor(value: Any, field: str) -> str:
    if value not in SFT_MONITORS:
        raise InputError(f"{field}: expected one of {list(SFT_MONITORS)}, got {value!r}")
    return value


def check_sft_selection(sel: DictConfig) -> None:
    """Fail before any training when ``sft_selection`` holds a bad value (one line naming the field)."""
    check_monitor(sel.monitor, "sft_selection.monitor")
    for key in ("val_check_interval", "patience"):
        integer(sel[key], f"sft_selection.{key}")
    number(sel.min_delta, "sft_selection.min_delta")


def fit_sft(
    cfg: DictConfig,
    model: Any,
    tokenizer: Any,
    sft: DictConfig,
    train: Dataset,
    validation: Dataset | None,
    run_dir: Path,
    name: str,
    seed: int,
    max_completion_tokens: int | None = None,
    quality: Any = None,
) -> tuple[Any, dict[str, Any]]:
    """Fine-tune ``model`` on (prompt, reference) and return it at the step with the best validation
    value (``cfg.sft_selection``, its monitor overridden by ``sft.monitor``; None on ranks > 0
    under FSDP/DeepSpeed), with timing, the chosen step and the curve. References are cut at
    ``max_completion_tokens`` (default: the task's). ``quality(outputs) -> float`` scores greedy
    outputs for the validation prompts, needed by the val_quality monitor."""
    sel = cfg.sft_selection
    monitor_name = sft.get("monitor") or sel.monitor
    L.seed_everything(seed, verbose=False)
    accumulate = int(sft.get("accumulate_grad_batches", 1))
    dm = SFTDataModule(
        train,
        tokenizer,
        is_encoder_decoder(model),
        sft.batch_size,
        cfg.task.max_prompt_tokens,
        max_completion_tokens or cfg.task.max_new_tokens,
        seed=seed,
        validation=validation,
        accumulate_grad_batches=accumulate,
    )
    module = SFTModule(
        model,
        lr=sft.lr,
        max_steps=sft.max_steps,
        warmup_steps=sft.warmup_steps,
        weight_decay=sft.get("weight_decay", 0.0),
        optim=cfg.get("optim"),
        max_nonfinite=OmegaConf.select(cfg, "distill.max_nonfinite", default=10),
    )
    monitor, mode = SFT_MONITORS[monitor_name]
    best = BestWeights(monitor, sel.min_delta, mode)
    callbacks: list[L.Callback] = [L.pytorch.callbacks.TQDMProgressBar(refresh_rate=10), best]
    if validation is not None and len(validation):
        if monitor_name == "val_quality":
            if quality is None:
                raise InputError(f"sft.monitor: val_quality needs the task's quality of outputs ({name})")
            callbacks.insert(
                0,
                ValidationQuality(
                    tokenizer, list(validation["prompt"]), quality, cfg.task.max_prompt_tokens, cfg.task.max_new_tokens
                ),
            )
        callbacks.append(
            L.pytorch.callbacks.EarlyStopping(
                monitor, min_delta=sel.min_delta, patience=sel.patience, mode=mode, check_on_train_epoch_end=False
            )
        )
        # At least one validation, at the last step, when the interval exceeds the budget.
        val_kw: dict[str, Any] = {
            "val_check_interval": min(sel.val_check_interval, sft.max_steps) * accumulate,
            "check_val_every_n_epoch": None,
        }
    else:
        val_kw = {"limit_val_batches": 0}
    trainer = _trainer(
        cfg,
        sft.max_steps,
        logger=L.pytorch.loggers.CSVLogger(run_dir, name=f"sft_{name}"),
        callbacks=callbacks,
        enable_checkpointing=False,
        num_sanity_val_steps=0,
        **val_kw,
    )
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
    return model, {
        "seconds": time.perf_counter() - start,
        "steps": trainer.global_step,
        "final_loss": float(loss) if loss is not None else float("nan"),
        "chosen_step": best.best_step if best.best_step is not None else trainer.global_step,
        "best_value": best.best,
        "curve": best.curve,  # of selection.monitor
        "stopped_early": trainer.global_step < sft.max_steps,
        "selection": {
            "monitor": monitor_name,
            "val_check_interval": sel.val_check_interval,
            "patience": sel.patience,
            "min_delta": sel.min_delta,
        },
    }


def fit_distill(
    cfg: DictConfig,
    student_path: Path,
    teacher_path: Path,
    pairs_path: Path | None,
    loggers: list[Any],
    out_dir: Path,
    data: DatasetDict | None = None,
) -> tuple[DistillModule, L.Trainer]:
    """Train the student with the configured loss on the data its class declares (``data_source``:
    the pair cache, or the labeled train split); checkpoints under ``out_dir``."""
    L.seed_everything(cfg.seed, verbose=False)
    d = cfg.distill
    loss_cls = get_class(cfg.loss._target_)
    if loss_cls.data_source not in d.datamodule:
        raise InputError(
            f"loss: {loss_cls.__name__}.data_source: expected one of {list(d.datamodule)} "
            f"(distill.datamodule), got {loss_cls.data_source!r}"
        )
    mode, k = check_teacher_logits(d.get("teacher_logits", "online"), d.get("topk", 20))
    topk = loss_cls.needs_teacher and mode == "topk"  # black-box losses load no teacher either way
    module = instantiate(d.module)(
        student_path=str(student_path),
        loss=cfg.loss,
        optim=cfg.get("optim"),
        teacher_path=str(teacher_path) if loss_cls.needs_teacher else None,
        # Passed resolved, not interpolated into `module`: instantiate resolves an interpolated node in
        # place, which would change the run config that ckpt_path=last compares with the saved one.
        on_policy=OmegaConf.to_container(d.on_policy, resolve=True) if d.get("on_policy") is not None else None,
    )
    make_data = instantiate(d.datamodule[loss_cls.data_source])
    enc_dec = is_encoder_decoder(module.student)
    if loss_cls.data_source == "pairs":
        if pairs_path is None:
            raise InputError(f"loss: {loss_cls.__name__} trains on pairs, but the pairs stage did not run (stages)")
        dm = make_data(pairs_path, module.tokenizer, enc_dec, inputs=tuple(loss_cls.inputs))
    else:
        if data is None or "train" not in data:
            raise InputError(f"loss: {loss_cls.__name__} trains on the labeled train split, but no data was given")
        dm = make_data(data, module.tokenizer, enc_dec)
    callbacks = [instantiate(c) for c in cfg.callbacks.values()]
    # Lightning counts validation intervals in batches; ours are in optimizer steps.
    accumulate = int(d.get("accumulate_grad_batches", 1))
    trainer = _trainer(
        cfg,
        d.max_steps,
        logger=loggers or False,
        callbacks=callbacks,
        default_root_dir=str(out_dir),
        val_check_interval=d.val_check_interval * accumulate,
        check_val_every_n_epoch=None,
        num_sanity_val_steps=0,
        log_every_n_steps=d.get("log_every_n_steps", 1),
    )
    if topk:  # the teacher once over the whole pair set (or its cache), then released: the module holds none
        device = trainer.strategy.root_device
        precision = cfg.trainer.get("precision")
        dm.teacher_topk = obtain_teacher_topk(dm, teacher_path, k, precision, device, 2 * d.batch_size)
    trainer.fit(module, dm, ckpt_path=resolve_ckpt_path(cfg))
    if module.on_policy is not None:
        stats = module.on_policy_stats
        log.info(
            "on-policy: %d of %d batches sampled from the current student, %.1f s of generation",
            stats["batches"],
            trainer.global_step * accumulate,
            stats["seconds"],
        )
    module.student.eval()
    return module, trainer
