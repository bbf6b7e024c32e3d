"""The two tasks: seeded embedded data, held-out phrasings, varied composed texts, token budgets,
metrics on hand-made outputs, diff-based PII derivation, real-data loading through a column
mapping, config errors and fingerprints."""

import json
import os
import re
import subprocess
import sys
from collections import Counter
from pathlib import Path

import pytest
from helpers.tasks import SMALL, replaced, rows
from hydra.utils import instantiate
from omegaconf import OmegaConf

from plad.checks import InputError
from plad.models.tokenizer import train_tokenizer
from plad.tasks.anonymization import AnonymizationTask
from plad.tasks.anonymization.generator import FILLERS, N_PHRASINGS, PII_TYPES, SLOT, SLOT_TYPES, TEMPLATES
from plad.tasks.anonymization.spans import derive_pii
from plad.tasks.base import SPLITS
from plad.tasks.summarization import SummarizationTask

CONFIGS = Path(__file__).resolve().parents[1] / "configs"
TASKS = [AnonymizationTask, SummarizationTask]


# ------------------------------------------------------------------------------ embedded data
@pytest.mark.parametrize("cls", TASKS)
def test_embedded_data_is_deterministic_per_seed_and_differs_across_seeds(cls):
    a, b, c = (cls(seed=s, **SMALL).load() for s in (0, 0, 1))
    assert rows(a) == rows(b)
    assert list(a["train"]["prompt"]) != list(c["train"]["prompt"])
    assert {s: len(a[s]) for s in SPLITS} == {"train": 60, "unlabeled": 20, "validation": 10, "test": 30}
    ids = [i for s in SPLITS for i in a[s]["id"]]
    assert len(set(ids)) == len(ids)
    prompts = [p for s in SPLITS for p in a[s]["prompt"]]
    assert all(p.endswith("\nOutput:") for p in prompts)


def test_embedded_data_is_identical_in_a_fresh_process():
    """Seeds must not depend on Python's per-process hash randomisation (cached stages reuse it)."""
    code = (
        "from plad.tasks.anonymization import AnonymizationTask as T; import json; "
        "d = T(seed=5, n_train=20, n_unlabeled=5, n_validation=5, n_test=5).load(); "
        "print(json.dumps(list(d['train']['prompt']) + list(d['test']['pii_values'])))"
    )
    out = subprocess.run(
        [sys.executable, "-c", code],
        capture_output=True,
        text=True,
        check=True,
        env={**os.environ, "PYTHONHASHSEED": "123"},
    ).stdout
    d = AnonymizationTask(seed=5, n_train=20, n_unlabeled=5, n_validation=5, n_test=5).load()
    assert json.loads(out) == list(d["train"]["prompt"]) + list(d["test"]["pii_values"])


def test_template_inventory():
    assert len(TEMPLATES) >= 40 and len(set(TEMPLATES)) == len(TEMPLATES)
    assert len(PII_TYPES) >= 8
    for template in TEMPLATES:
        slots = [m.group(1) for m in SLOT.finditer(template)]
        assert any(s in SLOT_TYPES for s in slots), template  # something to anonymize
        assert any(s in FILLERS for s in slots), template  # something drawn from a pool, to copy
        assert set(slots) <= set(SLOT_TYPES) | set(FILLERS), template


@pytest.mark.parametrize("seed", [0, 3])
def test_heldout_templates_only_in_test(seed):
    task = AnonymizationTask(
        seed=seed, n_heldout_templates=10, n_train=300, n_unlabeled=100, n_validation=50, n_test=100
    )
    data = task.load()
    assert len(set(task.heldout)) == 10
    seen = {t for s in ("train", "unlabeled", "validation") for ts in data[s]["templates"] for t in ts}
    assert not seen & set(task.heldout)
    heldout_rows = [ts for ts in data["test"]["templates"] if set(ts) <= set(task.heldout)]
    assert 0 < len(heldout_rows) < len(data["test"])  # a share of test texts is made of unseen phrasings
    train_types = {t for types in data["train"]["pii_types"] for t in types}
    assert train_types == set(PII_TYPES)  # holding out phrasings never removes a PII type from train


