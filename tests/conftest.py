"""Shared fixtures: run the pipeline in-process on composed configs (no process start-up cost)."""
import os
from pathlib import Path
from typing import Any, Callable

import pytest
from hydra import compose, initialize_config_dir
from hydra.core.hydra_config import HydraConfig

os.environ.setdefault("WANDB_MODE", "offline")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
CONFIGS = str(Path(__file__).resolve().parents[1] / "configs")


def compose_run_config(log_dir: Path, run_dir: Path, *overrides: str):
    with initialize_config_dir(config_dir=CONFIGS, version_base="1.3"):
        cfg = compose("train", overrides=[f"paths.log_dir={log_dir}", f"paths.output_dir={run_dir}",
                                          *overrides], return_hydra_config=True)
    HydraConfig.instance().set_config(cfg)  # for ${hydra:...} interpolations (run name, choices)
    return cfg


@pytest.fixture
def run_pipeline(tmp_path: Path) -> Callable[..., dict[str, Any]]:
    """``run_pipeline(*overrides, log_dir=..., name=...)`` runs a whole job; returns its results."""
    from plad.pipeline import run

    def _run(*overrides: str, log_dir: Path | None = None, name: str = "run") -> dict[str, Any]:
        run_dir = tmp_path / name
        run_dir.mkdir(parents=True, exist_ok=True)
        cfg = compose_run_config(log_dir or tmp_path / "logs", run_dir, *overrides)
        with open(run_dir / "resolved.yaml", "w") as f:
            from omegaconf import OmegaConf
            f.write(OmegaConf.to_yaml({k: v for k, v in cfg.items() if k != "hydra"}, resolve=False))
        results = run(cfg)
        results["run_dir"] = run_dir
        return results

    return _run
