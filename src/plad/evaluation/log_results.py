"""Send evaluation results to whichever Lightning loggers the run has (W&B, TensorBoard, CSV).

Each logger gets what it can show: W&B scalars + a samples table + images, TensorBoard scalars +
images + a text sample preview, CSV scalars only. Nothing here needs a network (W&B offline works).
"""

from __future__ import annotations

import json
import math
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

N_TEXT_SAMPLES = 8


def flatten(d: dict[str, Any], prefix: str = "", sep: str = "/") -> dict[str, float]:
    """Nested dict -> {"a/b/c": number}; strings, None and non-finite numbers are dropped."""
    out: dict[str, float] = {}
    for k, v in d.items():
        key = f"{prefix}{sep}{k}" if prefix else str(k)
        if isinstance(v, dict):
            out.update(flatten(v, key, sep))
        elif isinstance(v, (bool, int, float, np.number)) and math.isfinite(float(v)):
            out[key] = float(v)
    return out


def sample_rows(samples: Sequence[dict[str, Any]]) -> tuple[list[str], list[list[Any]]]:
    """samples.jsonl rows as a flat table: prompt, reference, output/<sys>, quality/<sys>, judge/<pair>."""
    if not samples:
        return [], []
    first = samples[0]
    columns = ["prompt", "reference"]
    columns += [f"output/{n}" for n in first.get("outputs", {})] + [f"quality/{n}" for n in first.get("quality", {})]
    columns += [f"judge/{n}" for n in first.get("judge", {})]

    def cell(row: dict[str, Any], col: str) -> Any:
        if "/" not in col:
            return row.get(col)
        group, name = col.split("/", 1)
        return row.get({"output": "outputs"}.get(group, group), {}).get(name)

    return columns, [[cell(r, c) for c in columns] for r in samples]


def _read_png(path: Path) -> np.ndarray:
    import matplotlib.image

    img = matplotlib.image.imread(str(path))
    return np.ascontiguousarray(img[..., :3]) if img.ndim == 3 else img


def _log_wandb(
    logger: Any, flat: dict[str, float], samples: Sequence[dict], plots: Sequence[Path], prefix: str
) -> None:
    import wandb

    logger.log_metrics(flat)
    run = logger.experiment
    run.summary.update(flat)
    columns, rows = sample_rows(samples)
    payload: dict[str, Any] = {f"{prefix}/plots/{Path(p).stem}": wandb.Image(str(p)) for p in plots}
    if columns:
        payload[f"{prefix}/samples"] = wandb.Table(columns=columns, data=[[str(c) for c in r] for r in rows])
    run.log(payload)


def _log_tensorboard(
    logger: Any, flat: dict[str, float], samples: Sequence[dict], plots: Sequence[Path], prefix: str, step: int
) -> None:
    logger.log_metrics(flat, step=step)
    writer = logger.experiment
    for p in plots:
        writer.add_image(f"{prefix}/{Path(p).stem}", _read_png(Path(p)), global_step=step, dataformats="HWC")
    columns, rows = sample_rows(samples[:N_TEXT_SAMPLES])
    if columns:
        esc = lambda x: str(x).replace("|", "\\|").replace("\n", " ")  # noqa: E731
        table = "\n".join(
            ["| " + " | ".join(columns) + " |", "|" + "---|" * len(columns)]
            + ["| " + " | ".join(esc(c) for c in r) + " |" for r in rows]
        )
        writer.add_text(f"{prefix}/samples", table, global_step=step)
    writer.flush()


def read_eval_dir(out_dir: str | Path, metrics: dict[str, Any]) -> tuple[list[dict[str, Any]], list[Path]]:
    """The samples and plots ``evaluate`` wrote into ``out_dir`` (plots named in metrics["plots"])."""
    out_dir = Path(out_dir)
    path = out_dir / "samples.jsonl"
    samples = [json.loads(line) for line in path.read_text().splitlines() if line.strip()] if path.is_file() else []
    return samples, [out_dir / name for name in metrics.get("plots", [])]


def log_results(
    loggers: Sequence[Any],
    metrics: dict[str, Any],
    samples: Sequence[dict[str, Any]] | str | Path,
    plots: Sequence[str | Path] | None = None,
    prefix: str = "eval",
    step: int = 0,
) -> dict[str, float]:
    """Log one evaluation to every logger; returns the flattened scalars that were logged.

    ``samples`` is the list of samples.jsonl rows, or the folder ``evaluate`` wrote to (then the
    samples and, unless ``plots`` is given, the plots are read from it).
    """
    from lightning.pytorch.loggers import CSVLogger, TensorBoardLogger, WandbLogger

    if isinstance(samples, (str, Path)):
        samples, found = read_eval_dir(samples, metrics)
        plots = found if plots is None else plots
    flat = flatten(metrics, prefix)
    plots = [Path(p) for p in plots or []]
    for logger in loggers or []:
        if isinstance(logger, WandbLogger):
            _log_wandb(logger, flat, samples, plots, prefix)
        elif isinstance(logger, TensorBoardLogger):
            _log_tensorboard(logger, flat, samples, plots, prefix, step)
        else:  # CSVLogger and anything else that takes scalars
            logger.log_metrics(flat, step=step)
            if isinstance(logger, CSVLogger):
                logger.save()
    return flat
