"""The shipped out-of-distribution anonymization set (``eval.split=ood``) and the leak / keep metrics.

The file's gold is re-derived here without ``plad.tasks.anonymization.ood.mask`` (plain ``str.replace``, longest
value first), so a bug in the loader's own check cannot hide a bad line."""

from __future__ import annotations

import json
import re
from collections import Counter

import pytest
from helpers.tasks import replaced

from plad.tasks.anonymization import AnonymizationTask
from plad.tasks.anonymization.generator import PII_TYPES, SLOT, TEMPLATES
from plad.tasks.anonymization.metrics import keep_rate
from plad.tasks.anonymization.ood import DEV_FILE, ood_path, read_ood
from plad.tasks.anonymization.spans import contains

SMALL = dict(n_train=20, n_unlabeled=5, n_validation=5, n_test=40)


@pytest.fixture(scope="module")
def rows() -> list[dict]:
    return read_ood()


def test_ood_file_size_registers_and_types(rows):
    assert len(rows) >= 150 and len({r["id"] for r in rows}) == len(rows)
    registers = Counter(r["register"] for r in rows)
    assert len(registers) >= 8 and min(registers.values()) >= 10, registers
    types = Counter(t for r in rows for t in r["pii_types"])
    assert set(PII_TYPES) <= set(types) and min(types[t] for t in PII_TYPES) >= 10, types
    assert sum(not r["pii_values"] for r in rows) >= 5  # texts with nothing to mask: over-masking shows
    assert len({r["register"] for r in rows[:16]}) >= 8  # any prefix (debug=fast takes 16) mixes registers


def test_every_value_is_in_its_text_and_the_reference_is_the_text_masked(rows):
    for r in rows:
        assert len(r["pii_values"]) == len(r["pii_types"])
        assert all(contains(r["text"], v) for v in r["pii_values"]), r["id"]
        assert replaced(r) == r["reference"], r["id"]
        assert not any(contains(r["reference"], v) for v in r["pii_values"]), r["id"]


def test_ood_texts_are_not_generator_templates(rows):
    """Written independently: no text is an instance of an embedded template."""
    shapes = [re.compile(".+?".join(re.escape(part) for part in SLOT.split(t)[::3])) for t in TEMPLATES]
    assert not [r["id"] for r in rows for s in shapes if s.fullmatch(r["text"])]


def test_loader_names_the_line_and_field_of_a_bad_row(tmp_path):
    good = {
        "id": "a",
        "text": "Call Ann now.",
        "reference": "Call [NAME] now.",
        "pii_values": ["Ann"],
        "pii_types": ["NAME"],
        "register": "chat",
    }
    cases = [
        ({"pii_values": ["Bob"]}, "pii_values: expected 'Bob' verbatim"),
        ({"reference": "Call [PHONE] now."}, "reference: expected the text with its values masked"),
        ({"pii_types": ["NAME", "PHONE"]}, "pii_types: expected 1 types"),
        ({"register": None}, "register: expected a str"),
    ]
    for change, message in cases:
        path = tmp_path / "bad.jsonl"
        path.write_text(json.dumps(good) + "\n" + json.dumps({**good, "id": "b", **change}) + "\n")
        with pytest.raises(ValueError, match=f"bad.jsonl:2: {re.escape(message)}"):
            read_ood(path)
    path.write_text(json.dumps(good) + "\n" + json.dumps(good) + "\n")
    with pytest.raises(ValueError, match="bad.jsonl:2: id: expected unique ids"):
        read_ood(path)


def test_task_load_adds_the_ood_split_with_its_prompt_format(rows, tmp_path):
    task = AnonymizationTask(seed=0, **SMALL, prompt_template="Mask: {text}\nAnswer:")
    for data in (task.load(), task.load(tmp_path), task.load(tmp_path)):  # generated, cached, read back
        ood = data["ood"]
        assert len(ood) == len(rows) and set(data["test"].column_names) < set(ood.column_names)
        first = dict(ood[0])
        assert first["prompt"] == f"Mask: {rows[0]['text']}\nAnswer:" and first["templates"] == []
        assert first["register"] == rows[0]["register"]
        dev = data["dev"]  # the other hand-written set, alike
        assert len(dev) == len(read_ood(ood_path(DEV_FILE))) and dev[0]["prompt"].startswith("Mask: ")
    assert not list((tmp_path / "data").rglob("ood")) and not list((tmp_path / "data").rglob("dev"))  # never cached
    assert ood_path().name == "ood.jsonl" and ood_path().is_file()


# ------------------------------------------------------------------------------------ metrics
SENT = {
    "text": "Please ask Priya Raghunathan to call me.",
    "reference": "Please ask [NAME] to call me.",
    "pii_values": ["Priya Raghunathan"],
    "pii_types": ["NAME"],
}


def test_a_name_inside_a_sentence_leaks_and_a_partial_one_does_not():
    task = AnonymizationTask()
    assert task.metrics(["I told Priya Raghunathan's manager."], [SENT])["leak_rate"] == 1.0
    assert task.metrics(["Please ask Priya [NAME] to call me."], [SENT])["leak_rate"] == 0.0  # not verbatim


