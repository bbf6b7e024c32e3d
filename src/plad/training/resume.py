"""Which checkpoint ``ckpt_path`` resumes distillation from.

Every job gets a new run directory, so Lightning's own ``"last"`` (the new directory's checkpoint
folder) could never resume a killed job. Here ``last`` means the most recent *unfinished* run of
the same configuration under ``paths.log_dir`` (finished runs write ``run_summary.json``), and a
run directory or a ``.ckpt`` file can be named directly.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

from omegaconf import DictConfig, OmegaConf

from plad.cache import fingerprint
from plad.checks import InputError
from plad.saved_config import VOLATILE, read_saved_config
from plad.training.compat import current_targets

log = logging.getLogger("plad")
FINISHED = "run_summary.json"  # written by plad.pipeline at the end of a job


def _plain(cfg: DictConfig | dict[str, Any]) -> dict[str, Any]:
    plain = OmegaConf.to_container(cfg, resolve=False) if isinstance(cfg, DictConfig) else dict(cfg)
    return {k: v for k, v in plain.items() if k not in VOLATILE}


def config_key(cfg: DictConfig | dict[str, Any]) -> str:
    """What makes two runs 'the same configuration': everything but paths and the resume switch.
    A run saved before the training code moved names its old ``_target_`` paths: read as today's."""
    return fingerprint(current_targets(_plain(cfg)))


def _neutral(value: Any) -> bool:
    """The value a new option takes when it is off (null, false, 0, empty): the project adds options
    that way, so that runs and caches from before the option behave as if it had been there."""
    if isinstance(value, dict):
        return all(_neutral(v) for v in value.values())
    return value is None or value in ("", []) or (isinstance(value, int | float) and value == 0)


def _without_added(cfg: dict[str, Any], other: dict[str, Any]) -> dict[str, Any]:
    """``cfg`` less the fields ``other`` lacks that ``cfg`` holds at their neutral value, at any depth."""
    out = {}
    for k, v in cfg.items():
        if k not in other:
            if not _neutral(v):
                out[k] = v
        elif isinstance(v, dict) and isinstance(other[k], dict):
            out[k] = _without_added(v, other[k])
        else:
            out[k] = v
    return out


def same_configuration(a: DictConfig | dict[str, Any], b: DictConfig | dict[str, Any]) -> bool:
    """Whether two runs are the same configuration (``config_key``), a field one of them lacks
    counting as equal when the other holds it at its neutral value: a run saved before a config
    field was added (``monitor: null``, ``pii_format_share: 0.0``) is still found by ``last``."""
    pa, pb = _plain(a), _plain(b)
    return config_key(_without_added(pa, pb)) == config_key(_without_added(pb, pa))


def _last_ckpt(run_dir: Path) -> Path:
    return run_dir / "checkpoints" / "last.ckpt"


def unfinished_runs(log_dir: Path, cfg: DictConfig | dict[str, Any], exclude: Path | None = None) -> list[Path]:
    """Run dirs (single runs and multirun jobs) of the same configuration as ``cfg``
    (``same_configuration``) with a last.ckpt and no run summary, newest checkpoint first."""
    found, mine = [], _plain(cfg)  # today's config made plain once, not once per saved run
    for saved in list(log_dir.glob("runs/*/*/.hydra/config.yaml")) + list(
        log_dir.glob("multiruns/*/*/*/.hydra/config.yaml")
    ):
        run_dir = saved.parent.parent
        if exclude is not None and run_dir.resolve() == exclude.resolve():
            continue
        if (run_dir / FINISHED).exists() or not _last_ckpt(run_dir).is_file():
            continue
        try:
            if same_configuration(read_saved_config(run_dir).config, mine):
                found.append(run_dir)
        except Exception as e:  # an unreadable config of another run is not this run's concern
            log.warning("resume: skipping %s (%s)", saved, type(e).__name__)
    return sorted(found, key=lambda d: _last_ckpt(d).stat().st_mtime, reverse=True)


def readable(ckpt: Path) -> bool:
    """Whether a checkpoint opens: a job killed while writing last.ckpt leaves a truncated file (its
    zip directory, at the end, is missing), which must not be resumed from."""
    import torch

    try:
        torch.load(ckpt, map_location="cpu", weights_only=False, mmap=True)
        return True
    except Exception as e:  # truncated, empty or not a checkpoint
        log.warning("resume: %s does not open (%s); skipping it", ckpt, type(e).__name__)
        return False


def resolve_ckpt_path(cfg: DictConfig) -> str | None:
    """The checkpoint file to resume from, or None to start fresh."""
    ck = cfg.get("ckpt_path")
    if ck is None:
        return None
    if ck == "last":
        runs = [
            r
            for r in unfinished_runs(Path(cfg.paths.log_dir), cfg, exclude=Path(cfg.paths.output_dir))
            if readable(_last_ckpt(r))
        ]
        if not runs:
            log.warning(
                "ckpt_path=last: no unfinished run of this configuration under %s; starting fresh", cfg.paths.log_dir
            )
            return None
        log.info("ckpt_path=last: resuming %s", _last_ckpt(runs[0]))
        return str(_last_ckpt(runs[0]))
    path = Path(str(ck))
    if path.is_dir():
        if not _last_ckpt(path).is_file():
            raise InputError(f"ckpt_path: expected a run directory with checkpoints/last.ckpt, got {str(ck)!r}")
        return str(_last_ckpt(path))
    if not path.is_file():
        raise InputError(f"ckpt_path: expected null, 'last', a run directory or a checkpoint file, got {str(ck)!r}")
    return str(path)
