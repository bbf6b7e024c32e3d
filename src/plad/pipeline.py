"""The stage graph of one run: data -> teacher SFT -> student SFT -> pairs -> distillation ->
evaluation. Stages 2-4 are cached under content fingerprints (``plad.cache``) that include the run
seed, so a multirun over losses at one seed pays only for distillation and evaluation. What each
stage does lives in ``plad.stages``."""
from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any

from hydra.utils import instantiate
from omegaconf import DictConfig, OmegaConf

import plad.resolvers  # noqa: F401  (${wandb_offline:} in logger configs, also for in-process callers)
from plad.stages import distill as distill_stage, evaluate as evaluate_stage, pairs as pairs_stage, sft as sft_stage
from plad.stages.preflight import is_oracle_run, preflight
from plad.stages.refs import ModelRef
from plad.summary import print_summary


def run(cfg: DictConfig) -> dict[str, Any]:
    start = time.perf_counter()
    run_dir, cache = Path(cfg.paths.output_dir), Path(cfg.paths.cache_dir)
    task, loss_cls = preflight(cfg)  # bad values fail here, before any expensive work
    stages, timings = list(cfg.stages), {}

    t = time.perf_counter()
    data = task.load(cache)  # generated or converted once, then read back from the cache
    eval_split = cfg.eval.get("split", "test")
    if eval_split not in data:
        raise ValueError(f"eval.split: expected one of {list(data)}, got {eval_split!r}")
    timings["data"] = time.perf_counter() - t

    t = time.perf_counter()
    shared_tok, tok_fp = sft_stage.tokenizer(cfg, task, data, cache)
    teacher = sft_stage.obtain_sft_model(cfg, "teacher", task, data, shared_tok, tok_fp, cache, run_dir)
    student0 = sft_stage.obtain_sft_model(cfg, "student", task, data, shared_tok, tok_fp, cache, run_dir)
    timings["sft"] = time.perf_counter() - t

    loggers = [instantiate(c) for c in cfg.logger.values()] if cfg.logger else []
    full_config = {k: OmegaConf.to_container(v, resolve=True) if OmegaConf.is_config(v) else v
                   for k, v in cfg.items() if k != "hydra"}
    for lg in loggers:  # the whole composed config, so runs can be filtered and compared by any value
        lg.log_hyperparams(full_config)
    systems: dict[str, ModelRef] = {"teacher": teacher, "student_init": student0}
    results: dict[str, Any] = {"oracle": is_oracle_run(cfg, loss_cls), "diagnostics": {}}
    reused = {"teacher": teacher.reused, "student_init": student0.reused}  # cached stages this run
    pairs_path = None
    try:
        if "pairs" in stages:
            t = time.perf_counter()
            pairs = pairs_stage.obtain(cfg, teacher, student0, data, task, cache)
            results["diagnostics"] = pairs_stage.diagnostics(pairs, data["unlabeled"], task)
            timings["pairs"] = time.perf_counter() - t
            results["pairs"], pairs_path = {"path": str(pairs.path), "stats": pairs.stats}, pairs.path
            reused["pairs"] = pairs.reused
        if "distill" in stages:  # preflight checked that a pair-trained loss has the pairs stage
            t = time.perf_counter()
            systems["student"] = distill_stage.distill(cfg, student0, teacher, pairs_path, data, loggers, run_dir)
            timings["distill"] = time.perf_counter() - t
        if "evaluate" in stages:
            t = time.perf_counter()
            extra = {"oracle": results["oracle"], "diagnostics": results["diagnostics"]}
            results["metrics"] = evaluate_stage.evaluate(cfg, task, data[eval_split], systems, cache, run_dir,
                                                         loggers, extra)
            timings["evaluate"] = time.perf_counter() - t
    finally:
        _finish_loggers(loggers)
    timings["total"] = time.perf_counter() - start
    results["timings"], results["reused"] = timings, reused
    (run_dir / "run_summary.json").write_text(json.dumps(
        {"timings": timings, "reused": reused, "oracle": results["oracle"], "diagnostics": results["diagnostics"],
         "systems": {k: str(v.path) for k, v in systems.items()},
         "config": OmegaConf.to_container(cfg, resolve=False)}, indent=2, default=str))
    print_summary(task, results, run_dir, timings)
    return results


def _finish_loggers(loggers: list[Any]) -> None:
    """Close W&B runs explicitly so jobs of a multirun never merge into one run."""
    for lg in loggers:
        if type(lg).__name__ == "WandbLogger":
            import wandb
            wandb.finish()
