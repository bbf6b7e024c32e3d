"""Anonymization: rewrite a short text replacing every piece of personal data by a typed placeholder.

The output copies the input verbatim except for PII spans, which become ``[NAME]``, ``[EMAIL]``,
... So the task mixes copying with typed substitution: learnable by a tiny model trained from
scratch, while a bigger one makes clearly fewer mistakes. The embedded data comes from Faker and
~50 phrasing templates; a seeded subset of templates is held out for the test split only, so
test scores measure generalisation to unseen phrasings rather than template recall.

Real data is any (text, masked text) pair dataset; the gold PII strings, needed for the leak
rate, are read from columns when mapped, else derived by diffing the text against the masked one.
"""
from __future__ import annotations

import random
import re
from collections import Counter
from difflib import SequenceMatcher
from typing import Any, Sequence

from datasets import Dataset, DatasetDict, Features, List, Value
from faker import Faker

from plad.tasks.base import SPLITS
from plad.tasks.loading import DataTask

# Slot -> placeholder type. Upper-case slots are PII; a trailing digit makes a second, distinct
# value of the same kind. Lower-case slots are non-PII fillers that must be copied unchanged.
SLOT_TYPES = {"NAME": "NAME", "FIRST": "NAME", "EMAIL": "EMAIL", "PHONE": "PHONE", "ADDRESS": "ADDRESS",
              "DATE": "DATE", "CARD": "CARD", "IBAN": "IBAN", "ID": "ID", "IP": "IP", "USER": "USERNAME"}
PII_TYPES = tuple(sorted(set(SLOT_TYPES.values())))

TEMPLATES = (
    "Hi {FIRST}, this is {NAME2}. Please call me back at {PHONE} before {time} on {day}.",
    "Dear {NAME}, your card {CARD} was charged for the {item} on {DATE}.",
    "Please send the invoice for the {item} to {EMAIL} and copy {FIRST} from the office.",
    "Note: {NAME} moved to {ADDRESS} last month and can be reached at {PHONE}.",
    "Can you wire the deposit to {IBAN}? The account is in the name of {NAME}.",
    "Reminder for {FIRST}: your appointment is on {DATE} at {time}. Please come ten minutes early.",
    "Login alert: user {USER} signed in from {IP} on {day} at {time}.",
    "Patient {NAME}, born {DATE}, has the insurance number {ID} and a visit on {day}.",
    "Hey, it's {FIRST}. My new email is {EMAIL}, the old one no longer works.",
    "Ship the {item} to {NAME} at {ADDRESS} by {day}, and call {PHONE} if nobody is home.",
    "The refund of {n} dollars goes to {IBAN}, as {NAME} asked on {DATE}.",
    "Hi team, {NAME} will join us on {DATE}. The new work email will be {EMAIL}.",
    "Security note: the account {USER} was locked after {n} failed logins from {IP}.",
    "Thanks {FIRST}! I paid for the {item} with my card {CARD} this morning.",
    "{NAME} lives at {ADDRESS} and works from home most days of the week.",
    "Call {FIRST} at {PHONE} or write to {EMAIL} about the {item}.",
    "Employee {NAME}, social security number {ID}, starts on {DATE} in the sales team.",
    "Your package with the {item} will arrive at {ADDRESS} on {day} before {time}.",
    "Please update my details: name {NAME}, phone {PHONE}, email {EMAIL}.",
    "The server at {IP} was restarted by {USER} on {DATE} after the update.",
    "I lost my wallet on {day}. Please block the card {CARD} as soon as you can.",
    "Meeting notes: {FIRST} and {FIRST2} agreed to send the {item} by {day}.",
    "Dear {NAME}, we received your payment from {IBAN} on {DATE}. Thank you.",
    "New tenant {NAME} moves into {ADDRESS} on {DATE}; the keys are at the front desk.",
    "Text me at {PHONE} when you get to the station, {FIRST}.",
    "Hello {FIRST}, your username is {USER} and your temporary code expires at {time}.",
    "Application received from {NAME}, ID number {ID}, email {EMAIL}. We will reply in {n} days.",
    "{FIRST} asked me to forward this to {EMAIL} before the meeting on {day}.",
    "Order {n} was paid with the card {CARD} and sent to {ADDRESS}.",
    "Please check the logs: {USER} opened {n} files from {IP} last night.",
    "My name is {NAME} and I was born on {DATE}. I would like to open an account.",
    "Transfer {n} dollars from {IBAN} to the account of {NAME} today.",
    "The doctor will see {NAME} on {DATE} at {time}; call {PHONE} to change it.",
    "Hi {FIRST}, the {item} you ordered is ready. Pick it up at {ADDRESS}.",
    "Contact person: {NAME}, phone {PHONE}. Backup contact: {NAME2}, only after {time}.",
    "Your tax ID {ID} was linked to the email {EMAIL} on {DATE}.",
    "{FIRST} from accounting says the card {CARD} expires soon and needs to be replaced.",
    "We saw a login from {IP} for {USER} on {day}. Was this you, {FIRST}?",
    "Dinner at {FIRST}'s place on {day}! The address is {ADDRESS}, bring the {item}.",
    "Good morning, I am writing about the {item} I sent to {EMAIL} on {DATE}.",
    "The form lists {NAME} at {ADDRESS} with the ID {ID}.",
    "Please pay the {n} dollar fee to {IBAN} before {DATE}, {FIRST}.",
    "Voicemail from {NAME}: please call back at {PHONE} about the {item}.",
    "User {USER} changed the password for {EMAIL} from {IP} late on {day}.",
    "{FIRST} said the {item} was left at {ADDRESS} on {day} afternoon.",
    "Hi, I am {NAME}. My card {CARD} was declined twice on {DATE}. Can you help?",
    "For the record, {NAME2} confirmed that {FIRST} signed the contract on {DATE}.",
    "Reset request: account {USER}, recovery phone {PHONE}, last seen at {IP}.",
    "Hi {FIRST}, I sent {n} dollars to {IBAN} for the {item} on {day}.",
    "Visitor {NAME} with ID {ID} may enter the building until {time} on {day}.",
)
SLOT = re.compile(r"\{([A-Za-z]+?)(\d?)\}")
PLACEHOLDER = re.compile(r"\[([A-Z][A-Z0-9_]*)\]")
TOKEN = re.compile(r"\[[A-Z][A-Z0-9_]*\]|\w+|[^\w\s]")  # placeholders stay one token
DAYS = ("Monday", "Tuesday", "Wednesday", "Thursday", "Friday", "Saturday", "Sunday", "tomorrow")
TIMES = ("8 am", "9 am", "10 am", "11 am", "noon", "1 pm", "2 pm", "3 pm", "4 pm", "5 pm", "6 pm")
ITEMS = ("report", "laptop", "printer", "contract", "books", "keys", "tickets", "documents", "chair",
         "camera", "gift", "package", "phone case", "lamp", "bike")
