"""A rule-based anonymizer: the peer a user writes in an afternoon, evaluated as system ``rule_based``.

Regular expressions for e-mails, IBANs, cards, IPs, dates, phones, IDs, usernames and street
addresses, plus a dictionary of first names (every Faker locale's first-name lists, available
offline) for names. It writes the task's placeholders (``[NAME]``, ``[EMAIL]`` ...), so every
anonymization metric applies to it unchanged. No model and no training: a trained system has to
beat it to be worth its cost. Its known blind spots are the realistic ones: names missing from the
list or lower-cased, addresses without a street word, dates in other languages, and ordinary
capitalised words that are also first names ("Bruno" the dog) or number shapes ("10/10").
"""

from __future__ import annotations

import importlib
import re
from functools import lru_cache

from faker.config import AVAILABLE_LOCALES
from faker.providers.address.en_US import Provider as AddressProvider

from plad.tasks.anonymization.pools import DAYS, WORDS

MONTHS = (
    "January|February|March|April|May|June|July|August|September|October|November|December|"
    "Jan|Feb|Mar|Apr|Jun|Jul|Aug|Sep|Sept|Oct|Nov|Dec"
)
SUFFIXES = "|".join(
    sorted(
        {*AddressProvider.street_suffixes, "St", "Rd", "Ave", "Ln", "Dr", "Blvd", "Ct", "Pl", "Close", "Terrace"},
        key=len,
        reverse=True,
    )
)
CAP = r"[A-ZÀ-ÖØ-Þ][\w'’-]*"  # a capitalised word
HEX = "[0-9A-Fa-f]"

# (type, pattern) in priority order: an earlier rule's match wins any overlap. A pattern with a
# group named ``v`` masks only that group (the keyword or title before it stays).
RULES: list[tuple[str, re.Pattern]] = [
    (kind, re.compile(pattern))
    for kind, pattern in (
        ("EMAIL", r"[\w.+-]+@[\w-]+(?:\.[\w-]+)+"),
        ("IBAN", r"\b[A-Z]{2}\d{2}(?: ?[A-Z0-9]{4}){2,7}(?: ?[A-Z0-9]{1,3})?\b"),
        ("CARD", r"\b(?:\d{4}[ -]?){3}\d{4}\b|\b\d{4}[ -]?\d{6}[ -]?\d{5}\b"),
        ("IP", r"\b(?:\d{1,3}\.){3}\d{1,3}\b"),
        ("IP", rf"(?<![\w:])(?=[0-9A-Fa-f:]*::|(?:{HEX}{{1,4}}:){{7}}){HEX}{{0,4}}(?::{HEX}{{0,4}}){{2,7}}(?![\w:])"),
        ("ID", r"\b\d{3}-\d{2}-\d{4}\b"),
        ("ID", r"\b(?=[A-Z0-9-]*\d)(?=[A-Z0-9-]*[A-Z])[A-Z0-9]{1,12}(?:-[A-Z0-9]{1,12})*\b"),
        ("DATE", r"\b\d{1,4}[./-]\d{1,2}[./-]\d{2,4}\b|\b\d{1,2}/\d{1,2}\b"),
        ("DATE", rf"\b\d{{1,2}}(?:st|nd|rd|th)?(?: of)? (?:{MONTHS})\b(?:,? \d{{4}}\b)?"),
        ("DATE", rf"\b(?:{MONTHS})\.? \d{{1,2}}(?:st|nd|rd|th)?\b(?:,? \d{{4}}\b)?"),
        ("DATE", rf"\b\d{{1,2}}-(?:{MONTHS})-\d{{2,4}}\b"),
        ("PHONE", r"(?<![\w+])(?:\+\d{1,3}[ .-]?)?(?:\(\d{1,4}\)[ .-]?)?\d[\d .-]{5,}\d\b"),
        ("ID", r"\b\d{6,}\b"),
        ("USERNAME", r"(?<![\w.@])@[A-Za-z0-9_][\w.-]*\w"),
        (
            "USERNAME",
            r"(?i:\b(?:user(?:name)?|login|handle|account|as)\b:?) (?P<v>(?=[\w.-]*[\d_.])[a-z][\w.-]*[a-z0-9])",
        ),
        ("ADDRESS", rf"(?:\b(?:Flat|Apartment|Apt|Unit) \w+, )?\b\d{{1,5}}[A-Z]?,? (?:{CAP} ){{1,3}}(?:{SUFFIXES})\b"),
        ("ADDRESS", r"\b[A-ZÀ-Þ][\w-]*(?:straße|strasse|gatan|gasse|weg|allee|vej|platz) \d{1,4}[a-z]?\b"),
        ("ADDRESS", r"\b(?:[Rr]ue|Calle|Rua|Via|Avenida|Av\.) (?:[\w'’.-]+ ){0,4}?\d{1,5}\b"),
        ("ADDRESS", r"\b\d{1,5},? (?:rue|via) [\w'’ -]+?(?=,|\.|$)"),
        ("NAME", rf"\b(?:Mr|Mrs|Ms|Miss|Dr|Prof)\.? (?P<v>{CAP}(?: {CAP}){{0,2}})"),
    )
]
ACCEPT = {  # shape checks a regex alone cannot express
    "PHONE": lambda s: sum(c.isdigit() for c in s) >= 9,  # "Order 5521-0094" is no phone
    "ID": lambda s: len(s) >= 6 and sum(c.isdigit() for c in s) >= 3,  # "EH7", "G2P1" are no IDs
}
TOKEN = re.compile(r"[^\W\d_](?:[\w-]|['’](?=[^\W\d_]{2}))*")  # "O'Neill" is one token, "Ann's" stops at "Ann"
COMMON = {
    w.lower()
    for w in (
        *WORDS,
        *DAYS,
        *MONTHS.split("|"),
        "hi",
        "hey",
        "hello",
        "dear",
        "thanks",
        "the",
        "please",
        "happy",
        "love",
        "best",
        "kind",
        "regards",
        "sir",
        "madam",
    )
}


