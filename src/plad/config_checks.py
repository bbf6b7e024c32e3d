"""Cheap checks of the composed config, run before any expensive work. Objects built with
``instantiate`` (task, loss, judge) validate their own arguments; this covers plain values."""
from __future__ import annotations

from omegaconf import DictConfig
from plad.checks import InputError

POSITIVE_INTS = ["distill.batch_size", "distill.val_check_interval", "distill.max_nonfinite",
                 "task.max_prompt_tokens", "task.max_new_tokens"]
NON_NEGATIVE_INTS = ["distill.max_steps", "distill.warmup_steps", "distill.val_size", "base_seed", "seed"]
POSITIVE_FLOATS = ["distill.lr"]
NON_NEGATIVE_FLOATS = ["distill.weight_decay"]
STAGES = ("sft", "pairs", "distill", "evaluate")


def _get(cfg: DictConfig, dotted: str):
    node = cfg
    for part in dotted.split("."):
        if part not in node:
            raise InputError(f"{dotted}: missing from the config")
        node = node[part]
    return node


def check_config(cfg: DictConfig) -> None:
    for key in POSITIVE_INTS + NON_NEGATIVE_INTS:
        v = _get(cfg, key)
        lo = 1 if key in POSITIVE_INTS else 0
        if isinstance(v, bool) or not isinstance(v, int) or v < lo:
            kind = "a positive integer" if lo else "an integer >= 0"
            raise InputError(f"{key}: expected {kind}, got {v!r}")
    for key in POSITIVE_FLOATS + NON_NEGATIVE_FLOATS:
        v = _get(cfg, key)
        ok = isinstance(v, (int, float)) and not isinstance(v, bool) and (v > 0 if key in POSITIVE_FLOATS else v >= 0)
        if not ok:
            kind = "a positive number" if key in POSITIVE_FLOATS else "a number >= 0"
            raise InputError(f"{key}: expected {kind}, got {v!r}")
    unknown = [s for s in cfg.stages if s not in STAGES]
    if unknown:
        raise InputError(f"stages: expected a subset of {list(STAGES)}, got unknown {unknown}")
    if cfg.ckpt_path not in (None, "last"):
        from plad.resume import resolve_ckpt_path
        resolve_ckpt_path(cfg)  # a missing checkpoint file or run directory fails here, in one line