def test_validation_can_hold_out_its_own_phrasings():
    """``task.validation_heldout_templates``: validation gets held-out phrasings of its own, disjoint
    from test's and absent from train and unlabeled, in ``heldout_share`` of its texts, and its
    metrics split /seen and /heldout as test's do. At 0 (the default) nothing changes, not even the
    data's cache key."""
    kw = dict(seed=0, n_train=300, n_unlabeled=100, n_validation=80, n_test=20, heldout_share=0.5)
    task = AnonymizationTask(validation_heldout_templates=6, **kw)
    data = task.load()
    assert len(task.val_heldout) == 6 and not set(task.val_heldout) & set(task.heldout)
    seen = {t for s in ("train", "unlabeled") for ts in data[s]["templates"] for t in ts}
    assert not seen & (set(task.val_heldout) | set(task.heldout))
    val = [dict(r) for r in data["validation"]]
    held = [set(r["templates"]) <= set(task.val_heldout) for r in val]
    assert 0.25 < sum(held) / len(held) < 0.75
    assert not any(set(r["templates"]) & set(task.heldout) for r in val)  # test's phrasings stay test's
    out = task.metrics([r["reference"] if h else r["text"] for r, h in zip(val, held)], val)
    assert out["quality/heldout"] > out["quality/seen"]  # the held-out subset is scored on its own
    default = AnonymizationTask(**kw)
    assert (
        default.val_heldout == ()
        and default.fingerprint() == AnonymizationTask(validation_heldout_templates=0, **kw).fingerprint()
    )
    assert task.fingerprint() != default.fingerprint()
    for bad in (-1, 40, True, "3"):
        with pytest.raises(InputError, match="^task.validation_heldout_templates: expected"):
            AnonymizationTask(validation_heldout_templates=bad, **kw)


def test_texts_are_composed_and_their_non_pii_words_vary():
    """1-3 sentences per text, and the words around the PII are mostly new: a model must copy them."""
    data = AnonymizationTask(seed=1, n_train=1000, n_unlabeled=5, n_validation=5, n_test=200).load()
    for split in ("train", "test"):
        counts = {len(ts) for ts in data[split]["templates"]}
        assert counts == {1, 2, 3}, split
        references = data[split]["reference"]
        assert len(set(references)) > 0.95 * len(references)  # a few short one-sentence texts repeat
    words = Counter(w for r in data["train"]["reference"] for w in re.findall(r"(?<!\[)\b[a-z]+\b", r))
    assert len(words) > 500  # far more distinct words than the templates themselves hold


def test_loaded_splits_are_cached_by_fingerprint(tmp_path, monkeypatch):
    """With a cache root, the splits are generated once and read back identical; another config
    is another entry."""
    task = AnonymizationTask(seed=0, **SMALL)
    first = task.load(tmp_path)
    monkeypatch.setattr(
        AnonymizationTask, "generate", lambda self: (_ for _ in ()).throw(AssertionError("regenerated"))
    )
    again = AnonymizationTask(seed=0, **SMALL).load(tmp_path)
    assert rows(first) == rows(again)
    with pytest.raises(AssertionError, match="regenerated"):
        AnonymizationTask(seed=1, **SMALL).load(tmp_path)
    assert len(list((tmp_path / "data").iterdir())) == 1