@lru_cache(maxsize=1)
def first_names() -> frozenset[str]:
    """First names of every Faker locale (``first_name*`` lists; ~30k, 0.5 s to import once)."""
    names: set[str] = set()
    for locale in AVAILABLE_LOCALES:
        try:
            provider = importlib.import_module(f"faker.providers.person.{locale}").Provider
        except (ImportError, AttributeError):
            continue
        for attr in dir(provider):
            value = getattr(provider, attr)
            if attr.startswith("first_name") and isinstance(value, (tuple, list, dict, set, frozenset)):
                names.update(str(n) for n in value if len(str(n)) > 1 and str(n)[0].isupper())
    return frozenset(names)


def _name_spans(text: str, taken: list[tuple[int, int]]) -> list[tuple[int, int]]:
    """A first name from the list, and the capitalised words right after it (surnames). A name that
    is also a common English word ("Will", "Hope") counts only when a capitalised word follows."""
    names, spans = first_names(), []
    tokens = [m for m in TOKEN.finditer(text) if not _overlaps(m.span(), taken)]
    i = 0
    while i < len(tokens):
        word = tokens[i].group()
        j = i + 1
        while (
            j < len(tokens)
            and j - i < 3
            and tokens[j].group()[0].isupper()
            and text[tokens[j - 1].end() : tokens[j].start()] == " "
        ):
            j += 1
        if word in names and (word.lower() not in COMMON or j > i + 1):
            spans.append((tokens[i].start(), tokens[j - 1].end()))
            i = j
        else:
            i += 1
    return spans


def _overlaps(span: tuple[int, int], taken: list[tuple[int, int]]) -> bool:
    return any(span[0] < end and start < span[1] for start, end in taken)


def anonymize(text: str) -> str:
    """``text`` with every span a rule matches replaced by its ``[TYPE]`` placeholder."""
    found: list[tuple[int, int, str]] = []
    for kind, pattern in RULES:
        for m in pattern.finditer(text):
            span = m.span("v") if "v" in pattern.groupindex else m.span()
            ok = ACCEPT.get(kind, bool)(text[span[0] : span[1]])
            if ok and span[1] > span[0] and not _overlaps(span, [(s, e) for s, e, _ in found]):
                found.append((*span, kind))
    found += [(s, e, "NAME") for s, e in _name_spans(text, [(s, e) for s, e, _ in found])]
    out, last = [], 0
    for start, end, kind in sorted(found):
        out += [text[last:start], f"[{kind}]"]
        last = end
    return "".join(out + [text[last:]])
