"""Optimizer, LR schedule and the guarded update shared by both training stages.

The optimizer and schedule come from ``configs/optim/<name>.yaml`` as ``_partial_`` targets; the
stage supplies lr, weight decay, warmup and step budget. Updates are done by hand (Lightning's
manual optimisation) so that a batch whose loss or gradients are not finite is skipped entirely:
no parameter update, no schedule step, and it does not count toward ``max_steps`` (Lightning's
``global_step`` counts optimizer steps).
"""

from __future__ import annotations

import math
from typing import Any

import lightning as L
import torch
from hydra.utils import instantiate
from omegaconf import DictConfig, OmegaConf
from torch import Tensor

from plad.training.compat import current_targets

# Used when a module is built without an ``optim`` config (tests, scripts, old checkpoints).
DEFAULT_OPTIM: dict[str, Any] = {
    "optimizer": {"_target_": "torch.optim.AdamW", "_partial_": True, "betas": [0.9, 0.95]},
    "scheduler": {"_target_": "plad.training.optimizer.warmup_cosine", "_partial_": True, "min_ratio": 0.1},
    "gradient_clip_val": 1.0,
}


def plain_optim(optim: dict | DictConfig | None) -> dict[str, Any]:
    """The optim config as a plain dict (it is saved in checkpoints' hyper-parameters); the schedule
    of a checkpoint written before the move into ``plad.training`` is found at its new path."""
    if optim is None:
        return dict(DEFAULT_OPTIM)
    return current_targets(
        OmegaConf.to_container(optim, resolve=True) if isinstance(optim, DictConfig) else dict(optim)
    )


def warmup_decay(warmup_steps: int, max_steps: int, min_ratio: float = 0.1):
    """Linear warmup, then cosine decay to ``min_ratio`` of the peak learning rate."""

    def f(step: int) -> float:
        if step < warmup_steps:
            return (step + 1) / max(warmup_steps, 1)
        progress = min((step - warmup_steps) / max(max_steps - warmup_steps, 1), 1.0)
        return min_ratio + (1 - min_ratio) * 0.5 * (1 + math.cos(math.pi * progress))

    return f


def warmup_cosine(
    optimizer: torch.optim.Optimizer, warmup_steps: int, max_steps: int, min_ratio: float = 0.1
) -> torch.optim.lr_scheduler.LRScheduler:
    """``configs/optim/adamw.yaml``'s schedule, stepped once per applied optimizer step."""
    return torch.optim.lr_scheduler.LambdaLR(optimizer, warmup_decay(warmup_steps, max_steps, min_ratio))


class GuardedStepModule(L.LightningModule):
    """Base of SFTModule and DistillModule: configured optimizer + schedule, gradient accumulation
    and ``update(loss)``, which applies a step only when the losses and every gradient of the
    accumulation window are finite on every rank.

    Losses are normalised by the size of the global batch of one optimizer step (``global_batch``:
    all ranks, all micro-batches of the window), and scaled by the world size because DDP averages
    gradients over ranks: N ranks x batch b, 1 rank x batch N*b and b x N accumulation steps then
    give the same update (``tests/test_distributed.py``)."""

    def __init__(self) -> None:
        super().__init__()
        self.automatic_optimization = False
        self.nonfinite_in_row = 0
        self.register_buffer("nonfinite_total", torch.zeros((), dtype=torch.long))
        self._micro, self._window_ok, self._window_loss = 0, True, 0.0

    def configure_optimizers(self) -> dict[str, Any]:
        h = self.hparams
        optim = h.optim  # always set: the subclasses store plain_optim(optim)
        params = [p for p in self.parameters() if p.requires_grad]
        groups = [
            {"params": [p for p in params if p.dim() >= 2], "weight_decay": h.weight_decay},
            {"params": [p for p in params if p.dim() < 2], "weight_decay": 0.0},
        ]
        opt = instantiate(optim["optimizer"])(groups, lr=h.lr)
        sched = instantiate(optim["scheduler"])(opt, warmup_steps=h.warmup_steps, max_steps=h.max_steps)
        return {"optimizer": opt, "lr_scheduler": {"scheduler": sched, "interval": "step"}}

    def global_batch(self, batch: dict[str, Tensor], local: Tensor) -> Tensor:
        """[examples, first-sequence target tokens] of the optimizer step's global batch. ``local``:
        this micro-batch's; under accumulation the loader gives the window's (``batch["window"]``)."""
        counts = batch["window"][:2] if "window" in batch else local
        counts = counts.to(self.device, torch.float32)
        strategy = self.trainer.strategy
        return strategy.reduce(counts, reduce_op="sum") if strategy.world_size > 1 else counts

    def _finite(self, ok: bool) -> bool:
        """All ranks skip together, or none does (a skip on one rank alone would desynchronise DDP)."""
        return bool(self.trainer.strategy.reduce_boolean_decision(ok, all=True))

    def update(self, loss: Tensor, batch: dict[str, Tensor]) -> bool | None:
        """Backward of this micro-batch's share of the step loss; at the window's last micro-batch
        clip + optimizer and schedule step. Returns None inside a window, True when the step was
        applied, False (nothing applied) when a loss or a gradient of the window was not finite."""
        opt, sched = self.optimizers(), self.lr_schedulers()
        window_len = int(batch["window"][2]) if "window" in batch else 1
        if self._micro == 0:
            opt.zero_grad(set_to_none=True)
            self._window_ok, self._window_loss = True, 0.0
        self._micro += 1
        scaled = loss * self.trainer.world_size  # DDP averages gradients over ranks; we want their sum
        if self._window_ok and self._finite(bool(torch.isfinite(loss))):
            self.manual_backward(scaled)
            self._window_loss = self._window_loss + scaled.detach()  # a tensor: no device sync here
        else:
            self._window_ok = False
        if self._micro < window_len:
            return None
        self._micro = 0
        if self._window_ok:
            grads = [torch.isfinite(p.grad).all() for p in self.parameters() if p.grad is not None]
            # One device sync for all parameters, not one per tensor.
            if self._finite(bool(torch.stack(grads).all()) if grads else True):
                clip = self.hparams.optim.get("gradient_clip_val")
                if clip:
                    self.clip_gradients(opt, gradient_clip_val=clip, gradient_clip_algorithm="norm")
                opt.step()
                sched.step()
                self.nonfinite_in_row = 0
                return True
        opt.zero_grad(set_to_none=True)
        self.nonfinite_in_row += 1
        self.nonfinite_total += 1
        self.log("train/nonfinite_steps", self.nonfinite_total.float())
        limit = self.hparams.get("max_nonfinite", 10)
        if self.nonfinite_in_row >= limit:
            raise RuntimeError(
                f"training: {self.nonfinite_in_row} non-finite losses or gradients in a row "
                f"(max_nonfinite={limit}); lower the learning rate or check the data"
            )
        return False

    @property
    def step_loss(self) -> Tensor:
        """The loss of the last optimizer step (this rank's estimate of the global batch's loss)."""
        return torch.as_tensor(self._window_loss)
