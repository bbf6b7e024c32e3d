"""``plad-train`` from a built, non-editable install: configs ship inside the wheel, and the entry
point finds them from any working directory."""

import json
import os
import subprocess
import sys
from pathlib import Path

import tomllib
from helpers import HANG_S
from setuptools import find_packages

ROOT = Path(__file__).resolve().parents[1]


def test_the_package_list_covers_every_package_under_src():
    listed = tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["setuptools"]["packages"]
    assert sorted(listed) == sorted(find_packages(str(ROOT / "src")) + ["plad.configs"])


def test_installed_wheel_runs_debug_fast_from_another_directory(tmp_path):
    env = {**os.environ, "OMP_NUM_THREADS": "1", "WANDB_MODE": "offline"}
    subprocess.run(
        [
            sys.executable,
            "-m",
            "pip",
            "wheel",
            "-q",
            "--no-deps",
            "--no-build-isolation",
            str(ROOT),
            "-w",
            str(tmp_path / "wheel"),
        ],
        check=True,
        cwd=tmp_path,
        env=env,
        capture_output=True,
    )
    wheel = next((tmp_path / "wheel").glob("plad-*.whl"))
    site = tmp_path / "site"
    subprocess.run(
        [sys.executable, "-m", "pip", "install", "-q", "--no-deps", "--target", str(site), str(wheel)],
        check=True,
        env=env,
        capture_output=True,
    )
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    env["PYTHONPATH"] = str(site)  # ahead of the editable source checkout on sys.path
    where = subprocess.run(
        [sys.executable, "-c", "import plad.cli as t; print(t.__file__); print(t.CONFIG_DIR)"],
        cwd=elsewhere,
        env=env,
        capture_output=True,
        text=True,
        check=True,
    ).stdout.split()
    assert all(Path(p).is_relative_to(site) for p in where), where
    run = subprocess.run(
        [str(site / "bin" / "plad-train"), "debug=fast", "eval.calibration.n_prompts=2"],
        cwd=elsewhere,
        env=env,
        capture_output=True,
        text=True,
        timeout=HANG_S,
    )
    assert run.returncode == 0, run.stderr[-2000:]
    metrics = list((elsewhere / "logs" / "runs").glob("*/*/metrics.json"))
    assert len(metrics) == 1 and "student" in json.loads(metrics[0].read_text())["systems"]
