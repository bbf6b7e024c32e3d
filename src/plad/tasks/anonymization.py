"""Anonymization: rewrite a short text replacing every piece of personal data by a typed placeholder.

The output copies the input verbatim except for PII spans, which become ``[NAME]``, ``[EMAIL]``,
... The embedded data is built so that this must be learned as a skill, not recalled: each text
joins 1-3 sentences drawn from ~50 sentence templates, and most non-PII words come from large
pools (Faker's ~900-word English list, numbers, clock times, weekdays, items), so the text around
the PII is new in almost every example and has to be copied. PII values come from Faker. A seeded
subset of sentence templates never occurs in train / unlabeled / validation; a ``heldout_share`` of
the test texts is made only of those (generalisation to unseen phrasings), the rest of seen
phrasings with new words and PII (the copy-and-mask skill, where model size shows).

Real data is any (text, masked text) pair dataset; the gold PII strings, needed for the leak
rate, are read from columns when mapped, else derived by diffing the text against the masked one.
"""
from __future__ import annotations

import random
import re
from collections import Counter
from difflib import SequenceMatcher
from typing import Any, Callable, Sequence

from datasets import Dataset, DatasetDict, Features, List, Value
from faker import Faker
from faker.providers.lorem.en_US import Provider as LoremProvider

from plad.tasks.base import SPLITS
from plad.tasks.loading import DataTask

# Slot -> placeholder type. Upper-case slots are PII; a trailing digit makes a second, distinct
# value of the same kind. Lower-case slots are non-PII fillers, drawn afresh at every occurrence,
# that must be copied unchanged.
SLOT_TYPES = {"NAME": "NAME", "FIRST": "NAME", "EMAIL": "EMAIL", "PHONE": "PHONE", "ADDRESS": "ADDRESS",
              "DATE": "DATE", "CARD": "CARD", "IBAN": "IBAN", "ID": "ID", "IP": "IP", "USER": "USERNAME"}
PII_TYPES = tuple(sorted(set(SLOT_TYPES.values())))

