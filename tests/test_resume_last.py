"""``ckpt_path=last`` resumes the newest unfinished run of the same configuration: a real job is
killed (SIGKILL) during distillation and a second job picks up its last checkpoint."""

import csv
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import torch
from helpers import HANG_S, forkserver
from omegaconf import OmegaConf

from plad.training.resume import unfinished_runs

ROOT = Path(__file__).resolve().parents[1]


def _age(path: Path, seconds: int) -> None:
    """Set ``path``'s mtime ``seconds`` after a fixed origin: "newer" without sleeping on a clock."""
    os.utime(path, ns=(1_700_000_000_000_000_000 + seconds * 10**9,) * 2)


def _run_dir(log_dir: Path, name: str, cfg: dict, finished: bool = False) -> Path:
    d = log_dir / "runs" / "2026-01-01" / name
    (d / ".hydra").mkdir(parents=True)
    OmegaConf.save(OmegaConf.create(cfg), d / ".hydra" / "config.yaml")
    (d / "checkpoints").mkdir()
    (d / "checkpoints" / "last.ckpt").write_bytes(b"x")
    _age(d / "checkpoints" / "last.ckpt", 0)
    if finished:
        (d / "run_summary.json").write_text("{}")
    return d


def test_a_truncated_last_checkpoint_is_skipped(tmp_path):
    """A job killed while writing last.ckpt leaves a truncated file: the previous run is resumed."""
    from plad.training.resume import resolve_ckpt_path

    cfg = {"seed": 0, "ckpt_path": "last", "paths": {"log_dir": str(tmp_path), "output_dir": str(tmp_path / "new")}}
    older = _run_dir(tmp_path, "older", cfg)
    torch.save({"global_step": 4}, older / "checkpoints" / "last.ckpt")
    _age(older / "checkpoints" / "last.ckpt", 1)
    newer = _run_dir(tmp_path, "newer", cfg)
    torch.save({"global_step": 6}, newer / "checkpoints" / "last.ckpt")
    data = (newer / "checkpoints" / "last.ckpt").read_bytes()
    (newer / "checkpoints" / "last.ckpt").write_bytes(data[: len(data) // 2])
    _age(newer / "checkpoints" / "last.ckpt", 2)
    assert resolve_ckpt_path(OmegaConf.create(cfg)) == str(older / "checkpoints" / "last.ckpt")


def test_only_unfinished_runs_of_the_same_configuration_are_candidates(tmp_path):
    cfg = {"seed": 0, "loss": {"lr": 1e-4}, "paths": {"output_dir": "a"}, "ckpt_path": None}
    same = _run_dir(tmp_path, "same", {**cfg, "paths": {"output_dir": "b"}, "ckpt_path": "last"})
    _run_dir(tmp_path, "done", cfg, finished=True)
    _run_dir(tmp_path, "other_seed", {**cfg, "seed": 1})
    newer = _run_dir(tmp_path, "newer", cfg)
    _age(newer / "checkpoints" / "last.ckpt", 1)
    assert unfinished_runs(tmp_path, OmegaConf.create(cfg)) == [newer, same]


def test_a_run_saved_before_a_field_was_added_is_found_while_the_field_is_off(tmp_path):
    """Fields added later (``monitor: null``, ``pii_format_share: 0.0``) are absent from older runs'
    saved configs: today's run finds them while it holds those fields off, and not once it turns one on."""
    old = {"seed": 0, "task": {"proper_share": 0.3}, "model": {"student": {"sft": {"lr": 2e-4}}}}
    run = _run_dir(tmp_path, "old", old)
    today = {
        "seed": 0,
        "task": {"proper_share": 0.3, "pii_format_share": 0.0},
        "model": {"student": {"sft": {"lr": 2e-4, "monitor": None}}},
    }
    assert unfinished_runs(tmp_path, today) == [run]
    assert unfinished_runs(tmp_path, {**today, "task": {"proper_share": 0.3, "pii_format_share": 0.5}}) == []
    sft = {"lr": 2e-4, "monitor": "val_quality"}
    assert unfinished_runs(tmp_path, {**today, "model": {"student": {"sft": sft}}}) == []
    assert unfinished_runs(tmp_path, {**today, "task": {"proper_share": 0.0, "pii_format_share": 0.0}}) == []


def _wait_for_checkpoint(path: Path, proc: "subprocess.Popen | forkserver.ForkedProcess") -> None:
    """Until ``path`` holds a whole checkpoint (it loads), or fail if the job ends first."""
    while True:
        assert proc.poll() is None, "the job ended before it wrote a checkpoint"
        try:
            torch.load(path, weights_only=False, map_location="cpu")
            return
        except Exception:  # noqa: BLE001 - absent, or half written: not yet a checkpoint
            time.sleep(0.2)


def test_ckpt_path_last_resumes_a_killed_job(tmp_path):
    env = forkserver.env()
    common = [
        sys.executable,
        str(ROOT / "train.py"),
        "debug=fast",
        f"paths.log_dir={tmp_path / 'logs'}",
        "distill.max_steps=120",
        "distill.val_check_interval=20",
        "eval.calibration.n_prompts=2",
    ]
    first = forkserver.start(
        [*common, f"hydra.run.dir={tmp_path / 'logs/runs/d/first'}"],
        cwd=ROOT,
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    ckpt = tmp_path / "logs/runs/d/first/checkpoints/last.ckpt"
    try:
        _wait_for_checkpoint(ckpt, first)
    finally:
        os.kill(first.pid, signal.SIGKILL)
        first.wait()
    killed_at = torch.load(ckpt, weights_only=False, map_location="cpu")["global_step"]
    assert 0 < killed_at < 120

    second = forkserver.run(
        [*common, "ckpt_path=last", f"hydra.run.dir={tmp_path / 'logs/runs/d/second'}"],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=HANG_S,
    )
    assert second.returncode == 0, second.stderr[-2000:]
    assert f"resuming {ckpt}" in second.stdout + second.stderr
    with open(tmp_path / "logs/runs/d/second/csv/version_0/metrics.csv") as f:
        steps = [int(r["step"]) for r in csv.DictReader(f) if r.get("train/loss")]
    assert steps[0] >= killed_at and steps[-1] == 119  # continued where the killed job stopped
