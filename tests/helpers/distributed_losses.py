"""Losses that misbehave on one rank only, for the multi-process tests (imported by the child
processes of ``tests/test_distributed.py`` through PYTHONPATH)."""

from __future__ import annotations

import os

import torch

from plad.losses.ranking import RankingLoss


class RankOneNaN(RankingLoss):
    """The ranking loss, NaN on rank 1's second training batch only."""

    calls = 0

    def compute(self, s):
        loss, metrics = super().compute(s)
        if torch.is_grad_enabled():
            RankOneNaN.calls += 1
            if RankOneNaN.calls == 2 and os.environ.get("RANK") == "1":
                loss = loss * float("nan")
        return loss, metrics
