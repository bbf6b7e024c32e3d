"""pairs.split: the pairs are built on the task's unlabeled split or on another split of prompts used
without labels (anonymization's shipped hand-written texts), never on an evaluation split. The
hand-written set is written apart from the OOD and dev sets; choosing it changes the pairs' key and
nothing upstream of the pairs."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
from helpers.configs import compose_run_config
from helpers.tasks import replaced

from plad.pairs.store import load_entry
from plad.stages.preflight import preflight
from plad.tasks.anonymization import AnonymizationTask
from plad.tasks.anonymization.generator import SLOT, TEMPLATES
from plad.tasks.anonymization.ood import DEV_FILE, UNLABELED_FILE, ood_path, read_ood
from plad.tasks.anonymization.spans import contains

KW = dict(seed=0, n_train=60, n_unlabeled=20, n_validation=12, n_test=12)


@pytest.fixture(scope="module")
def handwritten() -> list[dict]:
    return read_ood(ood_path(UNLABELED_FILE))


def six_grams(text: str) -> set[tuple[str, ...]]:
    words = re.findall(r"\w+", text.lower())
    return {tuple(words[i : i + 6]) for i in range(len(words) - 5)}


def test_the_hand_written_set_covers_the_ood_registers_with_consistent_gold(handwritten):
    assert len(handwritten) == 128 and all(r["id"].startswith("unl-") for r in handwritten)
    assert {r["register"] for r in handwritten} == {r["register"] for r in read_ood()}
    assert sum(not r["pii_values"] for r in handwritten) >= 3  # texts with nothing to mask
    for r in handwritten:  # the gold re-derived without the loader's own mask()
        assert all(contains(r["text"], v) for v in r["pii_values"]), r["id"]
        assert replaced(r) == r["reference"], r["id"]


@pytest.mark.parametrize("held_out", [None, DEV_FILE], ids=["ood", "dev"])
def test_the_hand_written_set_shares_no_text_value_or_phrase_with_a_held_out_set(handwritten, held_out):
    held = read_ood(ood_path(held_out) if held_out else None)
    held_text = "\n".join(r["text"] for r in held)
    assert not [r["id"] for r in handwritten if r["text"] in {h["text"] for h in held}]
    assert not [(r["id"], v) for r in handwritten for v in r["pii_values"] if contains(held_text, v)]
    held_grams = set().union(*(six_grams(h["text"]) for h in held))
    assert not [r["id"] for r in handwritten if six_grams(r["text"]) & held_grams]
    shapes = [re.compile(".+?".join(re.escape(part) for part in SLOT.split(t)[::3])) for t in TEMPLATES]
    assert not [r["id"] for r in handwritten for s in shapes if s.fullmatch(r["text"])]  # not generator text


def test_load_adds_the_hand_written_prompts_without_touching_the_cached_splits(handwritten, tmp_path):
    task = AnonymizationTask(**KW)
    key = task.fingerprint()
    data = task.load(tmp_path)
    split = data["unlabeled_handwritten"]
    assert list(split["id"]) == [r["id"] for r in handwritten]
    assert list(split["prompt"]) == [task.format_prompt(r["text"]) for r in handwritten]
    assert task.fingerprint() == key and "unlabeled_handwritten" not in AnonymizationTask(**KW).config
    (entry,) = (tmp_path / "data").iterdir()  # the cached entry holds the four generated splits only
    assert sorted(p.name for p in (entry / "splits").iterdir() if p.is_dir()) == sorted(
        ["train", "unlabeled", "validation", "test"]
    )
    seen = []
    AnonymizationTask(**KW).load(tmp_path / "fresh", validate=lambda d: seen.append(sorted(d)))
    assert "unlabeled_handwritten" in seen[0]  # the run's checks see it, before anything is cached


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        (
            ["pairs.split=test"],
            r"^pairs\.split: expected one of \['unlabeled', 'unlabeled_handwritten'\] .* got 'test'$",
        ),
        (["pairs.split=ood"], r"^pairs\.split: .* an evaluation split never feeds training\), got 'ood'$"),
        (
            ["task=summarization", "pairs.split=unlabeled_handwritten"],
            r"^pairs\.split: expected one of \['unlabeled'\]",
        ),
    ],
)
def test_an_evaluation_split_or_a_missing_one_fails_in_preflight(tmp_path, overrides, message):
    cfg = compose_run_config(tmp_path / "logs", tmp_path / "run", "debug=fast", *overrides)
    with pytest.raises(ValueError, match=message):
        preflight(cfg)


def test_a_run_on_hand_written_prompts_reuses_the_models_and_keys_its_own_pairs(run_pipeline, tmp_path, handwritten):
    logs = tmp_path / "shared"
    common = ("debug=fast", "eval.calibration.enabled=false", "stages=[sft,pairs]")
    plain = run_pipeline(*common, log_dir=logs, name="plain")
    hand = run_pipeline(*common, "pairs.split=unlabeled_handwritten", log_dir=logs, name="hand")
    assert hand["reused"]["teacher"] and hand["reused"]["student_init"]  # nothing upstream changed
    assert hand["pairs"]["path"] != plain["pairs"]["path"]
    ids = {r["id"] for r in handwritten}
    rows, plain_rows = (load_entry(Path(run["pairs"]["path"]))[0]["pairwise"] for run in (hand, plain))
    assert len(rows) and {r["id"] for r in rows} <= ids and "reference" not in rows.column_names
    assert not {r["id"] for r in plain_rows} & ids
    noise = hand["diagnostics"]["pseudo_label_noise"]  # read against the hand-written gold, for diagnosis
    assert noise["n_pairs"] == len(rows) and 0.0 <= noise["student_wins"] <= 1.0