def test_some_pii_looks_like_ordinary_words_and_separates_systems():
    """Names such as "Rose Hill" and usernames such as "quietriver" are in the data: a system that
    keeps every word it does not recognise as PII leaks exactly those, so leak rate separates it
    from one that masks them, while both keep the text around the PII."""
    from plad.tasks.anonymization.pools import WORD_FIRST_NAMES, WORDS

    task = AnonymizationTask(seed=0, n_train=400, n_unlabeled=5, n_validation=5, n_test=5)
    train = task.load()["train"].to_list()
    values = [(v, t) for r in train for v, t in zip(r["pii_values"], r["pii_types"])]
    wordlike = [
        v
        for v, t in values
        if (t == "NAME" and v.split()[0] in WORD_FIRST_NAMES)
        or (t == "USERNAME" and any(v.startswith(w) for w in WORDS))
    ]
    assert 0.1 * len(values) < len(wordlike) < 0.5 * len(values)
    # a system that masks only PII that does not look like a word: keeps word-like names verbatim
    rows_with = [r for r in train if any(v in wordlike for v in r["pii_values"])][:50]
    naive = []
    for r in rows_with:
        out = r["text"]
        for v, t in zip(r["pii_values"], r["pii_types"]):
            out = out if v in wordlike else out.replace(v, f"[{t}]")
        naive.append(out)
    assert task.metrics(naive, rows_with)["leak_rate"] > 0.1
    assert task.metrics([r["reference"] for r in rows_with], rows_with)["leak_rate"] == 0.0


def test_wordlike_share_sets_how_many_names_are_also_words():
    """``task.wordlike_share`` is the task's difficulty knob: the share of names drawn from names that
    are also words, which only their position marks as PII. It changes the data (and so every cached
    stage's key), and a value outside [0, 1] is refused naming the field."""
    from plad.tasks.anonymization.pools import WORD_FIRST_NAMES

    def share(wordlike: float) -> float:
        task = AnonymizationTask(seed=0, n_train=600, n_unlabeled=5, n_validation=5, n_test=5, wordlike_share=wordlike)
        names = [v for r in task.generate()["train"] for v, t in zip(r["pii_values"], r["pii_types"]) if t == "NAME"]
        return sum(v.split()[0] in WORD_FIRST_NAMES for v in names) / len(names)

    low, high = share(0.1), share(0.9)
    assert high > 0.85 and low < 0.25 and high - low > 0.6
    for bad in (1.5, -0.1, "half", True):
        with pytest.raises(InputError, match="task.wordlike_share"):
            AnonymizationTask(seed=0, wordlike_share=bad)


def test_generated_data_does_not_depend_on_the_calendar(monkeypatch):
    """The same seed makes the same texts on any day: Faker's relative date bounds ("-60y") once made
    other DATE values every day under the same cache key, so a fresh clone could not regenerate the
    data behind the results."""
    import datetime

    import faker.providers.date_time

    def texts() -> list[str]:
        task = AnonymizationTask(seed=0, n_train=200, n_unlabeled=5, n_validation=5, n_test=5)
        rows = task.generate()["train"]
        assert any("DATE" in r["pii_types"] for r in rows)
        return [r["text"] for r in rows]

    today = texts()

    class AnyDate(type):  # real dates still pass Faker's isinstance checks
        def __instancecheck__(cls, obj: object) -> bool:
            return isinstance(obj, datetime.date)

    class LaterToday(datetime.date, metaclass=AnyDate):
        @classmethod
        def today(cls) -> datetime.date:
            return datetime.date.today() + datetime.timedelta(days=400)

    monkeypatch.setattr(faker.providers.date_time, "dtdate", LaterToday)
    assert texts() == today


def test_probe_share_sets_how_many_sentences_are_leak_probes():
    """``task.probe_share`` draws each sentence from the leak probes with that probability (null: every
    training template alike, the probes' 10 of 50); a value outside [0, 1] is refused naming the field."""
    from plad.tasks.anonymization.generator import N_PHRASINGS

    def share(probe_share: float | None) -> float:
        task = AnonymizationTask(seed=0, n_train=1500, n_unlabeled=5, n_validation=5, n_test=5, probe_share=probe_share)
        ids = [t for r in task.generate()["train"] for t in r["templates"]]
        assert len(set(ids) - set(range(N_PHRASINGS, 99))) == 40  # still every training phrasing
        return sum(t >= N_PHRASINGS for t in ids) / len(ids)

    assert share(None) == pytest.approx(0.2, abs=0.03)
    assert share(0.5) == pytest.approx(0.5, abs=0.04)
    assert share(0.0) == 0.0
    for bad in (1.5, "half", True):
        with pytest.raises(InputError, match="task.probe_share"):
            AnonymizationTask(seed=0, probe_share=bad)


