"""The run's experiment loggers (``configs/logger/``): built once, given the whole composed config
so runs can be filtered by any value, and closed explicitly so multirun jobs never merge in W&B."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

from hydra.utils import instantiate
from omegaconf import DictConfig, OmegaConf


@contextmanager
def open_loggers(cfg: DictConfig) -> Iterator[list[Any]]:
    """Every rank builds them (the Trainer needs them for callbacks such as LearningRateMonitor);
    Lightning's loggers write on rank 0 only (``rank_zero_only``; W&B opens no run elsewhere)."""
    loggers = [instantiate(c) for c in cfg.logger.values()] if cfg.logger else []
    full_config = {
        k: OmegaConf.to_container(v, resolve=True) if OmegaConf.is_config(v) else v
        for k, v in cfg.items()
        if k != "hydra"
    }
    for lg in loggers:
        lg.log_hyperparams(full_config)
    try:
        yield loggers
    finally:
        if any(type(lg).__name__ == "WandbLogger" for lg in loggers):
            import wandb

            from plad.report.wandb_runs import save_run_files

            if wandb.run is not None:  # the report's inputs travel with the run (offline and synced)
                save_run_files(wandb.run, cfg.paths.output_dir)
            wandb.finish()
