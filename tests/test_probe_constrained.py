"""scripts/probe_constrained.py: the copy-or-mask automaton accepts exactly the outputs it claims
to (every gold reference, no paraphrase), and constrained greedy decoding only ever emits them."""

from __future__ import annotations

import argparse
import importlib.util
from pathlib import Path

import pytest
from helpers.pairs import tiny_llama, train_tokenizer

from plad.tasks.anonymization import AnonymizationTask
from plad.tasks.anonymization.ood import read_ood

_spec = importlib.util.spec_from_file_location(
    "probe_constrained", Path(__file__).resolve().parents[1] / "scripts" / "probe_constrained.py"
)
probe = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(probe)

TEXT = "Standing order from GB29 NWBK 6016 to Ruth Abernathy, ref RENT."


def test_every_gold_reference_is_a_whole_copy_or_mask_output():
    rows = AnonymizationTask().dev_rows() + read_ood()
    longest = max(len(v) for r in rows for v in r["pii_values"])
    assert all(probe.accepts(r["text"], r["reference"], longest) for r in rows)


@pytest.mark.parametrize(
    ("output", "whole", "prefix"),
    [
        (TEXT, True, True),  # a verbatim copy (the leak rate, not the automaton, judges it)
        ("Standing order from [IBAN] to [NAME], ref RENT.", True, True),
        ("Standing order from [IBAN] to [NAME], ref [ID].", True, True),
        ("Standing order from [IBAN] to", False, True),  # cut short
        ("Standing order from [IB", False, True),  # inside a placeholder
        ("Stand order from [IBAN] to [NAME], ref RENT.", False, False),  # paraphrase
        ("Standing order from [IBAN] to [NAME].", False, False),  # drops words (a span > max_span)
        ("Standing order from [IBAN] to [NAME], ref RENT. Thanks!", False, False),  # goes on
        ("Standing order from [IBAN] to [PERSON], ref RENT.", False, False),  # not a task type
        ("Stand[NAME] order from [IBAN] to [NAME], ref RENT.", False, False),  # mid-word span
        ("Standing order from [IBAN]", False, True),  # a prefix: the span may still end in time
    ],
)
def test_accepts(output, whole, prefix):
    assert probe.accepts(TEXT, output, 20) is whole  # the longest span needed: 14 characters
    assert probe.accepts(TEXT, output, 20, complete=False) is prefix


def test_max_span_bounds_a_masked_span():
    masked = "Standing order from [IBAN] to [NAME], ref RENT."  # longest span: 14 chars
    assert probe.accepts(TEXT, masked, 14)
    assert not probe.accepts(TEXT, masked, 13)
    assert not probe.accepts(TEXT, "[NAME].", 48)  # one span cannot swallow the sentence


def test_constrained_decoding_emits_only_copy_or_mask_outputs():
    tok = train_tokenizer()
    model = tiny_llama(tok, seed=3)
    rows = [
        {"prompt": f"Anonymize: {t}", "text": t}
        for t in ("call Bob on 555-0199.", "Alice Brown lives in Paris.", "write to mary@example.com now.")
    ]
    args = argparse.Namespace(batch_size=2, top_k=len(tok), max_span=24, max_new_tokens=64)
    constrained = probe.decode(model, tok, rows, args, constrained=True)
    assert all(probe.accepts(r["text"], o, 24) for r, o in zip(rows, constrained)), constrained
    free = probe.decode(model, tok, rows, args, constrained=False)  # a random model: not by chance
    assert not any(probe.accepts(r["text"], o, 24) for r, o in zip(rows, free)), free
