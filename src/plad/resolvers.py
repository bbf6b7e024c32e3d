"""OmegaConf resolvers the configs use (importing this module registers them, idempotent), and where
the configs are."""

from __future__ import annotations

import os
from pathlib import Path

from omegaconf import OmegaConf

from plad.checks import InputError


def config_dir() -> str:
    """configs/ of the source checkout (editable install, ``python train.py``), else the copy that a
    built wheel ships inside the package (``plad/configs``, see pyproject.toml)."""
    here = Path(__file__).resolve().parent
    for candidate in (here.parents[1] / "configs", here / "configs"):
        if (candidate / "train.yaml").is_file():
            return str(candidate)
    raise FileNotFoundError(f"configs: expected train.yaml in {here.parents[1] / 'configs'} or {here / 'configs'}")


def wandb_offline() -> bool:
    """Offline unless the environment asks for online syncing or carries credentials."""
    mode = os.environ.get("WANDB_MODE", "")
    return mode in ("offline", "disabled") or (mode != "online" and "WANDB_API_KEY" not in os.environ)


OmegaConf.register_new_resolver("wandb_offline", wandb_offline, replace=True)


def run_time() -> str:
    """The time part of a run directory. Processes of one multi-process launch (torchrun, srun)
    must agree on it without talking, so they use the launch's id instead of their own clock."""
    import datetime

    from plad.distributed import env_world

    if env_world() > 1:
        run_id = os.environ.get("SLURM_JOB_ID") or os.environ.get("TORCHELASTIC_RUN_ID", "none")
        if run_id == "none":
            raise InputError(
                "hydra.run.dir: the processes of this launch share no run id; start torchrun with "
                "--standalone or --rdzv-id=<id>, or pass hydra.run.dir=<dir>"
            )
        step = os.environ.get("SLURM_STEP_ID")
        return f"launch-{run_id}" + (f".{step}" if step else "")
    return datetime.datetime.now().strftime("%H-%M-%S.%f")


def rank_suffix() -> str:
    """'' on rank 0, '_rank<r>' elsewhere: one log file per process in a shared run directory."""
    from plad.distributed import env_rank

    r = env_rank()
    return f"_rank{r}" if r else ""


OmegaConf.register_new_resolver("run_time", run_time, replace=True, use_cache=True)  # like ${now:}: one value per sweep
OmegaConf.register_new_resolver("rank_suffix", rank_suffix, replace=True)
