"""scripts/pair_margins.py: it scores the pairs exactly as the pair stage did (the initial student,
rescored, gives the log-probs stored with the pairs), and its summary counts what it says it counts."""

from __future__ import annotations

import importlib.util
import json
import shutil
from pathlib import Path

import numpy as np
import pytest

_spec = importlib.util.spec_from_file_location(
    "pair_margins", Path(__file__).resolve().parents[1] / "scripts" / "pair_margins.py"
)
pair_margins = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(pair_margins)


def test_per_token_counts_the_eos_only_of_finished_samples():
    got = pair_margins.per_token(np.array([-6.0, -6.0]), [[1, 2], [1, 2]], [True, False])
    np.testing.assert_allclose(got, [-2.0, -3.0])


def test_summary_splits_held_out_prompts_and_counts_correct_rankings():
    chosen = np.array([-1.0, -2.0, -0.5, -3.0])
    rejected = np.array([-2.0, -1.0, -1.5, -1.0])
    held = np.array([False, False, False, True])
    s = pair_margins.summary(chosen, rejected, held)
    assert s["all"]["n"] == 4 and s["train_split"]["n"] == 3 and s["held_out"]["n"] == 1
    assert s["train_split"]["accuracy"] == pytest.approx(2 / 3)
    assert s["held_out"] == {"chosen": -3.0, "rejected": -1.0, "margin": -2.0, "accuracy": 0.0, "n": 1}
    assert s["all"]["margin"] == pytest.approx(np.mean(chosen - rejected))


def test_rescoring_the_initial_student_reproduces_the_stored_log_probs(run_pipeline, tmp_path):
    results = run_pipeline("loss=ranking", "debug=fast")
    run = results["run_dir"]
    (run / ".hydra").mkdir(exist_ok=True)  # what Hydra writes for a CLI run
    shutil.copy(run / "resolved.yaml", run / ".hydra" / "config.yaml")
    out = pair_margins.main([results["pairs"]["path"], str(run), "--check-initial", "--out", str(tmp_path / "m")])
    assert out["initial_rescore_gap"] < 1e-4  # per-token nats: same tokens, layout and EOS as the pairs
    assert json.loads((tmp_path / "m" / "pair_margins.json").read_text()) == out
    systems = out["systems"]
    assert set(systems) == {"initial student", run.name}
    assert systems[run.name]["all"]["n"] == out["n_pairs"] == systems["initial student"]["all"]["n"] > 0
    assert (tmp_path / "m" / "pair_margins.png").stat().st_size > 0
