"""Entry point: ``python train.py [overrides]`` or ``plad-train [overrides]``."""

from __future__ import annotations

import os
import sys

import hydra
from hydra.errors import InstantiationException
from omegaconf import DictConfig

from plad.checks import InputError
from plad.resolvers import config_dir  # importing it registers ${wandb_offline:} before Hydra composes

CONFIG_DIR = config_dir()


def input_error(exc: BaseException | None) -> InputError | None:
    """The project's own input error behind an exception, also when ``instantiate`` wrapped it; None
    for anything else (a defect, a library failure): those keep their traceback."""
    while exc is not None:
        if isinstance(exc, InputError):
            return exc
        exc = exc.__cause__ if isinstance(exc, InstantiationException) else None
    return None


@hydra.main(version_base="1.3", config_path=CONFIG_DIR, config_name="train")
def main(cfg: DictConfig) -> None:
    from plad import distributed
    from plad.heap import keep_freed_memory
    from plad.pipeline import run

    keep_freed_memory()  # CPU steps otherwise page-fault their buffers in again every time (heap.py)
    try:
        if distributed.processes(cfg.trainer) > 1 and not distributed.launched_externally():
            _launch(cfg)  # this process only starts and waits for the N that do the work
            return
        run(cfg)
    except (InputError, InstantiationException) as e:  # config and input errors: one line, exit 2
        error = input_error(e)
        if error is None or os.environ.get("PLAD_TRACEBACK"):
            raise  # anything else: Hydra prints the traceback and exits 1
        print(f"error: {error}", file=sys.stderr)
        sys.exit(2)


def _launch(cfg: DictConfig) -> None:
    from hydra.core.hydra_config import HydraConfig

    from plad.distributed import launch

    hc = HydraConfig.get()
    rc = launch(cfg, list(hc.overrides.task), cfg.paths.output_dir, hc.job.name)
    if rc != 0:
        print(
            f"error: a process of the {cfg.trainer.devices}-process run exited with status {rc} "
            f"(logs: {cfg.paths.output_dir})",
            file=sys.stderr,
        )
        sys.exit(rc)


if __name__ == "__main__":
    main()