TEMPLATES = (  # short sentences, each with at least one PII slot and free words ({w}) to copy
    "Hi {FIRST}, call {NAME2} at {PHONE} about the {words}.",
    "Your card {CARD} paid {n} dollars for the {words}.",
    "Send the {words} to {EMAIL} before {day}.",
    "{NAME} moved to {ADDRESS} near the {words}.",
    "Wire the {w} deposit to {IBAN} for {NAME}, {words}.",
    "{FIRST} has a {words} visit on {DATE} at {time}.",
    "User {USER} signed in from {IP} to {w} the {w}.",
    "Patient {NAME} has the {w} insurance number {ID}, {w}.",
    "My new email is {EMAIL}, said {FIRST}, {words}.",
    "Ship the {w} {item} to {ADDRESS} by {day}.",
    "The {words} refund goes to {IBAN} on {day}.",
    "{NAME} joins the {words} team on {DATE}.",
    "Account {USER} was {w} after {n} {w} tries.",
    "Thanks {FIRST}, I used the card {CARD} for {words}.",
    "{NAME} lives at {ADDRESS} with a {words}.",
    "Write to {EMAIL} about the {words} {item}.",
    "Employee {NAME} of the {w} team has SSN {ID}.",
    "The {w} {item} goes to {ADDRESS} at {time}.",
    "Please call me at {PHONE} about the {words}.",
    "The {w} server {IP} was restarted by {USER}.",
    "Please {w} the card {CARD} before {time}, {w}.",
    "{FIRST} and {FIRST2} will {w} the {w} {item}.",
    "We got {n} {w} dollars from {IBAN} on {DATE}.",
    "{NAME} moves into {ADDRESS} on {DATE} with {words}.",
    "Text me at {PHONE} from the {words} station.",
    "Your {w} username is {USER}, {FIRST}, {w}.",
    "The {w} form from {NAME} lists ID {ID} and {w}.",
    "{FIRST} forwards the {words} notes to {EMAIL}.",
    "Order {n} was {w} with the card {CARD}.",
    "Check the {w} logs of {USER} from {IP}, {w}.",
    "I am {NAME}, born on {DATE}, and I like {words}.",
    "Transfer {n} dollars from {IBAN} for the {words}.",
    "The doctor sees {NAME} at {time}, call {PHONE} about {w}.",
    "The {words} {item} is ready at {ADDRESS}.",
    "Contact {NAME2} at {PHONE} after {time} for {w}.",
    "Tax ID {ID} is {w} to {EMAIL} since {day}.",
    "The card {CARD} of {FIRST} {w} in {n} {w} days.",
    "A {w} login came from {IP} for {USER} on {day}.",
    "Dinner is at {ADDRESS} on {day}, {FIRST}, bring {w}.",
    "I sent the {words} report to {EMAIL} on {DATE}.",
    "The {w} file lists {NAME} with the {w} ID {ID}.",
    "Pay the {words} fee to {IBAN} before {DATE}.",
    "{NAME} left a {w} voicemail for {PHONE} about {w}.",
    "{USER} changed the {words} password from {IP}.",
    "{FIRST} left the {w} {item} at {ADDRESS}.",
    "My card {CARD} was {w} {n} times at the {w}.",
    "{NAME2} saw {FIRST} {w} the {w} deal on {DATE}.",
    "Reset {USER} with the {w} phone {PHONE}, {w}.",
    "Hi {FIRST}, {n} dollars for {words} went to {IBAN}.",
    "Visitor {NAME} with ID {ID} came for the {words}.",
)
SLOT = re.compile(r"\{([A-Za-z]+?)(\d?)\}")
PLACEHOLDER = re.compile(r"\[([A-Z][A-Z0-9_]*)\]")
TOKEN = re.compile(r"\[[A-Z][A-Z0-9_]*\]|\w+|[^\w\s]")  # placeholders stay one token
WORDS = tuple(w for w in LoremProvider.word_list if w.isalpha() and w.islower())  # ~900 common words
DAYS = ("Monday", "Tuesday", "Wednesday", "Thursday", "Friday", "Saturday", "Sunday", "tomorrow", "today")
ITEMS = ("report", "laptop", "printer", "contract", "books", "keys", "tickets", "documents", "chair", "camera",
         "gift", "package", "phone case", "lamp", "bike", "boxes", "charger", "tablet", "jacket", "samples",
         "invoice", "letters", "badge", "monitor", "headphones", "flowers", "cake", "tools", "bag", "folder")
PHONES = ("(###) ###-####", "###-###-####", "+1 ### ### ####")
DATES = ("%B %d, %Y", "%m/%d/%Y", "%Y-%m-%d")
N_SENTENCES = (1, 2, 3)
MAX_TEXT_CHARS = 170  # a longer draw drops a sentence: prompts stay < 128 tokens, references < 64


def template_types(template: str) -> set[str]:
    return {SLOT_TYPES[m.group(1)] for m in SLOT.finditer(template) if m.group(1) in SLOT_TYPES}


PII_VALUES: dict[str, Callable[[Faker], str]] = {  # slot -> Faker-based value of a typical short shape
    "NAME": lambda f: f"{f.first_name()} {f.last_name()}",
    "FIRST": lambda f: f.first_name(),
    "EMAIL": lambda f: f.email(),
    "PHONE": lambda f: f.numerify(f.random.choice(PHONES)),
    "ADDRESS": lambda f: f"{f.building_number()} {f.street_name()}",
    "DATE": lambda f: f.date_between("-60y", "+1y").strftime(f.random.choice(DATES)),
    "CARD": lambda f: f.credit_card_number(),
    "IBAN": lambda f: f.iban(),
    "ID": lambda f: f.ssn(),
    "IP": lambda f: f.ipv4(),
    "USER": lambda f: f.user_name(),
}
FILLERS: dict[str, Callable[[random.Random], str]] = {  # slot -> non-PII value, from large pools
    "w": lambda r: r.choice(WORDS),
    "words": lambda r: " ".join(r.choices(WORDS, k=r.randint(2, 4))),
    "n": lambda r: str(r.randint(2, 999)),
    "day": lambda r: r.choice(DAYS),
    "time": lambda r: f"{r.randint(1, 12)}:{r.choice(range(0, 60, 5)):02d} {r.choice(('am', 'pm'))}",
    "item": lambda r: r.choice(ITEMS),
}


