"""Data options aimed at the OOD gap of real models: ``task.validation_dev`` (hand-written
OOD-style rows in validation, kept apart from the OOD test set), ``task.proper_share`` (fillers
that look like PII and must be copied) and ``task.pii_format_share`` (cards and IBANs in spaced
groups, IPv6). Each leaves the data, and so every cache key, unchanged when off."""

from __future__ import annotations

import ipaddress
import random
import re

import pytest
from faker import Faker
from faker.providers.person.en_US import Provider as Person
from helpers.tasks import replaced

from plad.checks import InputError
from plad.tasks.anonymization import AnonymizationTask
from plad.tasks.anonymization.generator import FILLERS, SLOT, TEMPLATES, filler, printed
from plad.tasks.anonymization.ood import DEV_FILE, ood_path, read_ood
from plad.tasks.anonymization.pools import PROPER_TERMS, WORD_FIRST_NAMES, WORD_LAST_NAMES
from plad.tasks.anonymization.spans import contains

KW = dict(seed=0, n_train=60, n_unlabeled=20, n_validation=12, n_test=12)


@pytest.fixture(scope="module")
def dev() -> list[dict]:
    return read_ood(ood_path(DEV_FILE))


@pytest.fixture(scope="module")
def ood_text() -> str:
    return "\n".join(r["text"] for r in read_ood())


def test_dev_file_covers_the_ood_registers_with_consistent_gold(dev):
    ood_registers = {r["register"] for r in read_ood()}
    assert len(dev) >= 60 and all(r["id"].startswith("dev-") for r in dev)
    assert {r["register"] for r in dev} == ood_registers
    assert sum(not r["pii_values"] for r in dev) >= 3  # texts with nothing to mask: over-masking shows
    for r in dev:  # the gold re-derived without the loader's own mask()
        assert all(contains(r["text"], v) for v in r["pii_values"]), r["id"]
        assert replaced(r) == r["reference"], r["id"]


def test_dev_rows_share_no_text_or_pii_value_with_the_ood_test_set(dev, ood_text):
    ood_lines = set(ood_text.splitlines())
    assert not [r["id"] for r in dev if r["text"] in ood_lines]
    assert not [(r["id"], v) for r in dev for v in r["pii_values"] if contains(ood_text, v)]
    shapes = [re.compile(".+?".join(re.escape(part) for part in SLOT.split(t)[::3])) for t in TEMPLATES]
    assert not [r["id"] for r in dev for s in shapes if s.fullmatch(r["text"])]  # not generator text either


def test_validation_dev_appends_the_dev_rows_to_validation_only(dev):
    plain, with_dev = AnonymizationTask(**KW), AnonymizationTask(validation_dev=True, **KW)
    assert AnonymizationTask(validation_dev=False, **KW).fingerprint() == plain.fingerprint()
    assert with_dev.fingerprint() != plain.fingerprint()  # SFT selection sees other rows: another cache key
    a, b = plain.generate(), with_dev.generate()
    for split in ("train", "unlabeled", "test"):
        assert a[split]["text"] == b[split]["text"]
    assert list(b["validation"]["text"]) == list(a["validation"]["text"]) + [r["text"] for r in dev]
    added = b["validation"].select(range(len(a["validation"]), len(b["validation"])))
    assert list(added["prompt"]) == [with_dev.format_prompt(r["text"]) for r in dev]
    assert list(added["reference"]) == [r["reference"] for r in dev]


def test_validation_metrics_score_the_dev_rows_on_their_own():
    task = AnonymizationTask(validation_dev=True, validation_heldout_templates=5, **KW)
    val = task.generate()["validation"].to_list()
    is_dev = [r["id"].startswith("dev-") for r in val]
    # perfect on generator rows, the input copied unchanged on dev rows: every dev PII value leaks
    predictions = [r["text"] if d else r["reference"] for r, d in zip(val, is_dev)]
    out = task.metrics(predictions, val)
    with_pii = [r for r, d in zip(val, is_dev) if d and r["pii_values"]]
    assert out["leak_rate/dev"] == 1.0 and out["keep_rate/dev"] == 1.0 and with_pii
    assert out["quality/seen"] == 1.0 and out["quality/dev"] < 1.0
    assert out["quality"] == pytest.approx(
        sum(task.quality(p, r) for p, r in zip(predictions, val)) / len(val), rel=1e-9
    )


def test_validation_dev_rejects_a_non_boolean_and_a_real_source():
    with pytest.raises(InputError, match="task.validation_dev: expected true or false"):
        AnonymizationTask(validation_dev="yes", **KW)
    with pytest.raises(InputError, match="task.validation_dev: expected false with a task.source"):
        AnonymizationTask(validation_dev=True, source="data/pii.jsonl")