def test_keep_rate_empty_reference_copy_and_half():
    ref = SENT["reference"]  # non-PII words: Please ask to call me (5)
    assert keep_rate("", ref) == 0.0
    assert keep_rate(ref, ref) == 1.0 and keep_rate(SENT["text"], ref) == 1.0
    assert keep_rate("[NAME] call me", ref) == pytest.approx(2 / 5)
    assert keep_rate("please ask [NAME] to call me.", ref) == pytest.approx(4 / 5)  # case matters
    assert keep_rate("me me me me me", ref) == pytest.approx(1 / 5)  # multiset: repeats do not count twice
    assert keep_rate("anything", "[NAME]") is None
    task = AnonymizationTask()
    only_pii = {"text": "Ann", "reference": "[NAME]", "pii_values": ["Ann"], "pii_types": ["NAME"]}
    m = task.metrics(["", ""], [SENT, only_pii])  # the PII-only example has nothing to keep: left out
    assert m["keep_rate"] == 0.0 and task.metrics([""], [only_pii])["keep_rate"] == 1.0


def test_leak_rate_per_type_is_micro_over_values():
    task = AnonymizationTask()
    ex = {
        "text": "Mail Ann Lee at ann@x.org or Bo at bo@y.org.",
        "reference": "Mail [NAME] at [EMAIL] or [NAME] at [EMAIL].",
        "pii_values": ["Ann Lee", "ann@x.org", "Bo", "bo@y.org"],
        "pii_types": ["NAME", "EMAIL", "NAME", "EMAIL"],
    }
    m = task.metrics(["Mail [NAME] at ann@x.org or [NAME] at bo@y.org.", "Mail Ann Lee at [EMAIL]."], [ex, ex])
    assert m["leak_rate/EMAIL"] == 0.5 and m["leak_rate/NAME"] == 0.25 and m["leak_rate"] == pytest.approx(3 / 8)
    assert not any(k.startswith("leak_rate/") and k[10:] not in ("EMAIL", "NAME") for k in m)


def test_new_metrics_on_every_split_and_headline_first(rows):
    task = AnonymizationTask(seed=0, **SMALL)
    data = task.load()
    for split in ("validation", "test", "ood"):
        examples = [dict(r) for r in data[split]]
        m = task.metrics([e["reference"] for e in examples], examples)
        assert m["keep_rate"] == 1.0 and m["leak_rate"] == 0.0
        assert {f"leak_rate/{t}" for e in examples for t in e["pii_types"]} <= set(m)
        keys = list(m)
        assert keys[:4] == ["leak_rate", "keep_rate", "exact_match", "quality"]
        assert all("/" not in k for k in keys[: keys.index("placeholder_f1") + 1])


# ------------------------------------------------------------------------------ eval.split=ood
def test_eval_split_ood_passes_the_config_check_and_other_names_fail(tmp_path):
    from helpers.configs import compose_run_config

    from plad.stages.preflight import preflight

    preflight(compose_run_config(tmp_path / "logs", tmp_path / "run", "debug=fast", "eval.split=ood"))
    preflight(compose_run_config(tmp_path / "logs", tmp_path / "run", "debug=fast", "eval.split=dev"))
    with pytest.raises(ValueError, match="eval.split: expected one of"):
        preflight(compose_run_config(tmp_path / "logs", tmp_path / "run", "debug=fast", "eval.split=nope"))
    for bad in ("[nope]", "[test]", "ood"):  # unknown, the main split again, not a list
        with pytest.raises(
            ValueError,
            match=r"^eval.extra_splits: expected a list of splits among \['train', "
            r"'unlabeled', 'validation', 'test', 'ood', 'dev'\] other than eval.split, got",
        ):
            preflight(compose_run_config(tmp_path / "logs", tmp_path / "run", "debug=fast", f"eval.extra_splits={bad}"))


def test_summarization_has_no_ood_split_and_says_so_at_preflight(tmp_path):
    from helpers.configs import compose_run_config

    from plad.stages.preflight import preflight

    cfg = compose_run_config(tmp_path / "logs", tmp_path / "run", "task=summarization", "debug=fast", "eval.split=ood")
    four = r"\['train', 'unlabeled', 'validation', 'test'\]"
    with pytest.raises(ValueError, match=rf"^eval.split: expected one of {four}, got 'ood'$"):
        preflight(cfg)


def test_debug_fast_run_on_the_ood_split(run_pipeline, rows):
    """eval.extra_splits=[ood]: the test split as usual, then every system on the OOD set in eval_ood/."""
    results = run_pipeline("debug=fast", "eval.extra_splits=[ood]", "eval.calibration.n_prompts=2")
    assert results["metrics"]["split"] == "test" and results["metrics"]["n_examples"] == 16
    metrics = json.loads((results["run_dir"] / "eval_ood" / "metrics.json").read_text())
    assert metrics["split"] == "ood" and metrics["n_examples"] == 16 and metrics["peer_systems"] == ["rule_based"]
    assert {"teacher", "student_init", "student", "rule_based"} <= set(metrics["systems"])
    rb = metrics["systems"]["rule_based"]
    assert 0 < rb["leak_rate"] < 0.5 and rb["keep_rate"] > 0.9 and "leak_rate/NAME" in rb
    samples = [json.loads(x) for x in (results["run_dir"] / "eval_ood" / "samples.jsonl").read_text().splitlines()]
    assert [s["prompt"] for s in samples] == [f"Anonymize: {r['text']}\nOutput:" for r in rows[:16]]
    assert metrics["systems"]["student"] != results["metrics"]["systems"]["student"]  # another split's numbers
    assert "rule_based" not in metrics["calibration"]