def test_scramble_keeps_every_word_and_each_pii_slot_with_its_cue():
    """``generator.scramble`` reorders a template's words but drops none, and keeps each PII slot
    after the word before it ("User {USER}"), so the PII stays recognisable in a new phrasing."""
    import random
    import re

    from plad.tasks.anonymization.generator import SLOT, SLOT_TYPES, TEMPLATES, scramble

    def words(text: str) -> list[str]:
        return sorted(w.strip(",.?").lower() for w in text.split() if w.strip(",.?"))

    rng, moved = random.Random(0), 0
    for template in TEMPLATES:
        out = scramble(template, rng)
        assert words(out) == words(template) and out[-1] in ".?"
        for m in re.finditer(r"(\w+),? (\{[A-Za-z]+\d?\})", template):
            if SLOT.fullmatch(m.group(2)).group(1) in SLOT_TYPES and not SLOT.search(m.group(1)):
                assert f"{m.group(1)} {m.group(2)}".lower() in out.lower(), (template, out)
        moved += out.lower() != template.lower()
    assert moved > 0.8 * len(TEMPLATES)


def test_scramble_share_shuffles_training_sentences_only():
    """``task.scramble_share`` shuffles that share of train / unlabeled sentences (phrasings beyond the
    templates, so a model must copy rather than recall one); validation and test stay text for text as
    without it, so results stay comparable, and at 0 the data and its cache key are unchanged."""
    kw = dict(seed=0, n_train=400, n_unlabeled=50, n_validation=30, n_test=30)
    default, mixed = AnonymizationTask(**kw).generate(), AnonymizationTask(scramble_share=0.5, **kw).generate()
    assert AnonymizationTask(scramble_share=0.0, **kw).fingerprint() == AnonymizationTask(**kw).fingerprint()
    assert AnonymizationTask(scramble_share=0.5, **kw).fingerprint() != AnonymizationTask(**kw).fingerprint()
    for split in ("validation", "test"):
        assert mixed[split]["text"] == default[split]["text"]
    for split in ("train", "unlabeled"):
        assert mixed[split]["text"] != default[split]["text"]
    for row in mixed["train"]:  # the reference is still the text with its PII masked
        assert replaced(row) == row["reference"]
    for bad in (1.5, "half", True):
        with pytest.raises(InputError, match="task.scramble_share"):
            AnonymizationTask(seed=0, scramble_share=bad)


@pytest.mark.parametrize("name", ["anonymization", "summarization"])
def test_default_sizes_fit_the_token_budgets(name):
    """With the default task config and BPE tokenizer (trained on train), prompts fit
    max_prompt_tokens and reference + EOS fits max_new_tokens in every split; the anonymization
    test split uses unseen phrasings, which tokenize into more pieces. The train split is cut to
    5,000 texts (generating the default 100,000 costs about a minute): the tokenizer then learns its
    merges from less text and tends to split other texts into more pieces, so passing here is the
    stricter check; the other splits keep their default sizes."""
    cfg = OmegaConf.load(CONFIGS / "task" / f"{name}.yaml")
    cfg.seed = 0
    cfg.n_train = min(cfg.n_train, 5_000)
    task = instantiate(cfg)
    data = task.load()
    vocab_size = OmegaConf.load(CONFIGS / "model" / "llama.yaml").tokenizer.vocab_size
    tok = train_tokenizer(list(data["train"]["prompt"]) + list(data["train"]["reference"]), vocab_size)
    for split in SPLITS:
        prompts = tok(list(data[split]["prompt"]), add_special_tokens=False)["input_ids"]
        refs = tok(list(data[split]["reference"]), add_special_tokens=False)["input_ids"]
        assert max(map(len, prompts)) + 1 <= cfg.max_prompt_tokens, split  # + BOS
        assert max(map(len, refs)) + 1 <= cfg.max_new_tokens, split  # + EOS


