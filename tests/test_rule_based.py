"""The rule-based anonymizer and its place in evaluation (system ``rule_based``) and in the report."""

from __future__ import annotations

import json

import pytest

from plad.evaluation.evaluate import evaluate
from plad.evaluation.judges import MetricJudge
from plad.tasks.anonymization import AnonymizationTask
from plad.tasks.anonymization.rule_based import anonymize

NO_CAL = {"max_examples": 6, "progress": False, "calibration": {"enabled": False}, "bootstrap": {"n": 50, "seed": 0}}


@pytest.mark.parametrize(
    "text, expected",
    [
        ("Write to maria.lopez@example.es before noon.", "Write to [EMAIL] before noon."),
        ("Ring me on +44 20 7946 0958 or (415) 555-0132 after lunch.", "Ring me on [PHONE] or [PHONE] after lunch."),
        ("Send the deposit to DE89 3704 0044 0532 0130 00 today.", "Send the deposit to [IBAN] today."),
        ("My card 4111 1111 1111 1111 was charged twice.", "My card [CARD] was charged twice."),
        (
            "The login came from 192.168.10.4 and 2001:db8::ff00:42:8329 again.",
            "The login came from [IP] and [IP] again.",
        ),
        (
            "Born 12/31/1999, moved on 3 March 2020 and again on Jan 5th.",
            "Born [DATE], moved on [DATE] and again on [DATE].",
        ),
        ("Her SSN is 078-05-1120 and the passport X1234567.", "Her SSN is [ID] and the passport [ID]."),
        ("Ping @data_wizard or user jdoe_42 about it.", "Ping [USERNAME] or user [USERNAME] about it."),
        ("Ship it to 221 Baker Street by Friday.", "Ship it to [ADDRESS] by Friday."),
        ("Ask Dr. Okonkwo and Sofia Lindqvist about the results.", "Ask Dr. [NAME] and [NAME] about the results."),
    ],
)
def test_masks_each_kind_inside_a_sentence(text, expected):
    assert anonymize(text) == expected


def test_leaves_ordinary_words_numbers_and_times_alone():
    for text in (
        "The meeting moved to room 12 at 3:15 pm on Monday.",
        "Order 5521 shipped with 3 boxes, total 149.99 EUR.",
        "Will the report be ready? Hope so, the team is waiting.",
    ):  # first names that are words
        assert anonymize(text) == text
    assert anonymize("Will Turner signed it.") == "[NAME] signed it."  # a word-name followed by a surname


def test_peer_systems_anonymize_the_row_text_not_the_prompt():
    task = AnonymizationTask(prompt_template="Mask this: {text}\nOutput:")
    ((name, peer),) = task.peer_systems().items()
    row = {"prompt": "Mask this: Mail ann@x.org now.\nOutput:", "text": "Mail ann@x.org now."}
    assert name == "rule_based" and peer([row]) == ["Mail [EMAIL] now."]
    assert peer([{"prompt": row["prompt"]}]) == ["Mail [EMAIL] now."]  # no text column: cut from the prompt


def test_evaluate_adds_rule_based_for_anonymization(tmp_path):
    task = AnonymizationTask(n_train=10, n_unlabeled=5, n_validation=5, n_test=10)
    test = task.load()["test"]
    metrics = evaluate({}, task, test, NO_CAL, MetricJudge(), tmp_path, main_system="rule_based")
    rows = [dict(r) for r in test.select(range(6))]
    outs = [anonymize(r["text"]) for r in rows]
    assert metrics["peer_systems"] == ["rule_based"] and list(metrics["systems"]) == ["rule_based"]
    expected = task.metrics(outs, rows)
    assert {k: metrics["systems"]["rule_based"][k] for k in expected} == pytest.approx(expected)
    samples = [json.loads(x) for x in (tmp_path / "samples.jsonl").read_text().splitlines()]
    assert [s["outputs"]["rule_based"] for s in samples] == outs
    assert "metrics.png" in metrics["plots"] and metrics["calibration"] == {}
    with pytest.raises(ValueError, match="rule_based"):  # a baseline may not take a peer's name
        evaluate(
            {},
            task,
            test,
            NO_CAL,
            None,
            tmp_path / "again",
            main_system="rule_based",
            baseline_outputs={"rule_based": tmp_path},
        )


def test_evaluate_has_no_rule_based_for_summarization(tmp_path):
    from plad.tasks.summarization import SummarizationTask

    task = SummarizationTask(n_train=10, n_unlabeled=5, n_validation=5, n_test=6)
    test = task.load()["test"]
    saved = tmp_path / "base"
    saved.mkdir()
    (saved / "samples.jsonl").write_text(
        "".join(json.dumps({"prompt": p, "main_system": "s", "outputs": {"s": "x"}}) + "\n" for p in test["prompt"])
    )
    metrics = evaluate(
        {}, task, test, NO_CAL, None, tmp_path / "eval", main_system="ce", baseline_outputs={"ce": saved}
    )
    assert metrics["peer_systems"] == [] and list(metrics["systems"]) == ["ce"]


def test_report_shows_the_peer_as_a_row(tmp_path):
    from helpers.report_jobs import N_BOOT, SHIFT, tables, write_job

    from plad.report import build_report

    root = tmp_path / "m"
    for n, (loss, seed) in enumerate((("sft", 0), ("ranking", 0), ("ranking", 1))):
        job = write_job(root, str(n), loss, seed, SHIFT[loss])
        m = json.loads((job / "metrics.json").read_text())
        m["peer_systems"] = ["rule_based"]
        m["systems"]["rule_based"] = {
            "quality": 0.9,
            "exact_match": 0.5,
            "leak_rate": 0.1,
            "keep_rate": 0.99,
            "degenerate": 0.0,
        }
        (job / "metrics.json").write_text(json.dumps(m))
        samples = [json.loads(x) for x in (job / "samples.jsonl").read_text().splitlines()]
        for s in samples:
            s["outputs"]["rule_based"], s["quality"]["rule_based"] = "o", 0.9
        (job / "samples.jsonl").write_text("".join(json.dumps(s) + "\n" for s in samples))
    md = build_report(root, n_boot=N_BOOT).read_text()
    t = tables(md)["anonymization · llama · split=test · decoding=greedy"]
    assert list(t)[1:] == ["initial student", "teacher", "rule_based", "sft", "ranking"]
    assert t["method"][1:5] == ["quality", "exact_match", "leak_rate", "keep_rate"]
    assert t["rule_based"][1:5] == ["0.900 ± 0.000", "0.500 ± 0.000", "0.100 ± 0.000", "0.990 ± 0.000"]
    assert t["rule_based"][-1] == "2" and t["rule_based"][6].startswith("+")  # beats the initial student
    assert t["sft"][4] == "–"  # keep_rate column: systems without it show a dash
