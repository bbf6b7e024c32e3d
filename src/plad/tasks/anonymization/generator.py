"""The embedded anonymization data: sentence templates, filler pools and PII value makers.

A template mixes PII slots (upper case: ``{NAME}``, ``{EMAIL}`` ...; a trailing digit makes a
second, distinct value of the same kind) with filler slots (lower case: ``{w}``, ``{words}`` ...)
drawn afresh at every occurrence from large pools, so the text around the PII must be copied.

Some PII is made to look like ordinary words (names such as "Rose Hill" or "Will Young",
usernames such as "quiet" or "quietriver"): a model that copies text without understanding where PII sits
leaks exactly these, so leak rate separates weak systems from strong ones.
"""

from __future__ import annotations

import ipaddress
import random
import re
from collections.abc import Callable
from datetime import date

from faker import Faker

from plad.tasks.anonymization.pools import DAYS, ITEMS, PROPER_TERMS, WORD_FIRST_NAMES, WORD_LAST_NAMES, WORDS

# Slot -> placeholder type. Upper-case slots are PII; a trailing digit makes a second, distinct
# value of the same kind. Lower-case slots are non-PII fillers, drawn afresh at every occurrence,
# that must be copied unchanged.
SLOT_TYPES = {
    "NAME": "NAME",
    "FIRST": "NAME",
    "EMAIL": "EMAIL",
    "PHONE": "PHONE",
    "ADDRESS": "ADDRESS",
    "DATE": "DATE",
    "CARD": "CARD",
    "IBAN": "IBAN",
    "ID": "ID",
    "IP": "IP",
    "USER": "USERNAME",
}
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
# Leak probes: ordinary capitalised words that are also first names ("Will", "Mark", "Hope" ...), and
# names where a free word could stand: only the position tells PII from text. They are always in
# training (never held out): they exist to test masking of word-like PII, not unseen phrasing.
LEAK_PROBES = (
    "Will the {words} reach {EMAIL} by {day}?",
    "Mark the {w} {item} for {FIRST} by {day}.",
    "Hope the {words} helps {FIRST}, {w}.",
    "Grant {USER} access to the {words}.",
    "Frank {words} came from {NAME} on {day}.",
    "Sunny {words} at {ADDRESS} with {FIRST}.",
    "The {words} {item} from {FIRST} is {w}.",
    "Bring the {w} {item} and {FIRST} to the {words}.",
    "Grace and {words} for {NAME}, {w}.",
    "Ask {FIRST} about the {w} {words} on {DATE}.",
)
N_PHRASINGS = len(TEMPLATES)  # templates 0..N_PHRASINGS-1 may be held out; the leak probes follow
TEMPLATES = TEMPLATES + LEAK_PROBES
SLOT = re.compile(r"\{([A-Za-z]+?)(\d?)\}")
PLACEHOLDER = re.compile(r"\[([A-Z][A-Z0-9_]*)\]")
TOKEN = re.compile(r"\[[A-Z][A-Z0-9_]*\]|\w+|[^\w\s]")  # placeholders stay one token
PHONES = ("(###) ###-####", "###-###-####", "+1 ### ### ####")
DATES = ("%B %d, %Y", "%m/%d/%Y", "%Y-%m-%d")
# Fixed bounds, not Faker's relative "-60y" / "+1y": those follow the calendar, so the same seed
# made other dates on another day and a fresh clone could not regenerate the data the results were
# measured on. These are the bounds those strings gave on 2026-12-05.
DATE_RANGE = (date(1966, 12, 5), date(2027, 12, 5))
N_SENTENCES = (1, 2, 3)
MAX_TEXT_CHARS = 170  # a longer draw drops a sentence: prompts stay < 128 tokens, references < 64


def scramble(template: str, rng: random.Random) -> str:
    """The template's words in a random order, each PII slot kept with the word before it, its cue
    ("User {USER}", "at {PHONE}"): a phrasing no template has, whose PII is still recognisable. A
    model trained with such sentences must copy words, not recall a template's continuation."""
    body, end = (template[:-1], template[-1]) if template[-1] in ".?!" else (template, ".")
    units: list[str] = []
    for token in body.split():
        slot = SLOT.search(token)
        if units and slot and slot.group(1) in SLOT_TYPES and not SLOT.search(units[-1]):
            units[-1] = f"{units[-1]} {token}"
        else:
            units.append(token)
    rng.shuffle(units)
    text = " ".join(units).rstrip(",")
    return text[:1].upper() + text[1:] + end


def template_types(template: str) -> set[str]:
    return {SLOT_TYPES[m.group(1)] for m in SLOT.finditer(template) if m.group(1) in SLOT_TYPES}


WORDLIKE_SHARE = 0.3  # default share of names drawn from the word-like pools (task.wordlike_share)
WORDLIKE_USER_SHARE = 0.8  # share of usernames made of ordinary words (70% of them a single word)


def _first(f: Faker, share: float) -> str:
    return f.random.choice(WORD_FIRST_NAMES) if f.random.random() < share else f.first_name()


def _full(f: Faker, share: float) -> str:
    if f.random.random() < share:
        return f"{f.random.choice(WORD_FIRST_NAMES)} {f.random.choice(WORD_LAST_NAMES)}"
    return f"{f.first_name()} {f.last_name()}"


