"""The short table printed at the end of every run: each system's metrics (main metric, exact
match, leak rate and degenerate share first), the pseudo-label noise of the pairs, and where the
run's outputs are."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from omegaconf import DictConfig, OmegaConf
from rich.console import Console
from rich.table import Table

from plad.cache import atomic_write
from plad.tasks.base import Task

HEADLINE = ("exact_match", "leak_rate", "degenerate")
NOISE_KEYS = ("student_wins", "ties", "teacher_quality", "student_quality", "n_pairs")


def _fmt(value: Any) -> str:
    if isinstance(value, int) and not isinstance(value, bool):
        return str(value)
    return f"{value:.3f}" if isinstance(value, float) else "n/a"


def summary_columns(main_metric: str, systems: dict[str, dict[str, Any]], max_columns: int = 14) -> list[str]:
    """The main metric, then exact match, leak rate and degenerate share when the task reports them
    (the numbers a reader checks first), then the other metrics in their order, up to ``max_columns``."""
    seen = list(dict.fromkeys(k for m in systems.values() for k in m if isinstance(m.get(k), (int, float))))
    first = [main_metric] + [k for k in HEADLINE if k in seen and k != main_metric]
    return (first + [k for k in seen if k not in first])[: max(max_columns, len(first))]


def write_run_summary(run_dir: Path, results: dict[str, Any], cfg: DictConfig) -> None:
    """run_summary.json: timings, which stages came from the cache, where each system is. Written
    last, it also marks the run as finished (``ckpt_path=last`` resumes only unfinished runs)."""
    summary = {k: results.get(k) for k in ("timings", "reused", "oracle", "diagnostics", "systems")}
    summary["config"] = OmegaConf.to_container(cfg, resolve=False)
    atomic_write(run_dir / "run_summary.json", json.dumps(summary, indent=2, default=str))


def print_summary(task: Task, results: dict[str, Any], run_dir: Path, timings: dict[str, float]) -> None:
    console = Console()
    metrics = results.get("metrics") or {}
    systems: dict[str, dict[str, float]] = metrics.get("systems", {})
    if systems:
        keys = summary_columns(task.main_metric, systems)
        arrow = "higher" if task.higher_is_better else "lower"
        mode = f", {metrics['decoding']} decoding" if metrics.get("decoding") else ""
        oracle = " [ORACLE: used references of the unlabeled prompts]" if metrics.get("oracle") else ""
        # Metrics as rows, systems as columns: a few short system names fit any width, so no
        # metric name is ever cut (rich truncates wide tables when stdout is not a terminal).
        table = Table(
            title=f"{task.name}: {metrics.get('split', 'test')} metrics{mode} "
            f"({task.main_metric}: {arrow} is better){oracle}"
        )
        table.add_column("metric", no_wrap=True)
        for name in systems:
            table.add_column(name, justify="right", no_wrap=True)
        for k in keys:
            table.add_row(k, *[f"{m[k]:.4f}" if isinstance(m.get(k), (int, float)) else "-" for m in systems.values()])
        Console(width=max(console.width, 40 + 14 * len(systems))).print(table)
        for name, w in (metrics.get("win_rate") or {}).items():
            console.print(f"win rate {name}: {w['rate']:.3f} [{w['low']:.3f}, {w['high']:.3f}] (n={w['n']})")
        cal = metrics.get("calibration") or {}
        for name, c in cal.items():
            if isinstance(c, dict) and "spearman" in c:  # None when no prompt had distinct candidates
                console.print(f"calibration {name}: spearman {_fmt(c['spearman'])}, rank acc {_fmt(c.get('rank_acc'))}")
    noise = (metrics.get("diagnostics") or {}).get("pseudo_label_noise") or {}
    if noise:
        console.print("pseudo-label noise: " + ", ".join(f"{k} {_fmt(noise.get(k))}" for k in NOISE_KEYS if k in noise))
    stats = (results.get("pairs") or {}).get("stats")
    if stats:
        console.print(f"pairs: {results['pairs']['path']}")
    console.print("time: " + ", ".join(f"{k} {v:.1f}s" for k, v in timings.items()))
    console.print(f"outputs: {run_dir}")
    for f in sorted(run_dir.glob("*.json")) + sorted(run_dir.glob("*.jsonl")) + sorted(run_dir.glob("*.png")):
        console.print(f"  {f.name}")
