"""Helpers of the multi-process tests: real ``train.py`` runs (``tests/reliability/train_process``)
on one or two processes, and the distilled students' weights."""

from __future__ import annotations

import sys
from pathlib import Path

from safetensors.torch import load_file

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "reliability"))
from train_process import Job, run  # noqa: E402

from helpers import HANG_S

TWO = ("trainer=ddp_sim", "trainer.devices=2")
# debug=fast SFT batches are 8: halved per process, the global batch (and the cache key) is the same.
HALF_SFT = ("model.teacher.sft.batch_size=4", "model.student.sft.batch_size=4")


def weights(run_dir: Path) -> dict:
    return load_file(str(run_dir / "student" / "model.safetensors"))


def finish(job: Job) -> None:
    outcome = run(job, timeout=HANG_S)
    assert outcome.returncode == 0, job.text()[-4000:]
