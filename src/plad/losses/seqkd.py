"""Sequence-level KD (Kim & Rush 2016): cross-entropy on the teacher's sampled outputs y+.

    L = -sum_b log p(y+_b | x_b) / sum_b |y+_b|

The same token-averaged loss as SFT; only the data differs (teacher samples instead of references).
"""

from __future__ import annotations

from plad.losses.sft import SFTLoss


class SeqKDLoss(SFTLoss):
    kind = "baseline"
    order = 20
    inputs = ("chosen",)
    data_source = "pairs"  # teacher samples on the unlabeled prompts
