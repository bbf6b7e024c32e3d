"""The stage graph of one run, and nothing else: data -> SFT (teacher, initial student) -> pairs ->
distillation -> evaluation. Each stage is a module of ``plad.stages`` with the same shape (config +
upstream references in, a reference out); stages 2-4 are cached under content fingerprints, so a
multirun over losses at one seed pays only for distillation and evaluation. A stage left out of
``stages`` must find its output in the cache (``plad.stages.plan``)."""

from __future__ import annotations

import gc
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from omegaconf import DictConfig

import plad.resolvers  # noqa: F401  (${wandb_offline:} in logger configs, also for in-process callers)
from plad import distributed
from plad.cache import sweep as cache_sweep
from plad.run_summary import print_summary, write_run_summary
from plad.stages import data as data_stage
from plad.stages import distill as distill_stage
from plad.stages import evaluate as evaluate_stage
from plad.stages import pairs as pairs_stage
from plad.stages import plan
from plad.stages import sft as sft_stage
from plad.stages.preflight import is_oracle_run, preflight
from plad.training.loggers import open_loggers


def run(cfg: DictConfig) -> dict[str, Any]:
    with _frozen_heap():
        return _run(cfg)


def _run(cfg: DictConfig) -> dict[str, Any]:
    run_dir, cache, stages = Path(cfg.paths.output_dir), Path(cfg.paths.cache_dir), list(cfg.stages)
    task, loss_cls = preflight(cfg)  # bad values fail here, before any expensive work
    cache_sweep(cache)  # temp and trash dirs that a killed run left behind (never work in progress)
    distributed.connect(cfg)  # several processes: one group for every stage (README, "Rank policy")
    results: dict[str, Any] = {"oracle": is_oracle_run(cfg, loss_cls), "diagnostics": {}, "timings": {}}
    timed = _timer(results["timings"])
    start = time.perf_counter()

    with timed("data"):
        data = distributed.main_first(lambda: data_stage.run(cfg, task, cache))
    teacher, student0 = (sft_stage.entry(cfg, role, task, cache) for role in ("teacher", "student"))
    plan.check_inputs(
        stages,
        loss_cls,
        {  # an input neither listed nor cached fails now, in one line
            "sft": lambda: next((str(r.path) for r in (teacher, student0) if not r.reused), None),
            "pairs": lambda: (
                None
                if pairs_stage.run(cfg, teacher, student0, data, task, cache, lookup_only=True)
                else "the pair set of this configuration"
            ),
        },
    )

    with timed("sft"):
        teacher, student0 = (sft_stage.run(cfg, role, task, data, cache, run_dir) for role in ("teacher", "student"))
    systems = {"teacher": teacher, "student_init": student0}
    results["reused"] = {"teacher": teacher.reused, "student_init": student0.reused}
    pairs = None
    with open_loggers(cfg) as loggers:
        if "pairs" in stages or "pairs" in plan.needed_from_cache(stages, loss_cls):
            with timed("pairs"):
                pairs = pairs_stage.run(cfg, teacher, student0, data, task, cache)
                results["diagnostics"] = pairs_stage.diagnostics(pairs, data[pairs_stage.prompt_split(cfg)], task)
            results["pairs"] = {"path": str(pairs.path), "stats": pairs.stats}
            results["reused"]["pairs"] = pairs.reused
        if "distill" in stages:
            with timed("distill"):
                systems["student"] = distill_stage.run(cfg, student0, teacher, pairs, data, loggers, run_dir)
        if not distributed.is_main():
            return results  # evaluation, metrics and the summary are rank 0's; this rank is done
        if "evaluate" in stages:
            with timed("evaluate"):
                extra = {"oracle": results["oracle"], "diagnostics": results["diagnostics"]}
                results["metrics"] = evaluate_stage.run(cfg, task, data, systems, cache, run_dir, loggers, extra)
    results["timings"]["total"] = time.perf_counter() - start
    results["systems"] = {k: str(v.path) for k, v in systems.items()}
    write_run_summary(run_dir, results, cfg)
    print_summary(task, results, run_dir, results["timings"])
    return results


@contextmanager
def _frozen_heap() -> Iterator[None]:
    """Hide what exists before the run (the imported stack: ~500k objects) from the garbage collector
    while it lasts. Every model switch calls ``gc.collect()`` to free the old model; over the whole
    heap that costs ~0.5 s each on a CPU, over the run's own objects milliseconds. A caller that
    froze its heap itself (the test session) keeps it frozen."""
    frozen_before = gc.get_freeze_count() > 0
    gc.collect()
    gc.freeze()
    try:
        yield
    finally:
        if not frozen_before:
            gc.unfreeze()


def _timer(timings: dict[str, float]):
    @contextmanager
    def timed(stage: str) -> Iterator[None]:
        t = time.perf_counter()
        yield
        timings[stage] = time.perf_counter() - t

    return timed