def test_embedded_reference_is_text_with_gold_pii_replaced():
    data = AnonymizationTask(seed=2, **SMALL).load()
    task = AnonymizationTask()
    for row in data["train"].to_list() + data["test"].to_list():
        assert replaced(row) == row["reference"]
        assert task.metrics([row["reference"]], [row])["leak_rate"] == 0.0
        assert row["prompt"] == f"Anonymize: {row['text']}\nOutput:"


def test_derive_pii_recovers_generator_gold():
    data = AnonymizationTask(seed=4, n_train=200, n_unlabeled=5, n_validation=5, n_test=100).load()
    for row in data["train"].to_list() + data["test"].to_list():
        assert derive_pii(row["text"], row["reference"]) == (row["pii_values"], row["pii_types"]), row["text"]


def test_derive_pii_on_hand_made_pairs():
    assert derive_pii("Hi Mary Ann Smith, call me at 555-1234.", "Hi [FIRSTNAME] [LASTNAME], call me at [PHONE].") == (
        ["Mary Ann", "Smith", "555-1234"],
        ["FIRSTNAME", "LASTNAME", "PHONE"],
    )
    assert derive_pii("Paid on May 2, 2001, Ann.", "Paid on [DATE], [NAME].") == (
        ["May 2, 2001", "Ann"],
        ["DATE", "NAME"],
    )
    assert derive_pii("Server 10.0.0.1.", "Server [IP].") == (["10.0.0.1"], ["IP"])
    assert derive_pii("Nothing to hide here.", "Nothing to hide here.") == ([], [])


# ------------------------------------------------------------------------------------ metrics
EXAMPLE = {
    "reference": "Call [NAME] at [PHONE].",
    "pii_values": ["Ann Lee", "555-123-4567"],
    "pii_types": ["NAME", "PHONE"],
}


def test_anonymization_metrics_on_hand_made_outputs():
    task = AnonymizationTask()
    assert task.main_metric == "quality" and task.higher_is_better
    perfect = task.metrics(["Call [NAME] at [PHONE]."], [EXAMPLE])
    assert perfect["leak_rate"] == 0.0 and perfect["placeholder_f1"] == 1.0
    assert perfect["exact_match"] == 1.0 and perfect["quality"] == pytest.approx(1.0)

    leak = task.metrics(["Call Ann Lee at [PHONE]."], [EXAMPLE])
    assert leak["leak_rate"] == 0.5
    assert leak["placeholder_precision"] == 1.0 and leak["placeholder_recall"] == 0.5
    assert leak["placeholder_f1"] == pytest.approx(2 / 3) and leak["placeholder_recall/NAME"] == 0.0
    # tokens Call Ann Lee at [PHONE] . vs Call [NAME] at [PHONE] . share 4 -> ratio 8/11
    assert leak["quality"] == pytest.approx(0.5 * 0.5 + 0.5 * 8 / 11)

    wrong_type = task.metrics(["Call [NAME] at [DATE]."], [EXAMPLE])
    assert wrong_type["leak_rate"] == 0.0
    assert wrong_type["placeholder_precision"] == 0.5 and wrong_type["placeholder_recall"] == 0.5
    assert wrong_type["placeholder_precision/DATE"] == 0.0 and wrong_type["placeholder_precision/NAME"] == 1.0
    assert wrong_type["quality"] < perfect["quality"]

    # why leak_rate is no headline: an empty or unrelated output leaks nothing, quality sees it
    for junk in ("", "Thanks for your message."):
        bad = task.metrics([junk], [EXAMPLE])
        assert bad["leak_rate"] == 0.0 and bad["placeholder_recall"] == 0.0
        assert bad["quality"] < leak["quality"]


