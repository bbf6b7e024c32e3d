"""Final evaluation on the test split: task metrics, judged win rates, calibration, plots.

Every system (teacher, initial student, distilled student, ...) generates on the same test prompts;
baseline runs are compared through the outputs they saved (their ``samples.jsonl``), so comparing
against a finished run never regenerates or needs its weights. A task's model-free peers
(``task.peer_systems()``, e.g. anonymization's ``rule_based``) are scored, judged and plotted like
any system; calibration skips them (no model). Everything lands in ``out_dir``:
``metrics.json`` (what ``plad.report`` aggregates), ``samples.jsonl`` and PNG plots.
"""

from __future__ import annotations

import json
import logging
from collections import defaultdict, deque
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
from tqdm.auto import tqdm

from plad.backends.base import Backend
from plad.cache import atomic_dir, atomic_write, is_complete
from plad.checks import InputError
from plad.evaluation import plots
from plad.evaluation.calibration import calibrate_systems
from plad.evaluation.decoding import DECODERS, decoding_settings
from plad.evaluation.degenerate import degenerate_share
from plad.evaluation.judges import win_rate
from plad.jsonable import plain, strict
from plad.models.ref import ModelRef
from plad.tasks.base import PostEdit, Task

log = logging.getLogger(__name__)
MAX_PLOTTED_METRICS = 6


def _examples(test: Any, max_examples: int | None) -> list[dict[str, Any]]:
    n = len(test) if max_examples is None else min(int(max_examples), len(test))
    if n == 0:
        raise InputError("eval.max_examples: expected at least one test example, got an empty selection")
    rows = test.select(range(n)) if hasattr(test, "select") else test[:n]
    return [dict(r) for r in rows]


def read_outputs(path: str | Path, prompts: Sequence[str], system: str | None = None) -> list[str]:
    """Outputs another run saved for these prompts (its main system unless ``system`` is given).

    ``path`` is that run's ``samples.jsonl`` or the folder holding it. Rows are matched by prompt
    (repeated prompts in order), so the two runs may have evaluated in different orders.
    """
    path = Path(path)
    path = path / "samples.jsonl" if path.is_dir() else path
    if not path.is_file():
        raise InputError(f"baseline_outputs: expected a samples.jsonl file or a folder holding one, got {path}")
    by_prompt: dict[str, deque[str]] = defaultdict(deque)
    with open(path) as f:
        for line in f:
            if line.strip():
                row = json.loads(line)
                by_prompt[row["prompt"]].append(row["outputs"][system or row["main_system"]])
    missing = sum(1 for p in prompts if not by_prompt.get(p))
    if missing:
        raise InputError(
            f"baseline_outputs: expected outputs for every test prompt in {path}, "
            f"got {missing} of {len(prompts)} missing"
        )
    return [by_prompt[p].popleft() for p in prompts]


def _plotted_metrics(cfg: dict[str, Any], task_metric_names: list[str]) -> list[str]:
    chosen = cfg.get("plot_metrics") or ["quality", *task_metric_names]
    return list(dict.fromkeys(chosen))[:MAX_PLOTTED_METRICS]


def _generate_all(
    backend: Backend,
    systems: dict[str, ModelRef],
    prompts: list[str],
    cfg: dict[str, Any],
    progress: bool,
    output_cache: dict[str, Path] | None = None,
) -> tuple[dict[str, list[str]], dict[str, dict[str, float]]]:
    """Each system's outputs with ``eval.decoding``; a system with an ``output_cache`` entry (fixed
    models such as the teacher and the initial student, keyed by their fingerprint and the decoding
    settings) reuses them."""
    decode = DECODERS[decoding_settings(cfg)["mode"]]
    outputs, stats = {}, {}
    for name, ref in systems.items():
        entry = (output_cache or {}).get(name)
        if entry is not None and is_complete(entry):
            saved = json.loads((entry / "outputs.json").read_text())
            if saved["prompts"] == prompts:
                outputs[name], stats[name] = saved["outputs"], saved["stats"]
                log.info("evaluation: reusing %s outputs from %s", name, entry)
                continue
        outputs[name], stats[name] = decode(backend, ref, prompts, cfg, progress, name)
        if entry is not None:
            with atomic_dir(entry) as tmp:
                (tmp / "outputs.json").write_text(
                    json.dumps({"prompts": prompts, "outputs": outputs[name], "stats": stats[name]})
                )
    return outputs, stats


def peer_outputs(task: Task, examples: list[dict[str, Any]]) -> dict[str, list[str]]:
    """Outputs of the task's model-free peer systems (``task.peer_systems()``: name -> function of
    the rows; none for most tasks); one output per example."""
    out = {}
    for name, fn in task.peer_systems().items():
        outs = [str(o) for o in fn(examples)]
        if len(outs) != len(examples):
            raise InputError(f"peer_systems.{name}: expected {len(examples)} outputs, got {len(outs)}")
        out[name] = outs
    return out


def _judge_all(
    judge: Any,
    task: Task,
    main: str,
    outputs: dict[str, list[str]],
    examples: list[dict[str, Any]],
    boot: dict[str, Any],
    progress: bool,
) -> tuple[dict[str, list[float]], dict[str, dict[str, float]]]:
    """Per-prompt judge scores of ``main`` against every other system, and their win rates."""
    prompts = [ex["prompt"] for ex in examples]
    scores, rates = {}, {}
    others = [o for o in outputs if o != main]
    for other in tqdm(others, desc=f"judge[{getattr(judge, 'name', 'judge')}]", disable=not progress, leave=False):
        scores[other] = [float(s) for s in judge.bind(task).compare(prompts, outputs[main], outputs[other], examples)]
        rates[f"{main}_vs_{other}"] = win_rate(
            scores[other], n_boot=int(boot.get("n", 1000)), seed=int(boot.get("seed", 0))
        )
    return scores, rates


