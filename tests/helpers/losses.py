"""Random pairwise ``SequenceScores`` for the loss tests (log-probs scaled by token counts, reference
log-probs near the policy's, qualities in [0, 1])."""

from __future__ import annotations

import torch

from plad.losses import SequenceScores


def random_pairs(seed: int, batch: int = 6, with_ref: bool = True) -> SequenceScores:
    g = torch.Generator().manual_seed(seed)
    n = torch.randint(1, 20, (batch, 2), generator=g)
    logp = -(torch.rand(batch, 2, generator=g, dtype=torch.float64) * 2 + 0.1) * n
    ref = logp.detach() + torch.randn(batch, 2, generator=g, dtype=torch.float64) if with_ref else None
    return SequenceScores(
        logp=logp.requires_grad_(),
        n_tokens=n,
        ref_logp=ref,
        quality=torch.rand(batch, 2, generator=g, dtype=torch.float64),
    )
