"""The Presidio peer of the anonymization task (system ``presidio``): its entity mapping, the
replacement on fixed analyzer results, the one-line skip without the extra, and the real tool."""

from __future__ import annotations

import logging
import re
import sys
from types import SimpleNamespace

import pytest

from plad.tasks.anonymization import AnonymizationTask, presidio
from plad.tasks.anonymization.generator import PII_TYPES

LOGGER = "plad.tasks.anonymization.presidio"


@pytest.fixture
def fresh(monkeypatch):
    """The availability check runs anew (it is cached per process) with the peer switched on."""
    monkeypatch.delenv("PLAD_PRESIDIO", raising=False)
    presidio.available.cache_clear()
    yield
    presidio.available.cache_clear()


def result(entity_type: str, start: int, end: int, score: float = 0.85) -> SimpleNamespace:
    return SimpleNamespace(entity_type=entity_type, start=start, end=end, score=score)


def test_every_mapped_entity_becomes_a_task_placeholder_and_every_type_is_reachable():
    assert set(presidio.ENTITY_PLACEHOLDER.values()) == set(PII_TYPES)
    assert not set(presidio.ENTITY_PLACEHOLDER) & set(presidio.DROPPED)
    expected = {"PERSON": "NAME", "LOCATION": "ADDRESS", "DATE_TIME": "DATE", "US_SSN": "ID", "IBAN_CODE": "IBAN"}
    assert {k: presidio.ENTITY_PLACEHOLDER[k] for k in expected} == expected


def test_placeholder_spans_retype_mapped_results_and_drop_the_rest():
    results = [
        result("PERSON", 0, 4),
        result("URL", 10, 21, 0.5),  # the domain of an e-mail: dropped, never competes
        result("EMAIL_ADDRESS", 5, 21, 1.0),
        result("NRP", 25, 31),
        result("US_SSN", 35, 46, 1.0),
    ]
    assert presidio.placeholder_spans(results) == [
        presidio.Span("NAME", 0, 4, 0.85),
        presidio.Span("EMAIL", 5, 21, 1.0),
        presidio.Span("ID", 35, 46, 1.0),
    ]
    assert presidio.placeholder_spans([result("CRYPTO", 0, 5), result("UUID", 6, 9)]) == []


@pytest.mark.parametrize(
    "text, found",
    [
        ("his insta is @kenji.w_88 if u wanna", ["@kenji.w_88"]),
        ("Thanks @ByteSizedBea! It worked.", ["@ByteSizedBea"]),
        ("write to john@example.com today", []),  # the @ of an e-mail is no handle
        ("user jdoe_42 logged in", []),  # bare usernames are left to context, which Presidio lacks
    ],
)
def test_handle_pattern(text, found):
    assert [m.group() for m in re.finditer(presidio.HANDLE, text)] == found


def test_mask_replaces_fixed_results_and_resolves_overlaps():
    pytest.importorskip("presidio_anonymizer")
    text = "Mail ann@x.org or call Ann Lee, SSN 536-90-4399, from Kenya."
    email, ssn = (text.index("ann@x.org"), text.index("ann@x.org") + 9), (36, 47)
    results = [
        result("EMAIL_ADDRESS", *email, 1.0),
        result("URL", email[0] + 4, email[1], 0.5),  # inside the e-mail, and dropped anyway
        result("PERSON", 23, 30),
        result("US_SSN", *ssn, 1.0),
        result("US_BANK_NUMBER", ssn[0] + 4, ssn[1], 0.05),  # contained in the SSN: one [ID]
        result("NRP", 54, 59),  # "Kenya" as a nationality: dropped, stays in the text
    ]
    assert text[slice(*ssn)] == "536-90-4399" and text[54:59] == "Kenya"
    assert presidio.mask(text, results) == "Mail [EMAIL] or call [NAME], SSN [ID], from Kenya."
    assert presidio.mask(text, []) == text


def test_without_the_extra_the_peer_is_skipped_with_one_log_line(monkeypatch, caplog, fresh):
    monkeypatch.setitem(sys.modules, "presidio_analyzer", None)  # import presidio_analyzer now fails
    task = AnonymizationTask()
    with caplog.at_level(logging.INFO, logger=LOGGER):
        first, second = task.peer_systems(), task.peer_systems()
    assert list(first) == list(second) == ["rule_based"]
    (line,) = [r.getMessage() for r in caplog.records if r.name == LOGGER]  # once per process, not per call
    assert "'presidio' skipped: presidio_analyzer" in line and line.endswith("(pip install -e '.[presidio]')")


def test_a_missing_model_is_named_too(monkeypatch, fresh):
    monkeypatch.setattr(presidio, "MODELS", ("no_such_spacy_model_xyz",))
    assert presidio.missing()[-1] == "a spaCy English model (no_such_spacy_model_xyz)"


def test_plad_presidio_0_leaves_the_peer_out(monkeypatch, caplog, fresh):
    monkeypatch.setenv("PLAD_PRESIDIO", "0")
    with caplog.at_level(logging.INFO, logger=LOGGER):
        assert "presidio" not in AnonymizationTask().peer_systems()
    assert [r.getMessage() for r in caplog.records if r.name == LOGGER] == [
        "anonymization: peer system 'presidio' left out: PLAD_PRESIDIO=0"
    ]


# ------------------------------------------------------------------ the real tool (the extra installed)
def need_presidio() -> None:
    pytest.importorskip("presidio_analyzer")
    pytest.importorskip("presidio_anonymizer")
    if presidio.missing():
        pytest.skip(f"presidio extra incomplete: {presidio.missing()}")


def test_real_presidio_masks_names_emails_cards_and_handles(fresh):
    need_presidio()
    texts = [
        "Call John Smith at +44 20 7946 0958 or john@example.com.",
        "My card 4111 1111 1111 1111 was charged on March 3, 2024.",
        "Send the deposit to DE89 3704 0044 0532 0130 00 from 192.168.10.4.",
        "Thanks @ByteSizedBea, the fix worked.",
        "Will the report be ready?",
    ]
    assert presidio.anonymize(texts) == [
        "Call [NAME] at [PHONE] or [EMAIL].",
        "My card [CARD] was charged on [DATE].",
        "Send the deposit to [IBAN] from [IP].",
        "Thanks [USERNAME], the fix worked.",
        "Will the report be ready?",
    ]
    peer = AnonymizationTask(prompt_template="Mask this: {text}\nOutput:").peer_systems()["presidio"]
    row = {"prompt": "Mask this: Mail ann@x.org now.\nOutput:", "text": "Mail ann@x.org now."}
    assert peer([row]) == ["Mail [EMAIL] now."]  # the row's text, not the prompt


def test_evaluate_scores_and_judges_presidio_next_to_rule_based(tmp_path, fresh):
    need_presidio()
    from plad.evaluation.evaluate import evaluate
    from plad.evaluation.judges import MetricJudge

    task = AnonymizationTask(n_train=10, n_unlabeled=5, n_validation=5, n_test=6)
    test = task.load()["test"]
    cfg = {"progress": False, "calibration": {"enabled": False}, "bootstrap": {"n": 50, "seed": 0}}
    metrics = evaluate({}, task, test, cfg, MetricJudge(), tmp_path, main_system="rule_based")
    assert metrics["peer_systems"] == ["rule_based", "presidio"]
    rows = [dict(r) for r in test]
    expected = task.metrics(presidio.anonymize([r["text"] for r in rows]), rows)
    assert {k: metrics["systems"]["presidio"][k] for k in expected} == pytest.approx(expected)
    assert "rule_based_vs_presidio" in metrics["win_rate"] and "presidio" not in metrics["calibration"]