def training_only_option(option: str, kw: dict) -> tuple[list[dict], list[dict]]:
    """The train splits without and with ``option`` at 0.5, after what every training-text option
    owes: at 0 the fingerprint (so every cache key) is the plain task's, at 0.5 it differs;
    validation and test stay text for text; each reference is still its text with the PII masked;
    a value that is not a share is refused naming the field."""
    plain, on = AnonymizationTask(**kw), AnonymizationTask(**{option: 0.5}, **kw)
    assert AnonymizationTask(**{option: 0.0}, **kw).fingerprint() == plain.fingerprint()
    assert on.fingerprint() != plain.fingerprint()
    a, b = plain.generate(), on.generate()
    for split in ("validation", "test"):
        assert a[split]["text"] == b[split]["text"]
    for row in b["train"]:
        assert replaced(row) == row["reference"]
    for bad in (1.5, -0.1, "half", True):
        with pytest.raises(InputError, match=f"task.{option}"):
            AnonymizationTask(**{option: bad}, **kw)
    return list(a["train"]), list(b["train"])


def test_proper_share_puts_pii_like_words_in_training_text_to_copy():
    """Train and unlabeled texts get capitalised terms, codes and numbers with units where fillers
    stand, copied into the reference (not masked); validation and test stay text for text."""
    a, b = training_only_option("proper_share", KW)
    terms = [t for t in PROPER_TERMS if any(contains(r["reference"], t) for r in b)]
    assert len(terms) >= 10  # in the reference: copied, not masked
    assert not any(contains(r["reference"], t) for r in a for t in terms)


def test_pii_format_share_writes_cards_and_ibans_spaced_and_ips_as_ipv6_in_training_text_only():
    """Train and unlabeled get the formats real text uses (the dev rows' "4526 0181 5908 3012",
    "2001:db8:7c2::15"), still masked whole in the reference; validation and test stay text for
    text, and at 0 the data (and its fingerprint) is the plain task's."""
    a, b = training_only_option("pii_format_share", {**KW, "n_train": 400})

    def values(rows, kind):
        return [v for r in rows for v, t in zip(r["pii_values"], r["pii_types"]) if t == kind]

    for kind in ("CARD", "IBAN"):
        assert not any(" " in v for v in values(a, kind))
        grouped = [v for v in values(b, kind) if re.fullmatch(r"[0-9A-Z]{4}( [0-9A-Z]{4,6})+( [0-9A-Z]{1,5})?", v)]
        assert 0.25 < len(grouped) / len(values(b, kind)) < 0.75, kind  # about half, each one grouped
    assert all(":" not in v for v in values(a, "IP"))
    v6 = [v for v in values(b, "IP") if ":" in v]
    assert v6 and any("::" in v for v in v6) and 0.25 < len(v6) / len(values(b, "IP")) < 0.75


def test_printed_groups_a_card_or_iban_by_four_and_keeps_its_characters():
    f = Faker("en_US")
    f.seed_instance(0)
    assert printed("CARD", "4526018159083012", f) == "4526 0181 5908 3012"
    assert printed("CARD", "378282246310005", f) == "3782 822463 10005"  # 15 digits: 4-6-5, as on the card
    assert printed("IBAN", "GB29NWBK60161331926819", f) == "GB29 NWBK 6016 1331 9268 19"
    ips = [printed("IP", "10.0.0.5", f) for _ in range(40)]
    assert all(str(ipaddress.IPv6Address(ip)) == ip for ip in ips)  # valid, in the compressed form


def test_filler_at_share_zero_draws_exactly_what_the_plain_fillers_draw():
    for slot in FILLERS:
        r1, r2 = random.Random(slot), random.Random(slot)
        assert [filler(slot, r1) for _ in range(50)] == [FILLERS[slot](r2) for _ in range(50)]


def test_proper_terms_are_in_neither_hand_written_set_and_are_not_person_names(dev, ood_text):
    """Training on them must not be what raises a score on the sets that measure copying real text."""
    names = set(Person.first_names) | set(Person.last_names) | set(WORD_FIRST_NAMES) | set(WORD_LAST_NAMES)
    texts = ood_text + "\n" + "\n".join(r["text"] for r in dev)
    assert len(set(PROPER_TERMS)) == len(PROPER_TERMS) >= 100
    assert not [t for t in PROPER_TERMS if re.search(rf"(?<!\w){re.escape(t)}(?!\w)", texts, re.IGNORECASE)]
    assert not [t for t in PROPER_TERMS if set(t.split()) & names]