def _is_word(char: str) -> bool:
    return char.isalnum() or char == "_"


def contains(text: str, value: str) -> bool:
    """Verbatim, case-sensitive occurrence not glued to other word characters ("Al" not in "All")."""
    if not value:
        return False
    start = text.find(value)
    while start != -1:
        end = start + len(value)
        glued_left = start > 0 and _is_word(value[0]) and _is_word(text[start - 1])
        glued_right = end < len(text) and _is_word(value[-1]) and _is_word(text[end])
        if not (glued_left or glued_right):
            return True
        start = text.find(value, start + 1)
    return False


def placeholder_counts(text: str) -> Counter:
    return Counter(PLACEHOLDER.findall(text))


def _split_region(src: str, tgt: str) -> list[tuple[str, str]] | None:
    """Values of one replaced region: ``tgt`` is literals around placeholders, anchored in ``src``
    ("Amy," vs "[NAME]," -> "Amy"); None when the literals do not line up. Inner literals are
    matched right to left, so "[DATE], [NAME]" splits "May 2, 2001, Ann" at its last comma."""
    parts = PLACEHOLDER.split(tgt)
    literals, types = parts[0::2], parts[1::2]
    start, stop = len(literals[0]), len(src) - len(literals[-1])
    if not (src.startswith(literals[0]) and src.endswith(literals[-1])) or stop <= start:
        return None
    out = []
    for k in range(len(types) - 1, -1, -1):
        at = start if k == 0 else src.rfind(literals[k], start + 1, stop - 1)
        if at == -1:
            return None
        begin = at if k == 0 else at + len(literals[k])
        value = src[begin:stop].strip()
        if not value:
            return None
        out.append((value, types[k]))
        stop = at
    return out[::-1]


def derive_pii(text: str, masked: str) -> tuple[list[str], list[str]]:
    """Gold PII strings of ``text`` = the spans that ``masked`` replaces by ``[TYPE]`` placeholders.

    difflib aligns the two texts by whitespace-separated chunks; in each replaced region the
    literals around the placeholders are anchored in the source ("[FIRSTNAME] [LASTNAME]," splits
    "Mary Ann Smith," at the last space). A region whose literals do not line up becomes one
    value typed by its first placeholder.
    """
    src, tgt = list(re.finditer(r"\S+", text)), list(re.finditer(r"\S+", masked))
    matcher = SequenceMatcher(None, [m.group() for m in src], [m.group() for m in tgt], autojunk=False)
    values: list[tuple[str, str]] = []
    for op, i1, i2, j1, j2 in matcher.get_opcodes():
        if op != "replace":
            continue
        region, masked_region = text[src[i1].start(): src[i2 - 1].end()], masked[tgt[j1].start(): tgt[j2 - 1].end()]
        types = PLACEHOLDER.findall(masked_region)
        if types:
            values += _split_region(region, masked_region) or [(region, types[0])]
    unique = list(dict.fromkeys(values))
    return [v for v, _ in unique], [t for _, t in unique]


def _prf(prefix: str, tp: int, n_pred: int, n_ref: int) -> dict[str, float]:
    """Precision/recall/F1; nothing predicted for nothing expected is perfect, 0/0 against a
    non-empty other side counts as 0."""
    p = tp / n_pred if n_pred else float(n_ref == 0)
    r = tp / n_ref if n_ref else float(n_pred == 0)
    f = 2 * p * r / (p + r) if p + r else 0.0
    return {f"{prefix}_precision": p, f"{prefix}_recall": r, f"{prefix}_f1": f}


