"""Configs as Hydra composes them (a loss YAML may build on another through its defaults list)."""

from __future__ import annotations

from functools import cache
from pathlib import Path

from omegaconf import DictConfig

CONFIGS = Path(__file__).resolve().parents[2] / "configs"


def loss_names() -> list[str]:
    """Every option of the loss group."""
    return sorted(p.stem for p in (CONFIGS / "loss").glob("*.yaml"))


@cache
def loss_config(name: str) -> DictConfig:
    """``configs/loss/<name>.yaml`` composed as ``loss=<name>`` would give it."""
    from hydra import compose, initialize_config_dir

    with initialize_config_dir(config_dir=str(CONFIGS), version_base="1.3"):
        return compose("train", overrides=[f"loss={name}"]).loss


def compose_run_config(log_dir: Path, run_dir: Path, *overrides: str) -> DictConfig:
    """``train.yaml`` composed with the run's paths and ``overrides``, registered as the current Hydra
    config (for ``${hydra:...}`` interpolations: run name, choices), as a job would see it."""
    from hydra import compose, initialize_config_dir
    from hydra.core.hydra_config import HydraConfig

    with initialize_config_dir(config_dir=str(CONFIGS), version_base="1.3"):
        cfg = compose(
            "train",
            overrides=[f"paths.log_dir={log_dir}", f"paths.output_dir={run_dir}", *overrides],
            return_hydra_config=True,
        )
    HydraConfig.instance().set_config(cfg)  # for ${hydra:...} interpolations (run name, choices)
    return cfg
