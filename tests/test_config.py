"""Hydra composition of every task x family, the CLI's help and errors, and config checks."""

import subprocess
import sys
from pathlib import Path

import pytest
from helpers import HANG_S, forkserver
from hydra import compose, initialize_config_dir
from omegaconf import OmegaConf

from plad.checks import InputError
from plad.stages.preflight import check_config

ROOT = Path(__file__).resolve().parents[1]
CONFIGS = str(ROOT / "configs")
TASKS = ["anonymization", "summarization"]
MODELS = ["llama", "t5", "gpt_neo"]


def _compose(*overrides: str):
    with initialize_config_dir(config_dir=CONFIGS, version_base="1.3"):
        return compose("train", overrides=list(overrides))


def _cli(*args: str) -> subprocess.CompletedProcess:
    return forkserver.run(
        [sys.executable, "train.py", *args],
        cwd=ROOT,
        env=forkserver.env(),
        capture_output=True,
        text=True,
        timeout=HANG_S,
    )


@pytest.mark.parametrize("task", TASKS)
@pytest.mark.parametrize("model", MODELS)
def test_every_task_and_family_composes(task, model):
    cfg = _compose(f"task={task}", f"model={model}")
    assert cfg.task._target_.split(".")[-2] == task
    assert cfg.model.family == model
    assert cfg.model.teacher.config._target_ == cfg.model.student.config._target_
    check_config(cfg)


def test_default_run_is_anonymization_llama_ranking():
    cfg = _compose()
    assert cfg.task._target_.endswith("AnonymizationTask")
    assert cfg.model.family == "llama" and cfg.loss._target_.endswith("RankingLoss")


@pytest.mark.parametrize("model", ["llama", "gpt_neo"])
def test_student_sft_steps_follow_the_task(model):
    """The task sets how many SFT steps its label budget supports; an explicit model value wins."""
    steps = {t: _compose(f"task={t}", f"model={model}").model.student.sft.max_steps for t in TASKS}
    assert steps == {"anonymization": 3000, "summarization": 1500}
    assert _compose("task=summarization", "model.student.sft.max_steps=7").model.student.sft.max_steps == 7


def test_debug_fast_shrinks_every_stage():
    base, fast = _compose(), _compose("debug=fast")
    assert fast.task.n_train < base.task.n_train
    assert fast.model.teacher.sft.max_steps < base.model.teacher.sft.max_steps
    assert fast.distill.max_steps < base.distill.max_steps


def test_each_loss_brings_its_own_learning_rate():
    lrs = {loss: _compose(f"loss={loss}").distill.lr for loss in ("ranking", "sft", "dpo")}
    for loss, lr in lrs.items():  # distill.lr follows the lr written in the loss's own file
        assert lr == OmegaConf.load(Path(__file__).parents[1] / "configs" / "loss" / f"{loss}.yaml").lr
    assert lrs["dpo"] != lrs["ranking"]  # tuned per method on validation (RESULTS), not one shared value
    assert _compose("loss=dpo", "loss.lr=1e-4").distill.lr == 1e-4


def test_a_task_can_bring_its_own_learning_rates():
    """task.lrs.<loss> replaces the loss YAML's lr on that task only; ablations of ranking follow ranking's."""
    tuned = ("+task.lrs={seqkd: 3.0e-4, ranking: 1.0e-4}",)
    assert _compose("loss=seqkd", *tuned).distill.lr == 3.0e-4
    assert _compose("loss=ranking_no_reg", *tuned).distill.lr == 1.0e-4
    assert _compose("loss=kd", *tuned).distill.lr == _compose("loss=kd").distill.lr
    assert _compose("loss=seqkd", *tuned, "loss.lr=1e-5").distill.lr == 1e-5  # the command line wins
    # task.lrs.default: the lr of every loss the task did not tune; a loss's own entry still wins
    with_default = ("+task.lrs={default: 2.0e-5, seqkd: 3.0e-4}",)
    assert _compose("loss=kd", *with_default).distill.lr == 2.0e-5
    assert _compose("loss=ranking_no_reg", *with_default).distill.lr == 2.0e-5
    assert _compose("loss=seqkd", *with_default).distill.lr == 3.0e-4


def test_task_lrs_must_name_losses():
    from hydra.errors import InstantiationException

    from plad.cli import input_error
    from plad.stages.preflight import build, check_task_lrs

    def instantiate(node):
        return build(node, "task")

    with initialize_config_dir(config_dir=CONFIGS, version_base="1.3"):
        cfg = compose("train", overrides=["+task.lrs={seqdk: 3.0e-4}"])
        with pytest.raises(InputError, match=r"task.lrs: .*\['seqdk'\]"):
            check_task_lrs(instantiate(cfg.task))
        check_task_lrs(instantiate(compose("train", overrides=["+task.lrs={seqkd: 3.0e-4, default: 1e-4}"]).task))
    with pytest.raises(InstantiationException) as wrapped:  # the CLI prints the InputError behind it alone
        instantiate(_compose("+task.lrs={seqkd: -1}").task)
    assert str(input_error(wrapped.value)) == "task.lrs.seqkd: expected a positive number, got -1"


@pytest.mark.parametrize(
    "key,value,expected",
    [
        ("distill.lr", 0, "distill.lr: expected a positive number"),
        ("distill.batch_size", -4, "distill.batch_size: expected a positive integer"),
        ("task.max_new_tokens", 0, "task.max_new_tokens: expected a positive integer"),
    ],
)
def test_check_config_names_the_field(key, value, expected):
    cfg = _compose()
    OmegaConf.update(cfg, key, value)
    with pytest.raises(ValueError, match=expected):
        check_config(cfg)


def test_cli_help_lists_the_groups():
    out = _cli("--help").stdout
    for group in ["task", "model", "loss", "pairs", "trainer", "logger", "callbacks", "experiment", "debug"]:
        assert f"{group}:" in out


def test_cli_unknown_option_names_the_choices():
    res = _cli("loss=nonexistent")
    assert res.returncode != 0
    assert "nonexistent" in res.stderr and "ranking" in res.stderr and "margin" in res.stderr


# A real process (exit code 2, one stderr line); the full catalogue of bad inputs (these included)
# runs in-process in tests/reliability/test_bad_inputs.py, next to two more real processes (a
# process start costs ~14 s of CPU here).
@pytest.mark.parametrize("override,field", [("distill.lr=-1", "distill.lr")])
def test_cli_bad_values_fail_fast_with_one_line(tmp_path, override, field):
    res = _cli(override, f"paths.log_dir={tmp_path}")
    assert res.returncode == 2
    lines = [line for line in res.stderr.strip().splitlines() if line.startswith("error:")]
    assert len(lines) == 1 and field in lines[0], res.stderr[-2000:]
    assert not (tmp_path / "cache").exists()  # failed before any expensive work
