"""Checks of the whole run's configuration that must fail before any expensive stage, with one line
naming the field: plain values, every instantiated object, and the protocol's rules (an oracle
loss needs the oracle switch; SFT selection and decoding settings are valid)."""
from __future__ import annotations

from typing import Any

from hydra.utils import get_class, instantiate
from omegaconf import DictConfig, OmegaConf

from plad.config_checks import check_config


def preflight(cfg: DictConfig) -> tuple[Any, type]:
    """Validate ``cfg``; returns the task object and the loss class."""
    from plad.evaluation.decoding import decoding_settings
    from plad.models.build import validate_family
    from plad.module import build_loss
    from plad.pairs.scorers import check_scorer
    from plad.training import check_sft_selection

    check_config(cfg)
    task = instantiate(cfg.task)
    build_loss(cfg.loss)
    loss_cls = get_class(cfg.loss._target_)
    if loss_cls.needs_oracle_references and not oracle_references(cfg):
        raise ValueError(f"pairs.oracle_references: {loss_cls.__name__} trains on the references of the unlabeled "
                         "prompts (an oracle); expected true, got false")
    check_scorer(cfg.pairs)
    if "distill" in cfg.stages and "pairs" not in cfg.stages and loss_cls.data_source == "pairs":
        raise ValueError(f"stages: {loss_cls.__name__} trains on pairs; expected 'pairs' before 'distill', "
                         f"got {list(cfg.stages)}")
    validate_family(cfg.model)
    check_sft_selection(cfg.sft_selection)
    decoding_settings(OmegaConf.to_container(cfg.eval, resolve=True))
    return task, loss_cls


def oracle_references(cfg: DictConfig) -> bool:
    """Whether the run explicitly lets references of the unlabeled prompts into the pair stage."""
    return bool(cfg.pairs.get("oracle_references", False))


def is_oracle_run(cfg: DictConfig, loss_cls: type) -> bool:
    """An oracle run sees labels PLaD never sees; reports must mark it."""
    return oracle_references(cfg) or bool(loss_cls.needs_oracle_references)