def test_anonymization_metrics_are_micro_averaged_and_word_bounded():
    task = AnonymizationTask()
    short = {"reference": "Hi [NAME], all good.", "pii_values": ["Al"], "pii_types": ["NAME"]}
    assert task.metrics(["Hi [NAME], All good."], [short])["leak_rate"] == 0.0  # "Al" inside "All" is no leak
    both = task.metrics(["Hi Al, all good.", "Call Ann Lee at [PHONE]."], [short, EXAMPLE])
    assert both["leak_rate"] == pytest.approx(2 / 3)
    assert both["placeholder_recall"] == pytest.approx(1 / 3)
    with pytest.raises(ValueError, match="predictions"):
        task.metrics(["a"], [short, EXAMPLE])


def test_anonymization_metrics_split_seen_and_heldout_phrasings():
    """On the embedded test split, /seen and /heldout are the metrics of each subset alone."""
    task = AnonymizationTask(n_train=50, n_unlabeled=5, n_validation=5, n_test=60)
    test = [dict(r) for r in task.load()["test"]]
    held = [set(r["templates"]) <= set(task.heldout) for r in test]
    assert any(held) and not all(held)
    preds = [r["reference"] if i % 3 else r["text"] for i, r in enumerate(test)]  # some right, some leaking
    out = task.metrics(preds, test)
    for name, keep in (("seen", [not h for h in held]), ("heldout", held)):
        idx = [i for i, k in enumerate(keep) if k]
        alone = task.metrics([preds[i] for i in idx], [test[i] for i in idx])
        for key in ("exact_match", "placeholder_f1", "quality"):
            assert out[f"{key}/{name}"] == pytest.approx(alone[key])
    assert out["exact_match/seen"] != out["exact_match/heldout"] or out["quality/seen"] != out["quality/heldout"]
    val = [dict(r) for r in task.load()["validation"]]  # no held-out phrasings there: no split
    assert not any(k.endswith("/seen") for k in task.metrics([r["reference"] for r in val], val))


def test_leak_probe_templates_are_never_held_out():
    """Word-like-name probes teach and test masking; holding them out would measure phrasing instead."""
    for seed in range(20):
        assert max(AnonymizationTask(seed=seed).heldout) < N_PHRASINGS < len(TEMPLATES)


def test_rouge_metrics_on_hand_made_strings():
    task = SummarizationTask()
    same = task.metrics(["Troy Bears beat Salem Hawks 3 to 1"], [{"reference": "Troy Bears beat Salem Hawks 3 to 1"}])
    assert same["rouge1"] == same["rouge2"] == same["rougeL"] == pytest.approx(1.0)
    disjoint = task.metrics(["red blue green"], [{"reference": "one two three"}])
    assert disjoint["rouge1"] == disjoint["rouge2"] == disjoint["rougeL"] == 0.0
    part = task.metrics(["the cat sat"], [{"reference": "the cat sat on the mat"}])
    assert part["rouge1"] == pytest.approx(2 / 3) and part["rougeL"] == pytest.approx(2 / 3)
    assert part["rouge2"] == pytest.approx(2 * 1 * 0.4 / 1.4)  # P = 2/2, R = 2/5
    assert task.quality("the cat sat", {"reference": "the cat sat on the mat"}) == pytest.approx(2 / 3)


def test_summaries_state_facts_from_the_document():
    data = SummarizationTask(seed=1, **SMALL).load()
    for row in data["train"].to_list():
        sentences = re.split(r"(?<=[.!?]) ", row["document"])
        assert 3 <= len(sentences) <= 5 and 5 <= len(row["reference"].split()) <= 12
        facts = [w for w in row["reference"].split()[1:] if w[0].isupper() or w.isdigit()]
        document_words = set(re.findall(r"\w+", row["document"]))
        assert all(w.strip(",") in document_words for w in facts), row
        assert row["prompt"] == f"Summarize: {row['document']}\nOutput:"


# ---------------------------------------------------------------------------------- real data
