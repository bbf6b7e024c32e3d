"""Summarization: compress a short news-like document into a one-line headline summary.

The embedded generator writes 3-5 sentence documents: one key event sentence (who / what / where
/ a number), in one of two phrasings and at a random position, among distractor sentences that
carry their own names, places and numbers. The summary restates the event's facts in a fixed,
compressed headline form (with a tense change, "opened" -> "opens"). A model must find the key
sentence by its form and copy the right entities: tiny models learn it in minutes, a bigger one
makes fewer entity and selection errors.

Real data: TL;DR-style (post, summary) pairs, e.g. columns ``prompt`` / ``label`` of the public
Reddit TL;DR SFT sets, mapped to ``document`` / ``reference``.
"""

from __future__ import annotations

import random
from collections.abc import Sequence
from typing import Any

from datasets import Dataset, DatasetDict, Features, Value
from torchmetrics.functional.text.rouge import rouge_score

from plad.checks import InputError
from plad.tasks.base import SPLITS, DataTask

ROUGE_KEYS = ("rouge1", "rouge2", "rougeL")  # never rougeLsum: it needs an nltk download

CITIES = (
    "Springfield",
    "Riverton",
    "Lakewood",
    "Fairview",
    "Milton",
    "Ashford",
    "Brookside",
    "Clayton",
    "Dover",
    "Easton",
    "Franklin",
    "Georgetown",
    "Hampton",
    "Kingston",
    "Lincoln",
    "Marion",
    "Newport",
    "Oakdale",
    "Preston",
    "Salem",
    "Troy",
    "Vernon",
    "Weston",
    "Bristol",
    "Camden",
    "Denton",
)
SURNAMES = (
    "Harper",
    "Baxter",
    "Collins",
    "Dawson",
    "Ellis",
    "Foster",
    "Grant",
    "Hayes",
    "Jensen",
    "Keller",
    "Lawson",
    "Morgan",
    "Nolan",
    "Parker",
    "Reed",
    "Shaw",
    "Turner",
    "Walsh",
)
FIRST_NAMES = (
    "Anna",
    "Ben",
    "Carla",
    "David",
    "Emma",
    "Frank",
    "Grace",
    "Henry",
    "Julia",
    "Kevin",
    "Laura",
    "Mark",
    "Nina",
    "Oscar",
    "Paula",
    "Sam",
    "Tina",
    "Victor",
)
ORG_KINDS = ("Foods", "Motors", "Energy", "Health", "Labs", "Books", "Steel", "Media")
FACILITIES = ("factory", "store", "library", "hospital", "school", "warehouse", "bakery", "clinic", "office", "stadium")
TEAMS = ("Bears", "Hawks", "Lions", "Wolves", "Eagles", "Tigers", "Sharks", "Foxes")
DAYS = ("Monday", "Tuesday", "Wednesday", "Thursday", "Friday", "Saturday", "Sunday")
MONTHS = (
    "January",
    "February",
    "March",
    "April",
    "May",
    "June",
    "July",
    "August",
    "September",
    "October",
    "November",
    "December",
)
CONTESTS = ("science", "music", "poetry", "chess", "math", "art")

# event -> (two phrasings of the key sentence, the summary form, range of {n})
EVENTS = {
    "open": (
        (
            "{org} opened a new {facility} in {city} on {day}, creating {n} jobs.",
            "On {day}, {org} opened a {facility} in {city} that will employ {n} people.",
        ),
        "{org} opens {facility} in {city}, {n} jobs",
        (20, 900),
    ),
    "close": (
        (
            "{org} said it will close its {facility} in {city}, cutting {n} jobs.",
            "{org} plans to shut its {city} {facility}, and {n} workers will lose their jobs.",
        ),
        "{org} to close {city} {facility}, {n} jobs cut",
        (20, 900),
    ),
    "election": (
        (
            "{person} won the race for mayor of {city} with {n} percent of the vote.",
            "Voters in {city} chose {person} as their new mayor with {n} percent of the vote.",
        ),
        "{person} elected mayor of {city} with {n} percent",
        (40, 80),
    ),
    "fire": (
        (
            "A fire broke out at a {facility} in {city} on {day}, and {n} people were moved to safety.",
            "{n} people had to leave their homes in {city} after a fire at a nearby {facility}.",
        ),
        "Fire at {city} {facility}, {n} people moved",
        (10, 400),
    ),
    "sports": (
        (
            "The {city} {team} beat the {city2} {team2} {n} to {m} on {day}.",
            "On {day}, the {city} {team} won {n} to {m} against the {city2} {team2}.",
        ),
        "{city} {team} beat {city2} {team2} {n} to {m}",
        (3, 9),
    ),
    "funding": (
        (
            "{org} raised {n} million dollars to build a new {facility} in {city}.",
            "A new {facility} in {city} will be built after {org} raised {n} million dollars.",
        ),
        "{org} raises {n} million for {city} {facility}",
        (2, 90),
    ),
    "fares": (
        (
            "Bus fares in {city} will rise by {n} percent starting in {month}.",
            "Starting in {month}, riders in {city} will pay {n} percent more for the bus.",
        ),
        "{city} bus fares up {n} percent from {month}",
        (3, 30),
    ),
    "snow": (
        (
            "{city} got {n} inches of snow on {day}, and all schools in the area closed.",
            "Schools in {city} closed on {day} after {n} inches of snow fell overnight.",
        ),
        "{n} inches of snow close {city} schools",
        (4, 30),
    ),
    "prize": (
        (
            "{person}, a student from {city}, won the state {contest} prize and {n} dollars.",
            "The state {contest} prize and {n} dollars went to {person}, a student from {city}.",
        ),
        "{city} student {person} wins state {contest} prize",
        (100, 900),
    ),
    "bridge": (
        (
            "The main bridge in {city} will close for {n} weeks from {month} for repairs.",
            "Repairs will close the {city} main bridge for {n} weeks starting in {month}.",
        ),
        "{city} bridge to close {n} weeks from {month}",
        (2, 12),
    ),
}
DISTRACTORS = (
    "Officials said more details would be shared next week.",
    "The weather in {city2} stayed mild, with a high of {n2} degrees.",
    "{person2}, a local resident, said the news came as a surprise.",
    "Last year the area saw about {n2} thousand visitors.",
    "A spokesperson for {org2} declined to comment.",
    "Many people in the area shared their views online.",
    "The city council will meet again on {day2}.",
    "Traffic on the main road was slow for most of the morning.",
    "{person2} has lived in {city2} for {n2} years.",
    "Local shops in {city2} reported a busy weekend.",
    "The report was first shared by a local paper.",
    "Some residents asked for more time to review the plans.",
    "A similar story made the news in {city2} {n2} years ago.",
    "Prices at the {city2} market were mostly unchanged.",
    "{person2} of {org2} said the company is doing well.",
    "The next update is expected in {month2}.",
)


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
