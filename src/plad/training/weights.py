"""The full trained weights of a fit. One process and DDP keep whole models; FSDP and DeepSpeed
keep shards (and wrap layers), so there every rank takes part in gathering them for rank 0."""

from __future__ import annotations

from typing import Any

import lightning as L
import torch


def is_sharded(strategy: Any) -> bool:
    """FSDP / DeepSpeed: parameters live in shards (and layers in wrappers) during and after a fit."""
    from lightning.pytorch.strategies import DeepSpeedStrategy, FSDPStrategy

    return isinstance(strategy, (FSDPStrategy, DeepSpeedStrategy))


def full_state(trainer: L.Trainer, attr: str) -> dict[str, torch.Tensor] | None:
    """Full weights of the LightningModule's ``attr`` (a Hugging Face model) on CPU; None on ranks
    other than 0 when the strategy shards parameters (gathered by the strategy, all ranks call)."""
    if is_sharded(trainer.strategy):
        state = trainer.strategy.lightning_module_state_dict()
        if not trainer.is_global_zero:
            return None
    else:
        state = trainer.lightning_module.state_dict()
    return {k[len(attr) + 1 :]: v.detach().to("cpu", copy=True) for k, v in state.items() if k.startswith(attr + ".")}


def trained_model(trainer: L.Trainer, model: Any, state: dict[str, torch.Tensor] | None) -> Any:
    """The model to save: ``model`` itself (loaded with ``state`` when given) in one process or
    under DDP; under FSDP/DeepSpeed, whose wrapping changed ``model``, a fresh copy built from its
    config with the gathered ``state`` (rank 0; the other ranks get None)."""
    if not is_sharded(trainer.strategy):
        if state is not None:
            model.load_state_dict(state)
        return model
    if state is None:
        return None
    from plad.models.lora import fresh_copy

    fresh = fresh_copy(model)  # a LoRA model comes back with its adapters, merged when saved
    fresh.load_state_dict(state)
    return fresh
