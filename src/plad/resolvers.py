"""OmegaConf resolvers the configs use; importing this module registers them (idempotent)."""
from __future__ import annotations

import os

from omegaconf import OmegaConf


def wandb_offline() -> bool:
    """Offline unless the environment asks for online syncing or carries credentials."""
    mode = os.environ.get("WANDB_MODE", "")
    return mode in ("offline", "disabled") or (mode != "online" and "WANDB_API_KEY" not in os.environ)


OmegaConf.register_new_resolver("wandb_offline", wandb_offline, replace=True)