def evaluate(
    systems: dict[str, ModelRef],
    task: Task,
    test: Any,
    cfg: Any,
    judge: Any,
    out_dir: str | Path,
    main_system: str = "student",
    baseline_outputs: dict[str, str | Path] | None = None,
    output_cache: dict[str, Path] | None = None,
    extra: dict[str, Any] | None = None,
    backend: Backend | None = None,
    post_edits: dict[str, PostEdit] | None = None,
) -> dict[str, Any]:
    """Evaluate every system on the test split and write metrics.json, samples.jsonl and plots.
    ``backend`` samples the outputs (default: HF in this process); it holds one model at a time.
    ``post_edits`` {system: edit}: that system's outputs are edited before scoring (a teacher
    chained with rules, ``model.teacher.post_edit``, checked by ``post_edit_of``); its cached
    outputs stay the model's own.

    Returns the content of metrics.json: task, main_system, main_metric, higher_is_better, judge,
    split, decoding ("greedy" | "rerank", with the rerank settings under "rerank"), n_examples,
    systems {name: {metric: value}} (task metrics, quality, degenerate share, generation stats),
    peer_systems (names of the task's model-free systems among them),
    win_rate {"<main>_vs_<other>": {rate, low, high, n}}, calibration {name: {spearman, n_used,
    n_prompts, rank_acc, n_pairs, mean_quality}}, the caller's ``extra`` top-level entries (e.g.
    oracle, diagnostics) and plots (PNG file names in ``out_dir``).
    """
    cfg = plain(cfg) or {}
    decoding = decoding_settings(cfg)
    progress = bool(cfg.get("progress", True))
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    examples = _examples(test, cfg.get("max_examples"))
    prompts = [ex["prompt"] for ex in examples]

    if backend is None:
        from plad.backends.hf import HFBackend

        backend = HFBackend()
    with backend:
        outputs, gen_stats = _generate_all(backend, systems, prompts, cfg, progress, output_cache)
        calibration, points = calibrate_systems(backend, systems, task, examples, cfg, progress)
    for name, edit in (post_edits or {}).items():
        outputs[name] = edit(outputs[name])
    peers = peer_outputs(task, examples)
    for name, outs in peers.items():
        if name in outputs:
            raise InputError(f"peer_systems: expected names different from the systems, got {name!r} twice")
        outputs[name] = outs
    for name, path in (baseline_outputs or {}).items():
        if name in outputs:
            raise InputError(f"baseline_outputs: expected names different from the systems, got {name!r} twice")
        outputs[name] = read_outputs(path, prompts)
    if main_system not in outputs:
        raise InputError(f"main_system: expected one of {sorted(outputs)}, got {main_system!r}")

    quality = {name: [float(task.quality(o, ex)) for o, ex in zip(outs, examples)] for name, outs in outputs.items()}
    system_metrics: dict[str, dict[str, float]] = {}
    task_metric_names: list[str] = []
    for name, outs in outputs.items():
        task_metrics = {k: float(v) for k, v in task.metrics(outs, examples).items()}
        task_metric_names = list(dict.fromkeys([*task_metric_names, *task_metrics]))
        system_metrics[name] = {
            **task_metrics,
            "quality": float(np.mean(quality[name])),
            "degenerate": degenerate_share(outs),
            **gen_stats.get(name, {}),
        }

    judge_scores, win_rates = (
        ({}, {})
        if judge is None
        else _judge_all(judge, task, main_system, outputs, examples, cfg.get("bootstrap") or {}, progress)
    )

    metrics = strict(
        {
            "task": task.name,
            "main_system": main_system,
            "main_metric": task.main_metric,
            "higher_is_better": bool(task.higher_is_better),
            "judge": getattr(judge, "name", None),
            "split": cfg.get("split", "test"),
            "decoding": decoding["mode"],
            **({"rerank": decoding["rerank"]} if "rerank" in decoding else {}),
            "n_examples": len(examples),
            "systems": system_metrics,
            "peer_systems": list(peers),
            "win_rate": win_rates,
            "calibration": calibration,
            **(extra or {}),
        }
    )
    atomic_write(
        out_dir / "samples.jsonl",
        "".join(
            json.dumps(
                strict(
                    {
                        "id": i,
                        "prompt": ex["prompt"],
                        "reference": ex["reference"],
                        "main_system": main_system,
                        "outputs": {n: outputs[n][i] for n in outputs},
                        "quality": {n: quality[n][i] for n in outputs},
                        "judge": {f"{main_system}_vs_{o}": s[i] for o, s in judge_scores.items()},
                    }
                )
            )
            + "\n"
            for i, ex in enumerate(examples)
        ),
    )

    pngs = [
        plots.metric_bars(
            system_metrics,
            _plotted_metrics(cfg, task_metric_names),
            out_dir / "metrics.png",
            main_metric=task.main_metric,
        )
    ]
    if win_rates:
        pngs.append(plots.win_rate_bars(win_rates, out_dir / "win_rate.png"))
    if points:
        pngs.append(plots.calibration_scatter(points, calibration, out_dir / "calibration.png"))
    metrics["plots"] = [p.name for p in pngs]
    atomic_write(out_dir / "metrics.json", json.dumps(metrics, indent=2))
    log.info("evaluation: %s", json.dumps({n: m.get(task.main_metric) for n, m in system_metrics.items()}))
    return metrics
