"""Stage 6: every system on the evaluation split (``plad.evaluation.evaluate``). Outputs of fixed
models (teacher, initial student) are cached per (model fingerprint, prompts, decoding settings)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from hydra.utils import instantiate
from omegaconf import DictConfig, OmegaConf

from plad.cache import entry_dir, stage_key
from plad.models.ref import ModelRef
from plad.tasks.base import Task, post_edit_of


def output_cache_entries(
    eval_cfg: dict[str, Any], task: Task, systems: dict[str, ModelRef], cache: Path, backend_key: dict[str, Any]
) -> dict[str, Path]:
    """Cache entries for the outputs of fixed models (those with a fingerprint), keyed by the model,
    the prompts and everything the outputs depend on: the decoding mode, its settings, the backend."""
    from plad.evaluation.decoding import decoding_settings

    key = (
        task.fingerprint(),
        eval_cfg.get("split", "test"),
        eval_cfg.get("max_examples"),
        eval_cfg.get("batch_size"),
        decoding_settings(eval_cfg),
        backend_key,
    )
    return {
        name: entry_dir(cache, "eval", f"{name}-{stage_key('eval', ref.fingerprint, *key)}")
        for name, ref in systems.items()
        if ref.fingerprint
    }


def run(
    cfg: DictConfig,
    task: Task,
    data: Any,
    systems: dict[str, ModelRef],
    cache: Path,
    run_dir: Path,
    loggers: list[Any],
    extra: dict[str, Any],
) -> dict[str, Any]:
    """metrics.json (+ samples, plots) of every system on ``eval.split`` in the run folder, and on each
    of ``eval.extra_splits`` in ``eval_<split>/`` (files only: the loggers get the main split's).
    ``extra`` adds top-level entries to metrics.json. Returns the main split's metrics. One backend
    and one judge serve every split (a model judge loads its weights once)."""
    from plad.backends import make_backend

    backend, judge = make_backend(cfg.get("generation")), instantiate(cfg.judge)
    metrics = _evaluate(cfg, task, data, systems, cache, run_dir, loggers, extra, backend, judge)
    for split in cfg.eval.get("extra_splits") or []:
        other = cfg.copy()
        other.eval.split, other.eval.extra_splits, other.eval.baselines = split, [], {}  # baselines: eval.split's
        _evaluate(other, task, data, systems, cache, run_dir / f"eval_{split}", [], extra, backend, judge)
    return metrics


def _evaluate(
    cfg: DictConfig,
    task: Task,
    data: Any,
    systems: dict[str, ModelRef],
    cache: Path,
    run_dir: Path,
    loggers: list[Any],
    extra: dict[str, Any],
    backend: Any,
    judge: Any,
) -> dict[str, Any]:
    from plad.evaluation.evaluate import evaluate as run_evaluation
    from plad.evaluation.log_results import log_results

    eval_cfg = OmegaConf.to_container(cfg.eval, resolve=True)
    main = "student" if "student" in systems else "student_init"
    edit_name = cfg.model.teacher.get("post_edit")
    edit = post_edit_of(task, edit_name) if "teacher" in systems else None
    if edit is not None:  # the teacher system distilled from: the model, then the edit
        extra = {**extra, "post_edits": {"teacher": edit_name}}
    output_cache = output_cache_entries(eval_cfg, task, systems, cache, backend.key())
    run_dir.mkdir(parents=True, exist_ok=True)
    metrics = run_evaluation(
        systems,
        task,
        data[eval_cfg.get("split", "test")],
        eval_cfg,
        judge,
        run_dir,
        main_system=main,
        baseline_outputs=dict(eval_cfg.get("baselines") or {}),
        output_cache=output_cache,
        extra=extra,
        backend=backend,
        post_edits={"teacher": edit} if edit is not None else None,
    )
    log_results(loggers, metrics, run_dir)
    return metrics
