"""The student cut from its teacher (plad.models.student_init: which layers) and healed before SFT
(plad.training.heal, the cached step in plad.stages.heal), on tiny Llamas built from config."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from helpers.cut import tiny_llama
from omegaconf import OmegaConf, open_dict

from plad.cache import is_complete
from plad.checks import InputError
from plad.models.build import validate_family
from plad.models.student_init import block_influence, cut_from_teacher, influential_layers
from plad.training.heal import text_batches

CONFIGS = Path(__file__).resolve().parents[1] / "configs" / "model"


def batches(n: int = 6, length: int = 10, seed: int = 1) -> list[dict[str, torch.Tensor]]:
    g = torch.Generator().manual_seed(seed)
    seqs = [torch.randint(0, 64, (length - i % 3,), generator=g).tolist() for i in range(n)]  # ragged: padded
    return text_batches(seqs, pad_token_id=0, batch_size=4)


def logits(model, ids: torch.Tensor) -> torch.Tensor:
    with torch.no_grad():
        return model(input_ids=ids).logits


# ----------------------------------------------------------------------------- which layers


@pytest.mark.parametrize("select", ["even", "block_influence"])
def test_every_layer_kept_gives_the_teachers_logits(select):
    teacher = tiny_llama(initializer_range=0.2)  # layers that visibly change the residual stream
    student, info = cut_from_teacher(teacher, {"init_from_teacher": {"layers": 6, "select": select}}, batches())
    assert info["kept_layers"] == list(range(6)) and info["select"] == select
    ids = torch.randint(0, 64, (2, 12))
    assert torch.allclose(logits(student, ids), logits(teacher, ids), rtol=1e-6, atol=1e-6)


def test_block_influence_drops_the_layers_that_leave_their_input_unchanged():
    teacher = tiny_llama(initializer_range=0.2)  # layers that visibly change the residual stream
    with torch.no_grad():  # layers 0, 2 and 3 write nothing into the residual stream: identity maps
        for i in (0, 2, 3):
            teacher.model.layers[i].self_attn.o_proj.weight.zero_()
            teacher.model.layers[i].mlp.down_proj.weight.zero_()
    influence = block_influence(teacher, batches())
    assert all(influence[i] == pytest.approx(0.0, abs=1e-9) for i in (0, 2, 3))
    assert all(influence[i] > 1e-3 for i in (1, 4, 5))
    student, info = cut_from_teacher(
        teacher, {"init_from_teacher": {"layers": 4, "select": "block_influence"}}, batches()
    )
    assert info["kept_layers"] == [0, 1, 4, 5]  # the first stays whatever its score (influential_layers says why)
    assert info["block_influence"] == influence
    assert torch.equal(student.model.layers[2].mlp.down_proj.weight, teacher.model.layers[4].mlp.down_proj.weight)
    assert influential_layers([0.9, 0.1, 0.5, 0.5, 0.2, 0.0], 3) == [0, 2, 5]  # a tie: the earlier layer
    assert influential_layers([0.9, 0.1, 0.5, 0.5, 0.2, 0.0], 1) == [0]


def test_block_influence_averages_over_real_tokens_only():
    teacher = tiny_llama(initializer_range=0.2)  # layers that visibly change the residual stream
    seqs = [list(range(3, 13)), list(range(20, 26))]
    scores = [block_influence(teacher, text_batches([s], 0, 1)) for s in seqs]
    together = block_influence(teacher, text_batches(seqs, 0, 2))  # the second right-padded by 4
    for i in range(6):
        expected = 1 - (10 * (1 - scores[0][i]) + 6 * (1 - scores[1][i])) / 16
        assert together[i] == pytest.approx(expected, rel=1e-6)


# ----------------------------------------------------------------------------- the cached heal step


def _run_cfg(root: Path, heal: dict | None, layers: int = 1, select: str = "even"):
    from helpers.configs import compose_run_config

    cfg = compose_run_config(
        root / "logs",
        root / "run",
        "debug=fast",
        "model.student.config=null",
        "model.student.pretrain=null",
        f"+model.student.init_from_teacher={{layers: {layers}, select: {select}}}",
        "+model.teacher.config.initializer_range=0.2",
        "sft_selection.val_check_interval=5",
    )
    with open_dict(cfg):
        cfg.model.student.heal = heal
    validate_family(cfg.model)
    return cfg


@pytest.fixture(scope="module")
def tiny_run(tmp_path_factory):
    """The data of a debug=fast run and its task (the tokenizer is trained on it once per cache)."""
    from hydra.utils import instantiate

    from plad.stages import data as data_stage

    root = tmp_path_factory.mktemp("heal")
    cfg = _run_cfg(root, None)
    task = instantiate(cfg.task)
    return {"root": root, "task": task, "data": data_stage.run(cfg, task, Path(cfg.paths.cache_dir))}


def _cut(cfg, run, cache: Path, calls: list[str] | None = None):
    from plad.stages import heal, sft

    def teacher_start():
        if calls is not None:
            calls.append("teacher")
        return sft._start(cfg, "teacher", run["task"], run["data"], cache)

    return heal.cut_student(cfg, run["task"], run["data"], cache, cache.parent / "run", _key(cfg, run), teacher_start)


def _key(cfg, run):
    from plad.stages import heal, sft

    return heal.StudentKey(sft._keyed_spec(cfg, "student"), sft._extra_keys(cfg, "student", run["task"]), cfg.seed)


def _held_out(cfg, run, tok) -> list[dict[str, torch.Tensor]]:
    from plad.stages.heal import plain_ids

    ids = [plain_ids(tok, run["task"].text_of(r), cfg.task.max_prompt_tokens) for r in run["data"]["test"]]
    return text_batches(ids, tok.pad_token_id, 8)


def test_cut_path_keeps_the_teachers_logits_with_every_layer_and_no_heal(tiny_run, tmp_path):
    from plad.stages import sft

    for select, heal in [("even", None), ("block_influence", {"max_steps": 0})]:
        cfg = _run_cfg(tmp_path, heal, layers=2, select=select)
        student, tok, info = _cut(cfg, tiny_run, tmp_path / "cache")
        teacher, _ = sft._start(cfg, "teacher", tiny_run["task"], tiny_run["data"], tmp_path / "cache")
        assert info["kept_layers"] == [0, 1] and "heal" not in info
        batch = _held_out(cfg, tiny_run, tok)[0]
        with torch.no_grad():
            ours, theirs = (m(**batch).logits for m in (student.eval(), teacher.eval()))
        assert torch.allclose(ours, theirs, rtol=1e-6, atol=1e-6)


HEAL = {"max_steps": 30, "batch_size": 8, "lr": 1.0e-2, "warmup_steps": 0, "temperature": 2.0}


def test_healing_lowers_the_kl_to_the_teacher_is_cached_and_reruns_the_same(tiny_run, tmp_path, monkeypatch):
    from plad.stages import heal, sft
    from plad.training import heal as training_heal
    from plad.training.heal import mean_kl

    cache = tmp_path / "cache"
    cut, tok, info = _cut(_run_cfg(tmp_path, None), tiny_run, cache)
    cfg = _run_cfg(tmp_path, HEAL)
    healed, _, info = _cut(cfg, tiny_run, cache)
    teacher, _ = sft._start(cfg, "teacher", tiny_run["task"], tiny_run["data"], cache)
    held_out = _held_out(cfg, tiny_run, tok)
    before, after = mean_kl(cut, teacher, held_out), mean_kl(healed, teacher, held_out)
    assert after < 0.9 * before, (before, after)  # measured: 0.775 -> 0.662 on the default data
    path = heal.healed_entry(cfg, tiny_run["task"], cache, _key(cfg, tiny_run))
    assert is_complete(path) and info["heal"]["steps"] == 30 and info["kept_layers"] == [0]
    assert json.loads((path / heal.STATS).read_text())["heal"]["curve"][0][1] == pytest.approx(
        info["heal"]["curve"][0][1]
    )
    assert info["heal"]["best_value"] < info["heal"]["curve"][0][1]  # validation KL fell too

    def no_training(*args, **kwargs):
        raise AssertionError("healing ran again")

    monkeypatch.setattr(training_heal, "fit_heal", no_training)
    calls: list[str] = []
    again, _, info_again = _cut(cfg, tiny_run, cache, calls)
    assert calls == [] and info_again == json.loads(json.dumps(info))  # no teacher loaded, nothing trained
    assert all(torch.equal(a, b) for a, b in zip(again.state_dict().values(), healed.state_dict().values()))
    monkeypatch.undo()

    # A run killed while healing leaves no entry; its rerun heals from the start to the same weights.
    fresh = tmp_path / "killed" / "cache"
    step = training_heal.HealModule.training_step

    def killed(self, batch, batch_idx):
        if self.global_step >= 4:
            raise RuntimeError("killed")
        return step(self, batch, batch_idx)

    monkeypatch.setattr(training_heal.HealModule, "training_step", killed)
    with pytest.raises(RuntimeError, match="killed"):
        _cut(cfg, tiny_run, fresh)
    assert not is_complete(heal.healed_entry(cfg, tiny_run["task"], fresh, _key(cfg, tiny_run)))
    assert not list((fresh / "models").glob(".*tmp-*"))
    monkeypatch.undo()
    rerun, _, _ = _cut(cfg, tiny_run, fresh)
    assert all(torch.equal(a, b) for a, b in zip(rerun.state_dict().values(), healed.state_dict().values()))


def test_sft_records_the_cut_and_another_sft_setting_reuses_the_healed_start(tiny_run, tmp_path, monkeypatch):
    from plad.stages import sft
    from plad.training import heal as training_heal

    runs = []
    fit = training_heal.fit_heal
    monkeypatch.setattr(training_heal, "fit_heal", lambda *a, **k: runs.append(1) or fit(*a, **k))
    cache = tmp_path / "cache"
    refs = []
    for steps in (4, 6):  # another SFT budget (heal's unset lr and batch size follow sft's: unchanged)
        cfg = _run_cfg(tmp_path, {"max_steps": 4}, layers=1, select="block_influence")
        cfg.model.student.sft.max_steps = steps
        refs.append(sft.run(cfg, "student", tiny_run["task"], tiny_run["data"], cache, tmp_path / "run"))
    assert runs == [1] and refs[0].path != refs[1].path
    for ref in refs:
        stats = json.loads((ref.path / "sft_stats.json").read_text())["init_from_teacher"]
        assert (
            stats["select"] == "block_influence" and stats["kept_layers"] == [0] and len(stats["block_influence"]) == 2
        )
        assert stats["heal"]["steps"] == 4
    unhealed = _run_cfg(tmp_path, None, layers=1)
    assert sft.entry(unhealed, "student", tiny_run["task"], cache).fingerprint != refs[0].fingerprint


# ----------------------------------------------------------------------------- validation


@pytest.mark.parametrize(
    "override,message",
    [
        (
            {"student": {"init_from_teacher": {"layers": 2, "select": "random"}}},
            "model.student.init_from_teacher.select: expected one of ['even', 'block_influence'], got 'random'",
        ),
        (
            {"student": {"init_from_teacher": {"layers": 2, "pick": "even"}}},
            "model.student.init_from_teacher: expected null or {layers: <positive integer>, "
            "select: even | block_influence}, got {'layers': 2, 'pick': 'even'}",
        ),
        (
            {"student": {"init_from_teacher": {"layers": 2}, "heal": {"steps": 10}}},
            "model.student.heal: expected null or max_steps and keys among ['max_steps', 'batch_size', 'lr', "
            "'warmup_steps', 'weight_decay', 'temperature', 'source'], got ['steps']",
        ),
        (
            {"student": {"init_from_teacher": {"layers": 2}, "heal": {"max_steps": -1}}},
            "model.student.heal.max_steps: expected an integer >= 0, got -1",
        ),
        (
            {"student": {"init_from_teacher": {"layers": 2}, "heal": {"max_steps": 5, "temperature": 0}}},
            "model.student.heal.temperature: expected a positive number, got 0",
        ),
        (
            {"student": {"init_from_teacher": {"layers": 2}, "heal": {"max_steps": 5, "lr": "fast"}}},
            "model.student.heal.lr: expected a positive number, got 'fast'",
        ),
        (
            {"student": {"init_from_teacher": {"layers": 2}, "heal": {"max_steps": 5, "source": "test"}}},
            "model.student.heal.source: expected one of ['unlabeled', 'prompts', 'train'], got 'test'",
        ),
        (
            {"student": {"heal": {"max_steps": 5}}},
            "model.student.heal: expected null without init_from_teacher (it heals a cut student), "
            "got {'max_steps': 5}",
        ),
        (
            {"teacher": {"heal": {"max_steps": 5}}},
            "model.teacher.heal: expected null (a student option), got {'max_steps': 5}",
        ),
    ],
)
def test_bad_cut_and_heal_values_fail_in_one_line(override, message):
    cfg = OmegaConf.merge(OmegaConf.load(CONFIGS / "llama.yaml"), override)
    with pytest.raises(InputError) as err:
        validate_family(cfg)
    assert str(err.value) == message
