"""Configs as Hydra composes them (a loss YAML may build on another through its defaults list)."""
from __future__ import annotations

from functools import lru_cache
from pathlib import Path

from omegaconf import DictConfig

CONFIGS = Path(__file__).resolve().parents[2] / "configs"


def loss_names() -> list[str]:
    """Every option of the loss group."""
    return sorted(p.stem for p in (CONFIGS / "loss").glob("*.yaml"))


@lru_cache(maxsize=None)
def loss_config(name: str) -> DictConfig:
    """``configs/loss/<name>.yaml`` composed as ``loss=<name>`` would give it."""
    from hydra import compose, initialize_config_dir

    with initialize_config_dir(config_dir=str(CONFIGS), version_base="1.3"):
        return compose("train", overrides=[f"loss={name}"]).loss
