"""One embedded anonymization example: 1-3 template sentences with their fillers and PII drawn.

``AnonymizationTask.generate`` decides which templates a split may use and how many rows it gets;
``ExampleWriter`` writes each row. It holds the task's validated text options (``probe_share`` and
the training-only ``scramble_share``, ``proper_share`` and ``pii_format_share``), so the task file
keeps its options, splits and metrics and this file reads top to bottom as "how one text is made".
"""

from __future__ import annotations

import random
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

from faker import Faker

from plad.tasks.anonymization.generator import (
    MAX_TEXT_CHARS,
    N_PHRASINGS,
    N_SENTENCES,
    PRINTED_SLOTS,
    SLOT,
    SLOT_TYPES,
    TEMPLATES,
    filler,
    printed,
    scramble,
)


@dataclass(frozen=True)
class ExampleWriter:
    """Writes rows of the embedded data. ``learn`` (train / unlabeled rows) switches on the
    training-only options; evaluation rows never draw them, so their text is the same at any value."""

    pii_values: dict[str, Callable[[Faker], str]]  # slot -> value maker (``generator.pii_values``)
    format_prompt: Callable[[str], str]
    probe_share: float | None = None
    scramble_share: float = 0.0
    proper_share: float = 0.0
    pii_format_share: float = 0.0

    def example(
        self, fake: Faker, rng: random.Random, pool: Sequence[int], row_id: str, learn: bool = False
    ) -> dict[str, Any]:
        """One text of 1-3 sentences; in training text (``learn``) each sentence has its words shuffled
        with probability ``scramble_share`` (``generator.scramble``), so training shows phrasings
        beyond the templates."""
        shuffle = self.scramble_share if learn else 0.0
        n = rng.choice(N_SENTENCES)
        while True:  # redraw a too-long text, or a PII value that also occurs in the kept text ("May")
            ids = self._templates(rng, pool, min(n, len(pool)))
            pii: dict[tuple[str, int], tuple[str, str]] = {}
            phrasings = [
                scramble(TEMPLATES[t], rng) if shuffle and rng.random() < shuffle else TEMPLATES[t] for t in ids
            ]
            parts = [self._sentence(fake, rng, p, pii, k, learn) for k, p in enumerate(phrasings)]
            text, reference = " ".join(p[0] for p in parts), " ".join(p[1] for p in parts)
            unique = list(dict.fromkeys(pii.values()))
            if len(text) > MAX_TEXT_CHARS and n > 1:
                n -= 1
            elif not any(v in reference for v, _ in unique):
                break
        return {
            "id": row_id,
            "prompt": self.format_prompt(text),
            "reference": reference,
            "text": text,
            "templates": ids,
            "pii_values": [v for v, _ in unique],
            "pii_types": [t for _, t in unique],
        }

    def _templates(self, rng: random.Random, pool: Sequence[int], n: int) -> list[int]:
        """``n`` distinct templates of one text. With ``probe_share`` set, each sentence is a leak probe
        with that probability (word-like PII where free words stand: the leaks a copying model makes);
        null draws every template of the pool alike (10 probes of 50 in training: 20%)."""
        if self.probe_share is None:
            return rng.sample(pool, n)
        ids: list[int] = []
        for _ in range(n):
            probe = rng.random() < self.probe_share
            choices = [t for t in pool if t not in ids and (t >= N_PHRASINGS) == probe]
            ids.append(rng.choice(choices or [t for t in pool if t not in ids]))
        return ids

    def _sentence(
        self,
        fake: Faker,
        rng: random.Random,
        template: str,
        pii: dict[tuple[str, int], tuple[str, str]],
        sentence: int,
        learn: bool = False,
    ) -> tuple[str, str]:
        """(text, reference) of one template; a PII slot repeated in the sentence keeps its value.
        In training text (``learn``) ``proper_share`` of the filler words are ``proper`` and
        ``pii_format_share`` of the card, IBAN and IP values are ``printed``."""
        proper, formats = (self.proper_share, self.pii_format_share) if learn else (0.0, 0.0)
        text, reference, last = [], [], 0
        for m in SLOT.finditer(template):
            text.append(template[last : m.start()])
            reference.append(template[last : m.start()])
            slot, last = m.group(1), m.end()
            if slot in SLOT_TYPES:
                drawn = self.pii_values[slot](fake)
                if formats and slot in PRINTED_SLOTS and fake.random.random() < formats:  # no draw at 0
                    drawn = printed(slot, drawn, fake)
                value, kind = pii.setdefault((m.group(0), sentence), (drawn, SLOT_TYPES[slot]))
                text.append(value)
                reference.append(f"[{kind}]")
            else:
                value = filler(slot, rng, proper)
                text.append(value)
                reference.append(value)
        return "".join(text + [template[last:]]), "".join(reference + [template[last:]])
