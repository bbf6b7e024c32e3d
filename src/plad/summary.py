"""The short table printed at the end of every run: each system's test metrics and where the
run's outputs are."""
from __future__ import annotations

from pathlib import Path
from typing import Any

from rich.console import Console
from rich.table import Table


def _fmt(value: Any) -> str:
    return f"{value:.3f}" if isinstance(value, (int, float)) else "n/a"


def print_summary(task: Any, results: dict[str, Any], run_dir: Path, timings: dict[str, float]) -> None:
    console = Console()
    metrics = results.get("metrics") or {}
    systems: dict[str, dict[str, float]] = metrics.get("systems", {})
    if systems:
        keys = [task.main_metric] + [k for k in next(iter(systems.values())) if k != task.main_metric][:5]
        arrow = "higher" if task.higher_is_better else "lower"
        table = Table(title=f"{task.name}: {metrics.get('split', 'test')} metrics ({task.main_metric}: {arrow} is better)")
        table.add_column("system")
        for k in keys:
            table.add_column(k, justify="right")
        for name, m in systems.items():
            table.add_row(name, *[f"{m[k]:.4f}" if isinstance(m.get(k), (int, float)) else "-" for k in keys])
        console.print(table)
        for name, w in (metrics.get("win_rate") or {}).items():
            console.print(f"win rate {name}: {w['rate']:.3f} [{w['low']:.3f}, {w['high']:.3f}] (n={w['n']})")
        cal = metrics.get("calibration") or {}
        for name, c in cal.items():
            if isinstance(c, dict) and "spearman" in c:  # None when no prompt had distinct candidates
                console.print(f"calibration {name}: spearman {_fmt(c['spearman'])}, rank acc {_fmt(c.get('rank_acc'))}")
    stats = (results.get("pairs") or {}).get("stats")
    if stats:
        console.print(f"pairs: {results['pairs']['path']}")
    console.print("time: " + ", ".join(f"{k} {v:.1f}s" for k, v in timings.items()))
    console.print(f"outputs: {run_dir}")
    for f in sorted(run_dir.glob("*.json")) + sorted(run_dir.glob("*.jsonl")) + sorted(run_dir.glob("*.png")):
        console.print(f"  {f.name}")
