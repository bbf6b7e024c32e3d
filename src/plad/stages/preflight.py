"""Checks of the whole run's configuration that must fail before any expensive stage, with one line
naming the field: plain values, every instantiated object, the input files it names, and the
protocol's rules (an oracle loss needs the oracle switch; a white-box loss needs the teacher model;
SFT selection and decoding settings are valid). ``load_checked`` loads the task's splits and checks
them against the run's other inputs before they are cached: call it instead of ``task.load``."""
from __future__ import annotations

import os
from typing import Any

from omegaconf import DictConfig, OmegaConf

from plad.config_checks import check_config
from plad.distributed import check_trainer
from plad.stages import plan
from plad.stages.input_checks import build, check_data, check_eval, check_pairs, check_white_box, import_target
from plad.checks import InputError


def preflight(cfg: DictConfig) -> tuple[Any, type]:
    """Validate ``cfg``; returns the task object and the loss class."""
    from plad.backends import make_backend
    from plad.evaluation.decoding import decoding_settings
    from plad.losses.base import CalibrationLoss
    from plad.models.build import validate_family
    from plad.models.precision import canonical_precision
    from plad.module import build_loss
    from plad.pairs.scorers import check_scorer
    from plad.fit import check_monitor, check_sft_selection

    check_config(cfg)
    check_trainer(cfg.trainer)
    canonical_precision(cfg.trainer.get("precision"))
    task = build(cfg.task, "task")
    loss_cls = import_target(cfg.loss, "loss", CalibrationLoss)
    build_loss(cfg.loss)
    if loss_cls.needs_oracle_references and not oracle_references(cfg):
        raise InputError(f"pairs.oracle_references: {loss_cls.__name__} trains on the references of the unlabeled "
                         "prompts (an oracle); expected true, got false")
    check_pairs(cfg.pairs)  # the teacher file's format, before rules that mention it
    if cfg.pairs.get("scorer") is not None:
        import_target(cfg.pairs.scorer, "pairs.scorer")
    check_scorer(cfg.pairs)
    plan.check_order(list(cfg.stages))  # inputs of stages left out are checked against the cache later
    validate_family(cfg.model)
    check_positions(cfg)
    check_lora(cfg)  # distill.reference against the student's lora
    make_backend(cfg.get("generation")).check(cfg.model)  # vLLM missing or no GPU: one line, now
    check_white_box(cfg, loss_cls)
    check_sft_selection(cfg.sft_selection)
    for role in ("teacher", "student"):  # a role's own checkpoint choice and label budget
        sft = cfg.model[role].get("sft") or {}
        if sft.get("monitor") is not None:
            check_monitor(sft.monitor, f"model.{role}.sft.monitor")
        budget = sft.get("train_examples")
        if budget is not None and cfg.task.get("source") is None and budget > cfg.task.n_train:
            raise InputError(f"model.{role}.sft.train_examples: expected at most task.n_train "
                             f"({cfg.task.n_train}), got {budget}")
    check_eval(cfg.eval, task)
    decoding_settings(OmegaConf.to_container(cfg.eval, resolve=True))
    if cfg.get("judge") is not None:
        import_target(cfg.judge, "judge")
    return task, loss_cls


def check_positions(cfg: DictConfig) -> None:
    """A prompt and its completion must fit the positions each model was built for: past them a
    model with learned positions crashes mid-SFT and one with rotary positions runs outside its
    trained range. Copy pretraining's completions are whole prompts."""
    from plad.models.build import max_positions, pretrain_spec

    prompt, new = cfg.task.max_prompt_tokens, cfg.task.max_new_tokens
    for role in ("teacher", "student"):
        limit = max_positions(cfg.model, role)
        completion = max(new, prompt) if pretrain_spec(cfg.model[role]) is not None else new
        if limit is not None and prompt + completion > limit:
            what = (f"task.max_prompt_tokens + task.max_new_tokens ({prompt} + {new})" if completion == new else
                    f"2 x task.max_prompt_tokens ({prompt} + {prompt}, model.{role}.pretrain copies whole prompts)")
            raise InputError(f"task.max_prompt_tokens: expected {what} <= {limit}, the positions of "
                             f"model.{role}, got {prompt + completion}")


def check_lora(cfg: DictConfig) -> None:
    """``distill.reference: adapters_off`` needs a LoRA student."""
    from plad.models.lora import validate_reference

    validate_reference(cfg.distill.get("reference", "cached"), cfg.model.student.get("lora"))


def load_checked(cfg: DictConfig, task: Any, cache: str | os.PathLike) -> Any:
    """The task's splits (``task.load``), checked against the run's other inputs (the black-box
    teacher file must answer exactly the unlabeled prompts) before they are cached and before SFT."""
    return task.load(cache, validate=lambda data: check_data(cfg, data))


def oracle_references(cfg: DictConfig) -> bool:
    """Whether the run explicitly lets references of the unlabeled prompts into the pair stage."""
    return bool(cfg.pairs.get("oracle_references", False))


def is_oracle_run(cfg: DictConfig, loss_cls: type) -> bool:
    """An oracle run sees labels PLaD never sees; reports must mark it."""
    return oracle_references(cfg) or bool(loss_cls.needs_oracle_references)
