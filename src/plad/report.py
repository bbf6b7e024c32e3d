"""Aggregate a Hydra multirun into report.md + charts: mean ± std over seeds per task x family x loss.

Usage: ``python -m plad.report <multirun dir> [--out DIR]``. Every ``metrics.json`` under the
folder is one job; its ``.hydra/config.yaml`` (in the folder or a parent) says task, model family,
loss and seed. The loss named on the command line (``.hydra/overrides.yaml``, e.g. ``loss=margin``)
wins, then the option Hydra picked (``.hydra/hydra.yaml``), then the loss config's ``name`` or
class, because several loss configs may share a class.
"""
from __future__ import annotations

import argparse
import json
import sys
from collections import defaultdict
from pathlib import Path
from typing import Any

import numpy as np
import yaml

BEFORE, AFTER = "student_init", "student"


def _find_hydra_dir(path: Path, root: Path) -> Path | None:
    for d in [path, *path.parents]:
        if (d / ".hydra" / "config.yaml").is_file():
            return d / ".hydra"
        if d == root:
            return None
    return None


def _loss_name(cfg: dict[str, Any], overrides: list[str], choices: dict[str, Any]) -> str:
    """Command-line override, else the config group option Hydra picked, else the config itself."""
    for item in overrides:
        key, sep, value = str(item).lstrip("+~").partition("=")
        if sep and key == "loss":
            return value
    if choices.get("loss"):
        return str(choices["loss"])
    loss = cfg.get("loss") or {}
    if loss.get("name"):
        return str(loss["name"])
    return str(loss.get("_target_", "unknown")).rsplit(".", 1)[-1]


def load_job(metrics_path: Path, root: Path) -> dict[str, Any] | None:
    """One row: identity (task, family, loss, seed) + the numbers the report aggregates."""
    hydra_dir = _find_hydra_dir(metrics_path.parent, root)
    if hydra_dir is None:
        print(f"report: skipping {metrics_path} (no .hydra/config.yaml above it)", file=sys.stderr)
        return None
    cfg = yaml.safe_load((hydra_dir / "config.yaml").read_text()) or {}
    overrides_file = hydra_dir / "overrides.yaml"
    overrides = (yaml.safe_load(overrides_file.read_text()) or []) if overrides_file.is_file() else []
    hydra_file = hydra_dir / "hydra.yaml"
    hydra_cfg = (yaml.safe_load(hydra_file.read_text()) or {}) if hydra_file.is_file() else {}
    choices = ((hydra_cfg.get("hydra") or {}).get("runtime") or {}).get("choices") or {}
    m = json.loads(metrics_path.read_text())
    task = cfg.get("task") or {}
    main_system, main_metric = m.get("main_system", AFTER), m.get("main_metric")
    systems = m.get("systems", {})
    row: dict[str, Any] = {
        "task": str(task.get("name") or m.get("task") or choices.get("task") or "unknown"),
        "family": str((cfg.get("model") or {}).get("family") or choices.get("model") or "unknown"),
        "loss": _loss_name(cfg, overrides, choices), "seed": cfg.get("seed"), "job": str(hydra_dir.parent),
        "main_metric": main_metric, "higher_is_better": m.get("higher_is_better", True), "values": {},
    }
    v = row["values"]
    for name in (main_system, "teacher", BEFORE):
        if main_metric in systems.get(name, {}):
            v[f"{main_metric}/{'distilled' if name == main_system else name}"] = systems[name][main_metric]
    for pair, wr in m.get("win_rate", {}).items():
        v[f"win/{pair.split('_vs_', 1)[-1]}"] = wr.get("rate")
    for when, name in (("before", BEFORE), ("after", main_system)):
        for key in ("spearman", "rank_acc"):
            v[f"{key}/{when}"] = (m.get("calibration", {}).get(name) or {}).get(key)
    return row


def aggregate(rows: list[dict[str, Any]]) -> dict[tuple[str, str, str], dict[str, Any]]:
    """Group jobs by (task, family, loss); mean and sample std (ddof=1; 0 for one seed) per value."""
    groups: dict[tuple[str, str, str], list[dict]] = defaultdict(list)
    for r in rows:
        groups[(r["task"], r["family"], r["loss"])].append(r)
    out = {}
    for key, jobs in sorted(groups.items()):
        stats = {}
        for name in dict.fromkeys(k for j in jobs for k in j["values"]):
            xs = np.array([j["values"][name] for j in jobs if j["values"].get(name) is not None], dtype=float)
            if xs.size:
                stats[name] = {"mean": float(xs.mean()), "std": float(xs.std(ddof=1)) if xs.size > 1 else 0.0,
                               "n": int(xs.size)}
        out[key] = {"seeds": sorted({j["seed"] for j in jobs}, key=str), "n_jobs": len(jobs),
                    "main_metric": jobs[0]["main_metric"], "stats": stats}
    return out


def _fmt(s: dict[str, float] | None) -> str:
    return "–" if s is None else f"{s['mean']:.3f} ± {s['std']:.3f}"


