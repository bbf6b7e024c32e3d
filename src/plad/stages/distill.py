"""Stage 5: the distilled student, trained with the configured loss on the data its class declares
(the pair set, or the labeled train split for continued SFT); saved run-locally, never cached."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from omegaconf import DictConfig

from plad.models.ref import ModelRef


def run(
    cfg: DictConfig, student0: ModelRef, teacher: ModelRef, pairs: Any, data: Any, loggers: list[Any], run_dir: Path
) -> ModelRef:
    """``pairs``: the PairSet of the pairs stage (None for losses trained on the labeled split)."""
    from plad import distributed
    from plad.models.build import save_model
    from plad.training.trainer import fit_distill
    from plad.training.weights import full_state, is_sharded, trained_model

    pairs_path = pairs.path if pairs is not None else None
    module, trainer = fit_distill(cfg, student0.path, teacher.path, pairs_path, loggers, run_dir, data=data)
    # Under FSDP/DeepSpeed every rank takes part in gathering the full weights; rank 0 saves them.
    gathered = full_state(trainer, "student") if is_sharded(trainer.strategy) else None
    student = trained_model(trainer, module.student, gathered)
    if distributed.is_main():
        save_model(student, module.tokenizer, run_dir / "student")
    distributed.barrier()
    return ModelRef(run_dir / "student", "")