def _user(f: Faker) -> str:
    """A word-like username is often one ordinary word ("quiet"): only its position says it is PII,
    so a model that copies words without tracking positions leaks it into the free-word slots."""
    if f.random.random() < WORDLIKE_USER_SHARE:
        if f.random.random() < 0.7:
            return f.random.choice(WORDS)
        return f.random.choice(WORDS) + f.random.choice(("", "_", ".")) + f.random.choice(WORDS)
    return f.user_name()


def pii_values(wordlike_share: float = WORDLIKE_SHARE) -> dict[str, Callable[[Faker], str]]:
    """Slot -> Faker-based value of a typical short shape; ``wordlike_share`` of the names come from
    the word-like pools ("Will Young"), the PII a copying model leaks (the task's difficulty knob)."""
    return {
        "NAME": lambda f: _full(f, wordlike_share),
        "FIRST": lambda f: _first(f, wordlike_share),
        "EMAIL": lambda f: f.email(),
        "PHONE": lambda f: f.numerify(f.random.choice(PHONES)),
        "ADDRESS": lambda f: f"{f.building_number()} {f.street_name()}",
        "DATE": lambda f: f.date_between(*DATE_RANGE).strftime(f.random.choice(DATES)),
        "CARD": lambda f: f.credit_card_number(),
        "IBAN": lambda f: f.iban(),
        "ID": lambda f: f.ssn(),
        "IP": lambda f: f.ipv4(),
        "USER": _user,
    }


PRINTED_SLOTS = ("CARD", "IBAN", "IP")  # the slots ``task.pii_format_share`` may write in their other format


def printed(slot: str, value: str, f: Faker) -> str:
    """``value`` of a ``PRINTED_SLOTS`` slot in its other common format: a card number or IBAN in
    groups of four separated by spaces, as printed on cards and statements (a 15-digit card 4-6-5),
    an IP address as IPv6 (half of them with a run of zero groups written "::"). Faker writes cards
    and IBANs as one unbroken string and IPs as IPv4 only; students trained on those alone repeat
    digit groups inside spaced numbers and IPv6 addresses of real text (RESULTS)."""
    if slot == "IP":
        groups = [f.random.randrange(1 << 16) for _ in range(8)]
        if f.random.random() < 0.5:
            start = f.random.randint(1, 5)
            length = f.random.randint(2, 7 - start)  # the first and last groups stay
            groups[start : start + length] = [0] * length
        return str(ipaddress.IPv6Address(":".join(f"{g:x}" for g in groups)))
    compact = value.replace(" ", "").replace("-", "")
    if slot == "CARD" and len(compact) == 15:
        return f"{compact[:4]} {compact[4:10]} {compact[10:]}"
    return " ".join(compact[i : i + 4] for i in range(0, len(compact), 4))


FILLERS: dict[str, Callable[[random.Random], str]] = {  # slot -> non-PII value, from large pools
    "w": lambda r: r.choice(WORDS),
    "words": lambda r: " ".join(r.choices(WORDS, k=r.randint(2, 4))),
    "n": lambda r: str(r.randint(2, 999)),
    "day": lambda r: r.choice(DAYS),
    "time": lambda r: f"{r.randint(1, 12)}:{r.choice(range(0, 60, 5)):02d} {r.choice(('am', 'pm'))}",
    "item": lambda r: r.choice(ITEMS),
}

UNITS = ("MB", "GB", "mg", "ml", "kg", "km", "ms", "%", "EUR", "USD", "pages", "items")


def proper(r: random.Random) -> str:
    """A non-PII word that looks like PII to a model that only saw lower-case fillers: a capitalised
    term (``PROPER_TERMS``: a place alone, an organisation, a product), a code (ticket, host,
    version) or a number with a unit. It must be copied, not masked (``task.proper_share``)."""
    kind = r.random()
    if kind < 0.6:
        return r.choice(PROPER_TERMS)
    if kind < 0.85:
        letters = "".join(r.choices("ABCDEFGHJKLMNPRSTUVWXYZ", k=r.randint(1, 3)))
        return r.choice(
            (
                f"{letters}-{r.randint(10, 9999)}",
                f"v{r.randint(1, 12)}.{r.randint(0, 20)}.{r.randint(0, 9)}",
                f"{r.choice(WORDS)}-{r.randint(1, 99):02d}",
                f"#{r.randint(100, 99999)}",
            )
        )
    return f"{r.randint(2, 950)} {r.choice(UNITS)}"


PROPER_SLOTS = ("w", "words", "item")  # the filler slots ``proper_share`` may draw from ``proper``


def filler(slot: str, r: random.Random, share: float = 0.0) -> str:
    """A filler slot's value; with ``share`` (``task.proper_share``, train and unlabeled only), that
    share of its words are ``proper``: capitalised terms, codes, numbers with units, non-PII that
    looks like PII. At 0 the draws are exactly those made before the option existed."""
    if not share or slot not in PROPER_SLOTS:
        return FILLERS[slot](r)
    if slot == "words":
        return " ".join(proper(r) if r.random() < share else r.choice(WORDS) for _ in range(r.randint(2, 4)))
    return proper(r) if r.random() < share else FILLERS[slot](r)
