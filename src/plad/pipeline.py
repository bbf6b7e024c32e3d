"""The stage graph of one run: data -> teacher SFT -> student SFT -> pairs -> distillation ->
evaluation. Stages 1-4 are cached under content fingerprints (``plad.cache``), so a multirun over
losses or seeds pays only for distillation and evaluation."""
from __future__ import annotations

import json
import logging
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from hydra.utils import instantiate
from omegaconf import DictConfig, OmegaConf

import plad.resolvers  # noqa: F401  (${wandb_offline:} in logger configs, also for in-process callers)
from plad.cache import atomic_dir, entry_dir, fingerprint, is_complete
from plad.config_checks import check_config
from plad.summary import print_summary

log = logging.getLogger("plad")
SFT_VERSION = "sft-v1"
EVAL_VERSION = "eval-v1"  # bump when generation for evaluation changes


@dataclass
class ModelRef:
    """A saved model directory (HF ``save_pretrained`` layout) and the fingerprint naming it."""
    path: Path
    fingerprint: str
    reused: bool = False  # taken from the cache by this run

    def load(self) -> tuple[Any, Any]:
        from plad.models.build import load_saved
        return load_saved(self.path)


def obtain_sft_model(cfg: DictConfig, role: str, task: Any, data: Any, shared_tok: Any, tok_fp: str,
                     cache: Path, run_dir: Path) -> ModelRef:
    """The SFT'd teacher or initial student: from the cache, or built/loaded and fine-tuned here."""
    from plad.models.build import build_model, count_parameters, load_pretrained, save_model
    from plad.training import fit_sft

    spec = cfg.model[role]
    fp = fingerprint(spec, tok_fp if not spec.pretrained else None, task.fingerprint(), cfg.base_seed,
                     cfg.task.max_prompt_tokens, cfg.task.max_new_tokens, SFT_VERSION)
    path = entry_dir(cache, "models", f"{cfg.model.family}-{role}-{fp}")
    if is_complete(path):
        log.info("%s: reusing cached SFT model %s", role, path)
        return ModelRef(path, fp, reused=True)
    if spec.pretrained:
        model, tok = load_pretrained(spec)
    else:
        tok = shared_tok
        model = build_model(spec, tok, seed=cfg.base_seed)
    stats: dict[str, Any] = {"role": role, "parameters": count_parameters(model)}
    log.info("%s: %s with %.2fM parameters, SFT for %d steps", role, type(model).__name__,
             stats["parameters"] / 1e6, spec.sft.max_steps)
    if spec.sft.max_steps > 0:
        stats.update(fit_sft(cfg, model, tok, spec.sft, data["train"], run_dir, role))
    with atomic_dir(path) as tmp:
        save_model(model, tok, tmp)
        (tmp / "sft_stats.json").write_text(json.dumps(stats, indent=2))
    return ModelRef(path, fp)