class AnonymizationTask(DataTask):
    name = "anonymization"
    main_metric = "quality"  # leak_rate alone rewards empty or garbage outputs, which leak nothing
    higher_is_better = True
    CODE_VERSION = "anonymization-3"
    required_columns = ("text", "reference")
    optional_columns = ("id", "pii_values", "pii_types")
    default_columns = {"text": "source_text", "reference": "target_text"}  # public PII-masking sets
    prompt_field = "text"

    def __init__(self, n_heldout_templates: int = 10, heldout_share: float = 0.25,
                 prompt_template: str = "Anonymize: {text}\nOutput:", **kwargs: Any) -> None:
        super().__init__(prompt_template=prompt_template, **kwargs)
        n = n_heldout_templates
        if isinstance(n, bool) or not isinstance(n, int) or not 0 <= n < len(TEMPLATES):
            raise ValueError(f"task.n_heldout_templates: expected an integer in [0, {len(TEMPLATES) - 1}], got {n!r}")
        self.n_heldout_templates = n
        self.config["n_heldout_templates"] = n
        if isinstance(heldout_share, bool) or not isinstance(heldout_share, (int, float)) or not 0 <= heldout_share <= 1:
            raise ValueError(f"task.heldout_share: expected a number in [0, 1], got {heldout_share!r}")
        self.heldout_share = float(heldout_share)
        self.config["heldout_share"] = self.heldout_share
        self.heldout = self._pick_heldout()

    def _pick_heldout(self) -> tuple[int, ...]:
        """Seeded held-out templates, redrawn until the remaining ones still cover every PII type."""
        rng = random.Random(f"{self.seed}:heldout")
        for _ in range(1000):
            heldout = sorted(rng.sample(range(len(TEMPLATES)), self.n_heldout_templates))
            kept = set().union(*(template_types(t) for i, t in enumerate(TEMPLATES) if i not in heldout))
            if kept == set(PII_TYPES):
                return tuple(heldout)
        raise ValueError(f"task.n_heldout_templates: {self.n_heldout_templates} held out leaves some PII type "
                         f"without a training template; use fewer")

    @property
    def features(self) -> Features:
        return Features({"id": Value("string"), "prompt": Value("string"), "reference": Value("string"),
                         "text": Value("string"), "templates": List(Value("int32")),
                         "pii_values": List(Value("string")), "pii_types": List(Value("string"))})

    # ----------------------------------------------------------------------------- embedded data
    def generate(self) -> DatasetDict:
        train_templates = [i for i in range(len(TEMPLATES)) if i not in self.heldout]
        fake = Faker("en_US")
        out = {}
        for split in SPLITS:
            fake.seed_instance(f"{self.seed}:{split}")
            rng = random.Random(f"{self.seed}:{split}")
            rows = [self._example(fake, rng, self._pool(split, rng, train_templates), f"anon-{split}-{i:05d}")
                    for i in range(self.sizes[split])]
            out[split] = Dataset.from_list(rows, features=self.features)
        return DatasetDict(out)

    def _pool(self, split: str, rng: random.Random, train_templates: list[int]) -> list[int]:
        """Templates of one example. A ``heldout_share`` of test examples is made only of held-out
        templates (phrasings never seen in training); the rest of the test split measures the
        copy-and-mask skill on seen phrasings with new words and PII, where model size shows."""
        if split == "test" and self.heldout and rng.random() < self.heldout_share:
            return list(self.heldout)
        return train_templates

    @staticmethod
    def _sentence(fake: Faker, rng: random.Random, template: str, pii: dict[tuple[str, int], tuple[str, str]],
                  sentence: int) -> tuple[str, str]:
        """(text, reference) of one template; a PII slot repeated in the sentence keeps its value."""
        text, reference, last = [], [], 0
        for m in SLOT.finditer(template):
            text.append(template[last:m.start()])
            reference.append(template[last:m.start()])
            slot, last = m.group(1), m.end()
            if slot in SLOT_TYPES:
                value, kind = pii.setdefault((m.group(0), sentence), (PII_VALUES[slot](fake), SLOT_TYPES[slot]))
                text.append(value)
                reference.append(f"[{kind}]")
            else:
                value = FILLERS[slot](rng)
                text.append(value)
                reference.append(value)
        return "".join(text + [template[last:]]), "".join(reference + [template[last:]])

    def _example(self, fake: Faker, rng: random.Random, pool: Sequence[int], row_id: str) -> dict[str, Any]:
        n = rng.choice(N_SENTENCES)
        while True:  # redraw a too-long text, or a PII value that also occurs in the kept text ("May")
            ids = rng.sample(pool, min(n, len(pool)))
            pii: dict[tuple[str, int], tuple[str, str]] = {}
            parts = [self._sentence(fake, rng, TEMPLATES[t], pii, k) for k, t in enumerate(ids)]
            text, reference = " ".join(p[0] for p in parts), " ".join(p[1] for p in parts)
            unique = list(dict.fromkeys(pii.values()))
            if len(text) > MAX_TEXT_CHARS and n > 1:
                n -= 1
            elif not any(v in reference for v, _ in unique):
                break
        return {"id": row_id, "prompt": self.format_prompt(text), "reference": reference, "text": text,
                "templates": ids, "pii_values": [v for v, _ in unique], "pii_types": [t for _, t in unique]}

    # ---------------------------------------------------------------------------------- real data
    def convert(self, row: dict[str, Any]) -> dict[str, Any]:
        text, reference = str(row["text"]).strip(), str(row["reference"]).strip()
        if "pii_values" in row:
            values = [str(v) for v in row["pii_values"]]
            types = [str(t) for t in row["pii_types"]] if "pii_types" in row else ["PII"] * len(values)
        else:
            values, types = derive_pii(text, reference)
        return {"id": row["id"], "prompt": self.format_prompt(text), "reference": reference, "text": text,
                "templates": [], "pii_values": values, "pii_types": types}

    # ------------------------------------------------------------------------------------ metrics
    def leaked(self, prediction: str, example: dict[str, Any]) -> list[bool]:
        return [contains(prediction, v) for v in example["pii_values"]]

    def quality(self, prediction: str, example: dict[str, Any]) -> float:
        """0.5 * (1 - share of gold PII strings leaked) + 0.5 * difflib ratio to the reference.

        The ratio is over word/punctuation tokens with placeholders as single tokens, so a wrong
        placeholder type costs as much as a wrong word. Without gold PII the first half is 0.5.
        """
        leaks = self.leaked(prediction, example)
        no_leak = 1.0 - sum(leaks) / len(leaks) if leaks else 1.0
        ratio = SequenceMatcher(None, TOKEN.findall(prediction), TOKEN.findall(example["reference"]),
                                autojunk=False).ratio()
        return 0.5 * no_leak + 0.5 * ratio

    def metrics(self, predictions: Sequence[str], examples: Sequence[dict[str, Any]]) -> dict[str, float]:
        """leak_rate (micro over gold PII strings), placeholder P/R/F1 (micro and per type, multiset
        matching of ``[TYPE]`` counts against the reference), exact_match and mean quality."""
        if len(predictions) != len(examples) or not predictions:
            raise ValueError(f"predictions: expected one per example (>0), got {len(predictions)} for {len(examples)}")
        n_values = n_leaked = exact = 0
        quality = 0.0
        tp, n_pred, n_ref = Counter(), Counter(), Counter()
        for prediction, example in zip(predictions, examples):
            leaks = self.leaked(prediction, example)
            n_values, n_leaked = n_values + len(leaks), n_leaked + sum(leaks)
            exact += prediction.strip() == example["reference"].strip()
            quality += self.quality(prediction, example)
            pred, ref = placeholder_counts(prediction), placeholder_counts(example["reference"])
            tp, n_pred, n_ref = tp + (pred & ref), n_pred + pred, n_ref + ref
        out = {"leak_rate": n_leaked / n_values if n_values else 0.0, "exact_match": exact / len(predictions),
               "quality": quality / len(predictions)}
        out.update(_prf("placeholder", sum(tp.values()), sum(n_pred.values()), sum(n_ref.values())))
        for kind in sorted(set(n_pred) | set(n_ref)):
            out.update({f"{k}/{kind}": v for k, v in _prf("placeholder", tp[kind], n_pred[kind], n_ref[kind]).items()})
        return out
