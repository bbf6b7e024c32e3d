"""Stage 5: the distilled student, trained with the configured loss on the data its class declares
(the pair set, or the labeled train split for continued SFT); saved run-locally, never cached."""
from __future__ import annotations

from pathlib import Path
from typing import Any

from omegaconf import DictConfig

from plad.stages.refs import ModelRef


def run(cfg: DictConfig, student0: ModelRef, teacher: ModelRef, pairs: Any, data: Any, loggers: list[Any],
        run_dir: Path) -> ModelRef:
    """``pairs``: the PairSet of the pairs stage (None for losses trained on the labeled split)."""
    from plad import distributed
    from plad.models.build import save_model
    from plad.fit import fit_distill

    pairs_path = pairs.path if pairs is not None else None
    module, _ = fit_distill(cfg, student0.path, teacher.path, pairs_path, loggers, run_dir, data=data)
    if distributed.is_main():
        save_model(module.student, module.tokenizer, run_dir / "student")
    distributed.barrier()
    return ModelRef(run_dir / "student", "")
