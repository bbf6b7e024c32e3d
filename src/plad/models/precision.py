"""The trainer's precision outside the trainer: reference log-probs cached by the pair stage are
computed the way Lightning will compute the policy's during training (its own precision plugins:
autocast for ``*-mixed``, a cast for ``*-true``), so DPO/IPO log-ratios start at 0 instead of
carrying a systematic bf16-vs-fp32 offset."""

from __future__ import annotations

import copy
from collections.abc import Iterator
from contextlib import contextmanager
from typing import TYPE_CHECKING, Any

from plad.checks import InputError  # torch is imported where it is used: the warm pair cache needs none

if TYPE_CHECKING:
    import torch

# Lightning's precision names, and the legacy spellings it still accepts.
ALIASES = {
    "32": "32-true",
    32: "32-true",
    "64": "64-true",
    64: "64-true",
    "16": "16-mixed",
    16: "16-mixed",
    "bf16": "bf16-mixed",
}
KNOWN = ("64-true", "32-true", "16-true", "bf16-true", "16-mixed", "bf16-mixed")


def canonical_precision(precision: str | int | None) -> str:
    """``trainer.precision`` in Lightning's spelling (None = Lightning's default, 32-true)."""
    name = ALIASES.get(precision, precision) if precision is not None else "32-true"
    if name not in KNOWN:
        raise InputError(f"trainer.precision: expected one of {list(KNOWN)}, got {precision!r}")
    return name


def _plugin(precision: str, device: torch.device) -> Any:
    from lightning.fabric.plugins.precision import DoublePrecision, HalfPrecision, MixedPrecision, Precision

    if precision.endswith("-mixed"):
        return MixedPrecision(precision, device="cuda" if device.type == "cuda" else "cpu")
    if precision in ("16-true", "bf16-true"):
        return HalfPrecision(precision)
    return DoublePrecision() if precision == "64-true" else Precision()


@contextmanager
def scoring_precision(precision: str, model: torch.nn.Module) -> Iterator[torch.nn.Module]:
    """``model`` (a converted copy for ``*-true`` precisions other than 32) under the forward
    context Lightning's plugin uses in training."""
    plugin = _plugin(canonical_precision(precision), next(model.parameters()).device)
    converted = (
        model if precision in ("32-true", "16-mixed", "bf16-mixed") else plugin.convert_module(copy.deepcopy(model))
    )
    with plugin.forward_context():
        yield converted
