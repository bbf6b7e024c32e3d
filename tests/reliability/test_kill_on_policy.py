"""kill -9 during an ON-POLICY distillation (distill.on_policy.lmbda): the rerun of the same command
resumes from the last checkpoint and ends with the metrics and weights of an uninterrupted run of
the same seed. Nothing about the on-policy samples is saved: which batches are resampled and their
sampling noise are functions of (seed, step), and the checkpoint restores the student that samples.
"""

from __future__ import annotations

import csv
import shutil

from train_process import OVERRIDES, Job, results, run, weights_digest

# GKD: the on-policy sample is the sequence it trains on, so every sample shows in the weights (a
# ranking hinge that is already satisfied would ignore y-). lmbda 0.5: some steps on-policy, some
# not, so a resumed run must also draw the same choices.
ON_POLICY = (*OVERRIDES, "loss=gkd", "distill.on_policy.lmbda=0.5", "distill.val_check_interval=3")


def _on_policy_steps(job: Job) -> list[int]:
    """Optimizer steps whose batch was resampled, from the run's CSV log."""
    (metrics,) = job.run_dir.glob("csv/version_*/metrics.csv")
    with open(metrics) as f:
        return sorted({int(r["step"]) for r in csv.DictReader(f) if r.get("on_policy/active") == "1.0"})


def test_an_on_policy_run_killed_in_distillation_resumes_to_the_uninterrupted_result(tmp_path):
    reference = Job(tmp_path / "reference", overrides=ON_POLICY)
    assert run(reference).returncode == 0, reference.text()[-3000:]
    steps = _on_policy_steps(reference)
    assert 0 < len(steps) < 12, f"expected some, not all, of 12 steps on-policy, got {steps}"

    job = Job(tmp_path / "killed", overrides=ON_POLICY)
    for entry in (reference.cache / "models", reference.cache / "tokenizers", reference.cache / "data"):
        shutil.copytree(entry, job.cache / entry.name)
    shutil.copytree(reference.cache / "pairs", job.cache / "pairs")
    killed = run(job, kill_when=lambda j: (j.run_dir / "checkpoints" / "last.ckpt").is_file())
    assert killed.killed, job.text()[-2000:]
    assert not (job.run_dir / "student" / "model.safetensors").exists()  # the kill landed in distillation

    rerun = run(job)
    assert rerun.returncode == 0, job.text()[-3000:]
    ref, got = results(reference.run_dir), results(job.run_dir)
    assert got == ref, {k: (ref.get(k), got.get(k)) for k in ref.keys() | got.keys() if ref.get(k) != got.get(k)}
    assert weights_digest(job.run_dir) == weights_digest(reference.run_dir)