def write_markdown(agg: dict, path: Path, charts: list[Path]) -> Path:
    lines = ["# PLaD multirun report", "", "Mean ± std over seeds (sample std, ddof=1).", ""]
    for task in dict.fromkeys(k[0] for k in agg):
        keys = [k for k in agg if k[0] == task]
        metric = agg[keys[0]]["main_metric"]
        order = [f"{metric}/", "win/", "spearman/", "rank_acc/"]
        cols = sorted(dict.fromkeys(c for k in keys for c in agg[k]["stats"]),
                      key=lambda c: next((i for i, o in enumerate(order) if c.startswith(o)), len(order)))
        lines += [f"## {task} (main metric: {metric})", "",
                  "| family | loss | seeds | " + " | ".join(cols) + " |", "|---" * (3 + len(cols)) + "|"]
        for k in keys:
            a = agg[k]
            lines.append(f"| {k[1]} | {k[2]} | {','.join(map(str, a['seeds']))} | "
                         + " | ".join(_fmt(a["stats"].get(c)) for c in cols) + " |")
        lines += [""] + [f"![{c.stem}]({c.name})" for c in charts if c.stem.startswith(f"report_{task}_")] + [""]
    path.write_text("\n".join(lines))
    return path


def _grouped_bars(ax: Any, agg: dict, keys: list, series: list[tuple[str, str]], title: str) -> None:
    """x = (family, loss) groups, one bar per series, whiskers = std over seeds."""
    width = 0.8 / max(len(series), 1)
    for i, (stat, label) in enumerate(series):
        means = [agg[k]["stats"].get(stat, {}).get("mean", np.nan) for k in keys]
        stds = [agg[k]["stats"].get(stat, {}).get("std", 0.0) for k in keys]
        ax.bar(np.arange(len(keys)) + (i - (len(series) - 1) / 2) * width, means, width, yerr=stds,
               capsize=3, label=label)
    ax.set_xticks(range(len(keys)), [f"{k[1]}\n{k[2]}" for k in keys], fontsize=8)
    ax.set_title(title, fontsize=10)
    ax.legend(fontsize=7)


def write_charts(agg: dict, out: Path) -> list[Path]:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    paths = []
    for task in dict.fromkeys(k[0] for k in agg):
        keys = [k for k in agg if k[0] == task]
        metric = agg[keys[0]]["main_metric"]
        wins = list(dict.fromkeys(s for k in keys for s in agg[k]["stats"] if s.startswith("win/")))
        fig, axes = plt.subplots(1, 2, figsize=(12, 4))
        _grouped_bars(axes[0], agg, keys, [(f"{metric}/{s}", s) for s in ("distilled", BEFORE, "teacher")],
                      f"{task}: {metric}")
        _grouped_bars(axes[1], agg, keys, [(w, w.replace("win/", "vs ")) for w in wins], f"{task}: win rate")
        axes[1].axhline(0.5, color="gray", linestyle="--", linewidth=1)
        fig.tight_layout()
        paths.append(out / f"report_{task}_main.png")
        fig.savefig(paths[-1], dpi=100)
        plt.close(fig)
        fig, axes = plt.subplots(1, 2, figsize=(12, 4))
        for ax, stat in zip(axes, ("spearman", "rank_acc")):
            _grouped_bars(ax, agg, keys, [(f"{stat}/before", "before (SFT)"), (f"{stat}/after", "after (distilled)")],
                          f"{task}: calibration {stat}")
        fig.tight_layout()
        paths.append(out / f"report_{task}_calibration.png")
        fig.savefig(paths[-1], dpi=100)
        plt.close(fig)
    return paths


def build_report(root: str | Path, out: str | Path | None = None) -> Path:
    """Aggregate every job under ``root``; writes report.md, report.json and charts; returns report.md."""
    root = Path(root)
    if not root.is_dir():
        raise ValueError(f"multirun dir: expected an existing folder, got {root}")
    rows = [r for p in sorted(root.rglob("metrics.json")) if (r := load_job(p, root)) is not None]
    if not rows:
        raise ValueError(f"multirun dir: expected job folders with metrics.json + .hydra/config.yaml, "
                         f"got none in {root}")
    out = Path(out) if out else root
    out.mkdir(parents=True, exist_ok=True)
    agg = aggregate(rows)
    (out / "report.json").write_text(json.dumps(
        {"jobs": rows, "groups": [{"task": k[0], "family": k[1], "loss": k[2], **v} for k, v in agg.items()]},
        indent=2, default=str))
    return write_markdown(agg, out / "report.md", write_charts(agg, out))


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description="Aggregate a PLaD multirun into report.md and charts.")
    parser.add_argument("multirun_dir", type=Path)
    parser.add_argument("--out", type=Path, default=None, help="output folder (default: the multirun dir)")
    args = parser.parse_args(argv)
    print(build_report(args.multirun_dir, args.out))


if __name__ == "__main__":
    main()
