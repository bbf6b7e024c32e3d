"""The stage dependency rule: a stage needs its inputs, either from an earlier stage in
``stages`` or from the cache. Checked after the (cheap) cache lookups and before any training,
so an unmet input fails in one line instead of silently skipping work.

    sft       <- data (always available)
    pairs     <- sft (teacher, initial student)
    distill   <- sft (initial student; the teacher for white-box losses) + pairs (pair-trained losses)
    evaluate  <- sft (teacher, initial student) + distill when it is in ``stages``
"""

from __future__ import annotations

from collections.abc import Callable

from plad.checks import InputError

STAGES = ("sft", "pairs", "distill", "evaluate")  # every stage ``stages`` may list, in the order they run


def inputs_of(stage: str, loss_cls: type) -> list[str]:
    if stage == "pairs":
        return ["sft"]
    if stage == "distill":
        return ["sft"] + (["pairs"] if loss_cls.data_source == "pairs" else [])
    if stage == "evaluate":
        return ["sft"]
    return []


def check_stages(stages: list[str]) -> None:
    """``stages`` names known stages, in the order they run (inputs of stages left out are checked
    against the cache later, by ``check_inputs``)."""
    unknown = [s for s in stages if s not in STAGES]
    if unknown:
        raise InputError(f"stages: expected a subset of {list(STAGES)}, got unknown {unknown}")
    if [s for s in STAGES if s in stages] != list(stages):
        raise InputError(f"stages: expected stages in the order {list(STAGES)}, got {list(stages)}")


def needed_from_cache(stages: list[str], loss_cls: type) -> list[str]:
    """Inputs of listed stages that are not listed themselves: they must come from the cache."""
    return [need for s in stages for need in inputs_of(s, loss_cls) if need not in stages]


def check_inputs(stages: list[str], loss_cls: type, missing: dict[str, Callable[[], str | None]]) -> None:
    """``missing[stage]()`` names the absent cache entry of ``stage`` (None when it is cached)."""
    for s in stages:
        for need in inputs_of(s, loss_cls):
            if need in stages:
                continue
            absent = missing[need]()
            if absent:
                raise InputError(
                    f"stages: '{s}' needs the output of '{need}', which is not in {list(stages)} "
                    f"and not cached ({absent}); expected '{need}' in stages"
                )