PHONES = ("(###) ###-####", "###-###-####", "+1 ### ### ####")
DATES = ("%B %d, %Y", "%m/%d/%Y", "%Y-%m-%d")


def template_types(template: str) -> set[str]:
    return {SLOT_TYPES[m.group(1)] for m in SLOT.finditer(template) if m.group(1) in SLOT_TYPES}


PII_VALUES = {  # slot -> Faker-based value; short shapes keep the inputs 1-2 sentences long
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
    main_metric = "leak_rate"
    higher_is_better = False
    CODE_VERSION = "anonymization-1"
    required_columns = ("text", "reference")
    optional_columns = ("id", "pii_values", "pii_types")
    default_columns = {"text": "source_text", "reference": "target_text"}  # public PII-masking sets
    prompt_field = "text"

    def __init__(self, n_heldout_templates: int = 10, prompt_template: str = "Anonymize: {text}\nOutput:",
                 **kwargs: Any) -> None:
        super().__init__(prompt_template=prompt_template, **kwargs)
        n = n_heldout_templates
        if isinstance(n, bool) or not isinstance(n, int) or not 0 <= n < len(TEMPLATES):
            raise ValueError(f"task.n_heldout_templates: expected an integer in [0, {len(TEMPLATES) - 1}], got {n!r}")
        self.n_heldout_templates = n
        self.config["n_heldout_templates"] = n
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
                         "text": Value("string"), "template": Value("int32"),
                         "pii_values": List(Value("string")), "pii_types": List(Value("string"))})

    # ----------------------------------------------------------------------------- embedded data
    def generate(self) -> DatasetDict:
        train_templates = [i for i in range(len(TEMPLATES)) if i not in self.heldout]
        fake = Faker("en_US")
        out = {}
        for split in SPLITS:
            fake.seed_instance(f"{self.seed}:{split}")
            rng = random.Random(f"{self.seed}:{split}")
            pool = list(self.heldout or train_templates) if split == "test" else train_templates
            rows = [self._example(fake, rng, rng.choice(pool), f"anon-{split}-{i:05d}")
                    for i in range(self.sizes[split])]
            out[split] = Dataset.from_list(rows, features=self.features)
        return DatasetDict(out)

    def _example(self, fake: Faker, rng: random.Random, template_id: int, row_id: str) -> dict[str, Any]:
        template = TEMPLATES[template_id]
        fillers = {"day": rng.choice(DAYS), "time": rng.choice(TIMES), "item": rng.choice(ITEMS),
                   "n": str(rng.randint(2, 500))}
        while True:  # redraw the rare PII value that also occurs in the kept text (e.g. a name "May")
            pii: dict[str, tuple[str, str]] = {}
            for m in SLOT.finditer(template):
                slot, key = m.group(1), m.group(0)
                if slot in SLOT_TYPES and key not in pii:
                    pii[key] = (PII_VALUES[slot](fake), SLOT_TYPES[slot])
            text, reference = template, template
            for key, (value, kind) in pii.items():
                text, reference = text.replace(key, value), reference.replace(key, f"[{kind}]")
            for key, value in fillers.items():
                text, reference = text.replace(f"{{{key}}}", value), reference.replace(f"{{{key}}}", value)
            unique = list(dict.fromkeys(pii.values()))
            if not any(contains(reference, v) for v, _ in unique):
                break
        return {"id": row_id, "prompt": self.format_prompt(text), "reference": reference, "text": text,
                "template": template_id, "pii_values": [v for v, _ in unique], "pii_types": [t for _, t in unique]}

    # ---------------------------------------------------------------------------------- real data
    def convert(self, row: dict[str, Any]) -> dict[str, Any]:
        text, reference = str(row["text"]).strip(), str(row["reference"]).strip()
        if "pii_values" in row:
            values = [str(v) for v in row["pii_values"]]
            types = [str(t) for t in row["pii_types"]] if "pii_types" in row else ["PII"] * len(values)
        else:
            values, types = derive_pii(text, reference)
        return {"id": row["id"], "prompt": self.format_prompt(text), "reference": reference, "text": text,
                "template": -1, "pii_values": values, "pii_types": types}

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