def run(cfg: DictConfig) -> dict[str, Any]:
    start = time.perf_counter()
    run_dir = Path(cfg.paths.output_dir)
    cache = Path(cfg.paths.cache_dir)
    check_config(cfg)
    # Build every configured object first: bad values fail here, before any expensive work.
    task = instantiate(cfg.task)
    instantiate(cfg.loss)
    from plad.models.build import obtain_tokenizer, validate_family
    validate_family(cfg.model)

    stages = list(cfg.stages)
    timings: dict[str, float] = {}
    t = time.perf_counter()
    data = task.load()
    eval_split = cfg.eval.get("split", "test")
    if eval_split not in data:
        raise ValueError(f"eval.split: expected one of {list(data)}, got {eval_split!r}")
    timings["data"] = time.perf_counter() - t

    t = time.perf_counter()
    tok_fp = fingerprint(cfg.model.tokenizer, task.fingerprint())
    needs_shared_tok = not (cfg.model.teacher.pretrained and cfg.model.student.pretrained)
    shared_tok = obtain_tokenizer(
        cfg.model.tokenizer, lambda: list(data["train"]["prompt"]) + list(data["train"]["reference"]),
        task.fingerprint(), cache) if needs_shared_tok else None
    teacher = obtain_sft_model(cfg, "teacher", task, data, shared_tok, tok_fp, cache, run_dir)
    student0 = obtain_sft_model(cfg, "student", task, data, shared_tok, tok_fp, cache, run_dir)
    timings["sft"] = time.perf_counter() - t

    loggers = [instantiate(c) for c in cfg.logger.values()] if cfg.logger else []
    full_config = {k: OmegaConf.to_container(v, resolve=True) if OmegaConf.is_config(v) else v
                   for k, v in cfg.items() if k != "hydra"}
    for lg in loggers:  # the whole composed config, so runs can be filtered and compared by any value
        lg.log_hyperparams(full_config)
    systems: dict[str, ModelRef] = {"teacher": teacher, "student_init": student0}
    results: dict[str, Any] = {}
    reused = {"teacher": teacher.reused, "student_init": student0.reused}  # cached stages this run
    try:
        if "pairs" in stages:
            from plad.pairs.build import obtain_pairs
            t = time.perf_counter()
            pairs = obtain_pairs(cfg.pairs, data["unlabeled"], task, teacher.load, student0.load,
                                 teacher.fingerprint, student0.fingerprint, cache,
                                 cfg.task.max_prompt_tokens, cfg.task.max_new_tokens, cfg.base_seed)
            timings["pairs"] = time.perf_counter() - t
            results["pairs"] = {"path": str(pairs.path), "stats": pairs.stats}
            reused["pairs"] = pairs.reused
            if "distill" in stages:
                from plad.models.build import save_model
                from plad.training import fit_distill
                t = time.perf_counter()
                module, _ = fit_distill(cfg, student0.path, teacher.path, pairs.path, loggers, run_dir)
                save_model(module.student, module.tokenizer, run_dir / "student")
                systems["student"] = ModelRef(run_dir / "student", "")
                timings["distill"] = time.perf_counter() - t
        if "evaluate" in stages:
            from plad.evaluation.evaluate import evaluate
            from plad.evaluation.log_results import log_results
            t = time.perf_counter()
            main = "student" if "student" in systems else "student_init"
            loaded = {name: ref.load() for name, ref in systems.items()}
            gen = OmegaConf.to_container(cfg.eval.generation, resolve=True)
            if not gen.get("do_sample"):
                gen.pop("seed", None)  # greedy outputs do not depend on the run's seed
            eval_key = (task.fingerprint(), eval_split, cfg.eval.max_examples, cfg.eval.batch_size, gen, EVAL_VERSION)
            output_cache = {name: entry_dir(cache, "eval", f"{name}-{fingerprint(ref.fingerprint, *eval_key)}")
                            for name, ref in systems.items() if ref.fingerprint}  # fixed models only
            metrics = evaluate(loaded, task, data[eval_split], cfg.eval, instantiate(cfg.judge), run_dir,
                               main_system=main, baseline_outputs=dict(cfg.eval.get("baselines") or {}),
                               output_cache=output_cache)
            timings["evaluate"] = time.perf_counter() - t
            results["metrics"] = metrics
            log_results(loggers, metrics, run_dir)
    finally:
        _finish_loggers(loggers)
    timings["total"] = time.perf_counter() - start
    results["timings"], results["reused"] = timings, reused
    (run_dir / "run_summary.json").write_text(json.dumps(
        {"timings": timings, "reused": reused, "systems": {k: str(v.path) for k, v in systems.items()},
         "config": OmegaConf.to_container(cfg, resolve=False)}, indent=2, default=str))
    print_summary(task, results, run_dir, timings)
    return results


def _finish_loggers(loggers: list[Any]) -> None:
    """Close W&B runs explicitly so jobs of a multirun never merge into one run."""
    for lg in loggers:
        if type(lg).__name__ == "WandbLogger":
            import wandb
            wandb.finish()
