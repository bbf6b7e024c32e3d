"""Several processes against one, the arithmetic: 2 processes x batch b == 1 process x batch 2b
== 1 process x b with 2 accumulation steps (student weights within 1e-5), for ``ranking`` (with its
NLL regulariser) and ``dpo``. This holds only because every loss is normalised by the size of the
global batch (all ranks, all micro-batches), not per rank or per micro-batch (that gives ~4e-3).
Real ``train.py`` runs; the 2-process one is started as a user starts it (``trainer=ddp_sim``)."""
from __future__ import annotations

import json
from pathlib import Path

import pytest
from safetensors.torch import load_file

from distributed_testlib import HALF_SFT, TWO, finish, max_diff, weights
from train_process import Job


@pytest.mark.parametrize("loss", ["ranking", "dpo"])
def test_two_processes_of_batch_b_step_like_one_of_2b_and_like_two_accumulated_micro_batches(tmp_path: Path,
                                                                                           loss: str):
    common = ("debug=fast", f"loss={loss}", "distill.max_steps=6", "distill.lr=1e-3", "distill.val_check_interval=3",
              "stages=[sft,pairs,distill]")
    one = Job(tmp_path, "one_2b", common + ("distill.batch_size=8",))
    accumulated = Job(tmp_path, "accumulated", common + ("distill.batch_size=4", "distill.accumulate_grad_batches=2"))
    two = Job(tmp_path, "two_b", common + ("distill.batch_size=4", *TWO, *HALF_SFT))
    for job in (one, accumulated, two):  # the first builds SFT models and pairs, the others reuse them
        finish(job)
    summary = json.loads((two.run_dir / "run_summary.json").read_text())
    assert summary["reused"] == {"teacher": True, "student_init": True, "pairs": True}

    initial = load_file(str(next((tmp_path / "cache" / "models").glob("*-student-*")) / "model.safetensors"))
    reference = weights(one.run_dir)
    assert max_diff(reference, initial) > 1e-3  # the runs did train: equality below is not trivial
    assert max_diff(weights(two.run_dir), reference) <= 1e-5
    assert max_diff(weights(accumulated.run_dir), reference) <= 1e-5
