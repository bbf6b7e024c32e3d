"""model.teacher.post_edit: the teacher system is the teacher model, then a model-free edit of its
outputs. The pairs' y+ and the evaluation's teacher row are the edited texts; the teacher's SFT
and every key of a run without an edit stay as they were; bad names fail before any work."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from helpers.configs import compose_run_config
from helpers.pairs import FakeTask, load_tiny, pairs_cfg, prompt_dataset, save_tiny

from plad.models.ref import ModelRef
from plad.pairs.build import _load, obtain_pairs
from plad.stages import sft
from plad.stages.preflight import preflight
from plad.tasks.anonymization import AnonymizationTask
from plad.tasks.anonymization.rule_based import anonymize
from plad.tasks.base import post_edit_of


class EditTask(FakeTask):
    def post_edits(self):
        return {"upper": lambda outputs: [o.upper() for o in outputs]}


@pytest.fixture(scope="module")
def models(tmp_path_factory):
    root = tmp_path_factory.mktemp("models")
    return {"T": load_tiny(save_tiny(root / "t", seed=1)), "S": load_tiny(save_tiny(root / "s", seed=2))}


def pairs(models, root: Path, post_edit: str | None = None, **cfg):
    return obtain_pairs(
        pairs_cfg(**cfg),
        prompt_dataset(4),
        EditTask(),
        ModelRef(None, "teacher", loader=lambda: models["T"]),
        ModelRef(None, "student", loader=lambda: models["S"]),
        root,
        64,
        6,
        0,
        post_edit=post_edit,
    )


def test_pairs_hold_the_edited_teacher_samples_under_their_own_key(models, tmp_path):
    plain, edited = pairs(models, tmp_path), pairs(models, tmp_path, "upper")
    assert edited.path != plain.path and pairs(models, tmp_path, None).path == plain.path
    # The same seed draws the same teacher samples: the plain entry's y+ are the raw ones.
    raw = {r["id"]: r["chosen"] for r in plain.pairwise}
    assert any(t != t.upper() for t in raw.values())  # the edit changes something
    tok = models["S"][1]
    for row in edited.pairwise:
        assert row["chosen"] == raw[row["id"]].upper()
        assert list(row["chosen_ids"]) == tok(row["chosen"], add_special_tokens=False)["input_ids"]
    assert {r["rejected"] for r in edited.pairwise} == {r["rejected"] for r in plain.pairwise}  # y- untouched


def test_a_black_box_teacher_file_is_edited_too(models, tmp_path):
    ds = prompt_dataset(4)
    path = tmp_path / "teacher.jsonl"
    path.write_text("".join(json.dumps({"id": i, "output": f"answer of {i}"}) + "\n" for i in ds["id"]))
    ps = pairs(models, tmp_path, "upper", teacher_outputs=str(path), n_student=1)
    assert {(r["id"], r["chosen"]) for r in ps.pairwise} == {(i, f"ANSWER OF {i.upper()}") for i in ds["id"]}


def test_the_rule_based_edit_masks_what_a_model_leaked_and_keeps_its_placeholders():
    edit = AnonymizationTask().post_edits()["rule_based"]
    leaked = "Payee [NAME], IBAN GB29 NWBK 6016 1331 9268 19, mail ana.ruiz@example.org, on [DATE]."
    assert edit([leaked]) == [anonymize(leaked)]
    assert edit([leaked])[0] == "Payee [NAME], IBAN [IBAN], mail [EMAIL], on [DATE]."


def test_an_edit_that_loses_an_output_is_an_error_naming_the_field():
    class Dropping(FakeTask):
        name = "dropping"

        def post_edits(self):
            return {"drop": lambda outputs: list(outputs)[1:]}

    with pytest.raises(ValueError, match=r"^model\.teacher\.post_edit: expected 2 outputs, got 1$"):
        post_edit_of(Dropping(), "drop")(["a", "b"])


def test_the_teacher_sft_key_ignores_the_edit(tmp_path):
    keys = []
    for extra in ([], ["model.teacher.post_edit=rule_based"]):
        cfg = compose_run_config(tmp_path / "logs", tmp_path / "run", "debug=fast", *extra)
        task = preflight(cfg)[0]
        keys.append([sft.entry(cfg, role, task, tmp_path).fingerprint for role in ("teacher", "student")])
    assert keys[0] == keys[1]


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        (["model.teacher.post_edit=regex"], r"^model\.teacher\.post_edit: expected null or one of \[.*'rule_based'"),
        (
            ["task=summarization", "model.teacher.post_edit=rule_based"],
            r"^model\.teacher\.post_edit: expected null or one of \[\] \(the post-edits of task summarization\)",
        ),
        (["loss=kd", "model.teacher.post_edit=rule_based"], r"^model\.teacher\.post_edit: .* \(white-box\)"),
    ],
)
def test_bad_post_edits_fail_in_preflight(tmp_path, overrides, message):
    cfg = compose_run_config(tmp_path / "logs", tmp_path / "run", "debug=fast", *overrides)
    with pytest.raises(ValueError, match=message):
        preflight(cfg)


def test_a_run_evaluates_and_distills_from_the_edited_teacher(run_pipeline, tmp_path, monkeypatch):
    # debug=fast's teacher emits no PII to mask: an edit that always shows
    monkeypatch.setattr(AnonymizationTask, "post_edits", lambda self: {"mark": lambda outs: [f"{o} [X]" for o in outs]})
    logs = tmp_path / "shared"
    common = ("debug=fast", "eval.calibration.enabled=false")
    plain = run_pipeline(*common, log_dir=logs, name="plain")
    edited = run_pipeline(*common, "model.teacher.post_edit=mark", log_dir=logs, name="edited")
    assert edited["reused"]["teacher"] and edited["reused"]["student_init"]  # the same SFT'd models
    assert edited["pairs"]["path"] != plain["pairs"]["path"]
    assert edited["metrics"]["post_edits"] == {"teacher": "mark"} and "post_edits" not in plain["metrics"]

    def outputs(run, system):
        lines = (run["run_dir"] / "samples.jsonl").read_text().splitlines()
        return [json.loads(x)["outputs"][system] for x in lines]

    raw = outputs(plain, "teacher")  # greedy: the edited run reused these from the eval cache
    assert outputs(edited, "teacher") == [f"{o} [X]" for o in raw]
    ys = [_load(Path(run["pairs"]["path"]), Path(run["pairs"]["path"]).name).pairwise for run in (plain, edited)]
    assert [f"{r['chosen']} [X]" for r in ys[0]] == [r["chosen"] for r in ys[1]]  # the same samples, edited
    assert outputs(edited, "student_init") == outputs(plain, "student_init")
