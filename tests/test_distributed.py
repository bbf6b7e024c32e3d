"""Several processes (DDP over gloo on the CPU, ``trainer=ddp_sim``) against one: real ``train.py``
runs, started the way a user starts them (``python train.py trainer=ddp_sim trainer.devices=2``).

* A whole 2-process run builds every stage once (rank 0 writes, the others wait and read), leaves
  one set of outputs and one cache entry per stage, and measures what the 1-process run measures.
* The arithmetic: 2 processes x batch b == 1 process x batch 2b == 1 process x b with 2
  accumulation steps (student weights within 1% of what the 6 steps can move them:
  ``helpers.numerics.weight_tolerance``), for ``ranking`` (with its NLL regulariser) and ``dpo``.
  This holds only because every loss is normalised by the size of the global batch (all ranks, all
  micro-batches), not per rank or per micro-batch (that gives ~4e-3, 75% of it).
* A NaN loss on one rank only is skipped by every rank.

The whole runs are module fixtures; the other jobs reuse their SFT models and pairs (a multirun over
the two losses per job, so each configuration starts one process or one 2-process launch).
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import pytest
from helpers.distributed import HALF_SFT, TWO, finish, weights
from helpers.numerics import floats_close, weight_tolerance
from helpers.numerics import max_weight_diff as max_diff
from omegaconf import OmegaConf
from safetensors.torch import load_file
from train_process import Job, results

from plad.cache import MARKER, verify

ENTRIES = {
    "data": 1,
    "tokenizers": 1,
    "models": 4,
    "pairs": 1,
    "eval": 2,
}  # models: each SFT model and its pretrained start


def pair_rows(cache: Path) -> int:
    """Pairwise rows of the one pair set in ``cache`` (the runs' batches must divide them)."""
    return json.loads(next((cache / "pairs").glob("*/stats.json")).read_text())["rows"]["pairwise"]


@dataclass
class WholeRuns:
    one: Job  # 1 process, batch 8: builds SFT models and pairs that the later jobs reuse
    two: Job  # 2 processes x 4 in an empty cache of its own


@pytest.fixture(scope="module")
def whole(tmp_path_factory) -> WholeRuns:
    root = tmp_path_factory.mktemp("distributed")
    # 2 distillation steps of 8 rows: inside the first epoch of the ~23 training pairs, so every global
    # batch is full (an epoch's last, short batch differs by construction between 1 and 2 processes)
    runs = WholeRuns(
        Job(root / "one", "run", ("debug=fast", "distill.max_steps=2")),
        Job(root / "two", "run", ("debug=fast", "distill.max_steps=2", *TWO, *HALF_SFT, "distill.batch_size=4")),
    )
    for job in (runs.one, runs.two):
        finish(job)
    return runs


def test_a_two_process_run_builds_each_stage_once_and_measures_what_one_process_measures(whole: WholeRuns):
    one, two = whole.one, whole.two
    assert two.text().count("win rate student_vs_teacher") == 1  # one results table, from rank 0

    cache = two.cache
    assert {kind: len(list((cache / kind).iterdir())) for kind in ENTRIES} == ENTRIES
    assert [str(m.parent) for m in cache.rglob(MARKER) if verify(m.parent) is not None] == []
    outputs = sorted(p.name for p in two.run_dir.iterdir())
    assert outputs.count("metrics.json") == 1 and "run_summary.json" in outputs
    assert not any("rank1" in name for name in outputs if name.endswith((".json", ".jsonl", ".png")))

    # debug=fast trains the student 4 SFT steps, then 2 distillation steps here (the default loss's lr),
    # on full global batches only
    pairs = pair_rows(cache)
    assert pairs - 8 >= 2 * 8  # the training rows (val_size 8 held out) hold both steps' batches
    configs = Path(__file__).resolve().parents[1] / "configs"
    movement = (
        4 * OmegaConf.load(configs / "model" / "llama.yaml").student.sft.lr
        + 2 * OmegaConf.load(configs / "loss" / "ranking.yaml").lr
    )
    assert max_diff(weights(two.run_dir), weights(one.run_dir)) <= weight_tolerance(movement)
    a, b = results(one.run_dir), results(two.run_dir)
    assert a.keys() == b.keys()
    differ = {
        k: (a[k], b[k])
        for k in a
        if a[k] != b[k] and not (isinstance(a[k], float) and isinstance(b[k], float) and floats_close(a[k], b[k]))
    }
    assert differ == {}


def test_two_processes_of_batch_b_step_like_one_of_2b_and_like_two_accumulated_micro_batches(whole: WholeRuns):
    log_dir = whole.one.log_dir  # its cache holds the SFT models and pairs of every job below
    # Every global batch full: the training rows (pairs less the val_size held out) a multiple of 8.
    # Otherwise an epoch's last step differs by construction (one rank pads its share by wrapping,
    # one process serves a short batch), whatever the number of pairs the samples happened to give.
    pairs = pair_rows(log_dir / "cache")
    val_size = 8 + (pairs - 8) % 8
    common = (
        "-m",
        "debug=fast",
        "loss=ranking,dpo",
        "distill.max_steps=6",
        "distill.lr=1e-3",
        f"distill.val_size={val_size}",
        "distill.val_check_interval=3",
        "stages=[sft,pairs,distill]",
        "hydra.sweep.subdir=${hydra.job.num}",
    )
    jobs = {
        name: Job(log_dir, name, (*common, f"hydra.sweep.dir={log_dir / name}", *extra))
        for name, extra in {
            "one_2b": ("distill.batch_size=8",),
            "accumulated": ("distill.batch_size=4", "distill.accumulate_grad_batches=2"),
            "two_b": ("distill.batch_size=4", *TWO, *HALF_SFT),
        }.items()
    }
    for job in jobs.values():
        finish(job)
    initial = load_file(str(next((log_dir / "cache" / "models").glob("*-student-*")) / "model.safetensors"))
    for num, loss in enumerate(("ranking", "dpo")):
        run = {name: job.run_dir / str(num) for name, job in jobs.items()}
        summary = json.loads((run["two_b"] / "run_summary.json").read_text())
        assert summary["reused"] == {"teacher": True, "student_init": True, "pairs": True}
        assert f"loss={loss}" in (run["two_b"] / ".hydra" / "overrides.yaml").read_text()
        reference = weights(run["one_2b"])
        assert max_diff(reference, initial) > 1e-3, loss  # the runs did train: equality below is not trivial
        tolerance = weight_tolerance(6 * 1e-3)  # 6 steps at lr 1e-3
        assert max_diff(weights(run["two_b"]), reference) <= tolerance, loss
        assert max_diff(weights(run["accumulated"]), reference) <= tolerance, loss


def test_a_nonfinite_loss_on_one_rank_is_skipped_by_every_rank(whole: WholeRuns):
    """Rank 1 alone sees a NaN loss on its second batch: both ranks skip that step (no backward, no
    update, not counted), DDP does not hang or desynchronise, and the run makes its 4 real steps."""
    import csv

    job = Job(
        whole.one.log_dir,
        "nan",
        (
            "debug=fast",
            *TWO,
            *HALF_SFT,
            "loss._target_=helpers.distributed_losses.RankOneNaN",
            "stages=[sft,pairs,distill]",
        ),
        env={"PYTHONPATH": str(Path(__file__).resolve().parent)},
    )  # helpers.distributed_losses, in the children
    finish(job)
    rows = list(csv.DictReader(open(next(job.run_dir.glob("csv/version_0/metrics.csv")))))
    skipped = [float(r["train/nonfinite_steps"]) for r in rows if r.get("train/nonfinite_steps")]
    assert skipped and set(skipped) == {1.0}  # one skipped step in all (a running total)
    assert max(int(r["step"]) for r in rows) == 4  # distill.max_steps real updates
    assert all(bool(t.isfinite().all()) for t in weights(job.run_dir).values())


def _trainer_cfg(name: str, **over):
    cfg = OmegaConf.load(Path(__file__).resolve().parents[1] / "configs" / "trainer" / f"{name}.yaml")
    cfg = OmegaConf.merge({k: v for k, v in cfg.items() if k != "defaults"}, over)
    return cfg


def test_sharded_strategies_fail_in_one_line_where_they_cannot_run():
    from plad.distributed import check_strategy

    with pytest.raises(ValueError, match=r"^trainer.accelerator: strategy 'fsdp_strategy' runs on GPUs only"):
        check_strategy(_trainer_cfg("fsdp", accelerator="cpu"))
    with pytest.raises(ValueError, match=r"^trainer.devices .*: expected a positive integer"):
        check_strategy(_trainer_cfg("ddp", devices="two"))
    try:
        import deepspeed  # noqa: F401  (installed: nothing to check)
    except ModuleNotFoundError:
        with pytest.raises(
            ValueError,
            match=r"^trainer.strategy: 'deepspeed_stage_2' needs DeepSpeed, an optional "
            r"extra: pip install 'plad\[deepspeed\]'$",
        ):
            check_strategy(_trainer_cfg("deepspeed", accelerator="gpu"))


def test_the_fsdp_preset_wraps_each_decoder_layer_and_nothing_else():
    from hydra.utils import instantiate
    from transformers import LlamaConfig, LlamaForCausalLM

    policy = instantiate(_trainer_cfg("fsdp").strategy).kwargs["auto_wrap_policy"]
    model = LlamaForCausalLM(
        LlamaConfig(
            hidden_size=16,
            intermediate_size=32,
            num_hidden_layers=2,
            num_attention_heads=2,
            num_key_value_heads=2,
            vocab_size=64,
        )
    )
    wrapped = [name for name, m in model.named_modules() if policy(module=m, recurse=False, nonwrapped_numel=0)]
    assert wrapped == ["model.layers.0", "model.layers.1"]


def test_processes_of_one_launch_agree_on_the_run_directory(monkeypatch):
    from plad.resolvers import rank_suffix, run_time

    for key in (
        "WORLD_SIZE",
        "SLURM_NTASKS",
        "SLURM_JOB_ID",
        "SLURM_STEP_ID",
        "TORCHELASTIC_RUN_ID",
        "RANK",
        "SLURM_PROCID",
    ):
        monkeypatch.delenv(key, raising=False)
    import re

    assert re.fullmatch(r"\d\d-\d\d-\d\d\.\d{6}", run_time())  # one process: its own clock, microseconds
    monkeypatch.setenv("WORLD_SIZE", "2")
    monkeypatch.setenv("TORCHELASTIC_RUN_ID", "f00d")
    assert run_time() == "launch-f00d"
    monkeypatch.setenv("TORCHELASTIC_RUN_ID", "none")  # torchrun without --standalone / --rdzv-id
    with pytest.raises(ValueError, match=r"^hydra.run.dir: the processes of this launch share no run id"):
        run_time()
    monkeypatch.setenv("SLURM_JOB_ID", "123")
    monkeypatch.setenv("SLURM_STEP_ID", "0")
    assert run_time() == "launch-123.0"
    assert rank_suffix() == ""
    monkeypatch.setenv("RANK", "1")
    assert rank_suffix() == "_rank1"
