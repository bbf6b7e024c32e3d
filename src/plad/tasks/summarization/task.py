"""``SummarizationTask``: the embedded news-to-headline generator (pools in ``pools``) or a real
(document, reference) set, scored with ROUGE (torchmetrics)."""

from __future__ import annotations

import random
from collections.abc import Sequence
from typing import Any

from datasets import Dataset, DatasetDict, Features, Value
from torchmetrics.functional.text.rouge import rouge_score

from plad.checks import InputError
from plad.tasks.base import SPLITS, DataTask
from plad.tasks.summarization.pools import (
    CITIES,
    CONTESTS,
    DAYS,
    DISTRACTORS,
    EVENTS,
    FACILITIES,
    FIRST_NAMES,
    MONTHS,
    ORG_KINDS,
    SURNAMES,
    TEAMS,
)

ROUGE_KEYS = ("rouge1", "rouge2", "rougeL")  # never rougeLsum: it needs an nltk download


def rouge(predictions: Sequence[str], references: Sequence[str]) -> dict[str, float]:
    """Mean per-example ROUGE-1/2/L F-measure (torchmetrics: lower-cased, punctuation dropped)."""
    scores = rouge_score(list(predictions), list(references), rouge_keys=ROUGE_KEYS, accumulate="avg")
    return {key: float(scores[f"{key}_fmeasure"]) for key in ROUGE_KEYS}


class SummarizationTask(DataTask):
    name = "summarization"
    main_metric = "rougeL"
    higher_is_better = True
    CODE_VERSION = "summarization-1"
    required_columns = ("document", "reference")
    optional_columns = ("id",)
    default_columns = {"document": "prompt", "reference": "label"}  # Reddit TL;DR SFT sets
    prompt_field = "document"

    def __init__(self, prompt_template: str = "Summarize: {document}\nOutput:", **kwargs: Any) -> None:
        super().__init__(prompt_template=prompt_template, **kwargs)

    @property
    def features(self) -> Features:
        return Features(
            {
                "id": Value("string"),
                "prompt": Value("string"),
                "reference": Value("string"),
                "document": Value("string"),
                "event": Value("string"),
            }
        )

    # ----------------------------------------------------------------------------- embedded data
    def generate(self) -> DatasetDict:
        out = {}
        for split in SPLITS:
            rng = random.Random(f"{self.seed}:{split}")
            rows = [self._example(rng, f"summ-{split}-{i:05d}") for i in range(self.sizes[split])]
            out[split] = Dataset.from_list(rows, features=self.features)
        return DatasetDict(out)

    def _example(self, rng: random.Random, row_id: str) -> dict[str, Any]:
        event = rng.choice(sorted(EVENTS))
        phrasings, summary, (lo, hi) = EVENTS[event]
        city, city2 = rng.sample(CITIES, 2)
        (org, org2), (person, person2) = self._names(rng, ORG_KINDS), self._names(rng, None)
        team, team2 = rng.sample(TEAMS, 2)
        n = rng.randint(lo, hi)
        slots = {
            "org": org,
            "person": person,
            "city": city,
            "city2": city2,
            "team": team,
            "team2": team2,
            "facility": rng.choice(FACILITIES),
            "day": rng.choice(DAYS),
            "month": rng.choice(MONTHS),
            "contest": rng.choice(CONTESTS),
            "n": str(n),
            "m": str(rng.randint(0, n - 1)),
        }
        # distractors mention other people, places and numbers, never the key ones
        other = {
            "city2": rng.choice([c for c in CITIES if c not in (city, city2)]),
            "org2": org2,
            "person2": person2,
            "n2": str(rng.randint(2, 60)),
            "day2": rng.choice(DAYS),
            "month2": rng.choice(MONTHS),
        }
        sentences = [self._fill(d, other) for d in rng.sample(DISTRACTORS, rng.randint(2, 4))]
        sentences.insert(rng.randint(0, len(sentences)), self._fill(rng.choice(phrasings), slots))
        document = " ".join(sentences)
        return {
            "id": row_id,
            "prompt": self.format_prompt(document),
            "reference": self._fill(summary, slots),
            "document": document,
            "event": event,
        }

    @staticmethod
    def _names(rng: random.Random, kinds: Sequence[str] | None) -> tuple[str, str]:
        """Two distinct organisation ("Harper Foods") or person ("Anna Harper") names."""
        first, second = rng.sample(SURNAMES, 2)
        if kinds is not None:
            return f"{first} {rng.choice(kinds)}", f"{second} {rng.choice(kinds)}"
        a, b = rng.sample(FIRST_NAMES, 2)
        return f"{a} {first}", f"{b} {second}"

    @staticmethod
    def _fill(template: str, slots: dict[str, str]) -> str:
        for key, value in slots.items():
            template = template.replace(f"{{{key}}}", value)
        return template[0].upper() + template[1:]

    # ---------------------------------------------------------------------------------- real data
    def convert(self, row: dict[str, Any]) -> dict[str, Any]:
        document, reference = str(row["document"]).strip(), str(row["reference"]).strip()
        return {
            "id": row["id"],
            "prompt": self.format_prompt(document),
            "reference": reference,
            "document": document,
            "event": "",
        }

    # ------------------------------------------------------------------------------------ metrics
    def quality(self, prediction: str, example: dict[str, Any]) -> float:
        """ROUGE-L F-measure against the reference."""
        return rouge([prediction], [example["reference"]])["rougeL"]

    def metrics(self, predictions: Sequence[str], examples: Sequence[dict[str, Any]]) -> dict[str, float]:
        """Mean per-example ROUGE-1/2/L F-measure, exact match and mean quality (= rougeL)."""
        if len(predictions) != len(examples) or not predictions:
            raise InputError(f"predictions: expected one per example (>0), got {len(predictions)} for {len(examples)}")
        references = [e["reference"] for e in examples]
        out = rouge(predictions, references)
        out["exact_match"] = sum(p.strip() == r.strip() for p, r in zip(predictions, references)) / len(predictions)
        out["quality"] = out["rougeL"]
        return out
