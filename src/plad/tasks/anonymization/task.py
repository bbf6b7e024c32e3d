"""Anonymization: rewrite a short text replacing every piece of personal data by a typed placeholder.

The output copies the input verbatim except for PII spans, which become ``[NAME]``, ``[EMAIL]``,
... The embedded data is built so that this must be learned as a skill, not recalled: each text
joins 1-3 sentences drawn from ~50 sentence templates, and most non-PII words come from large
pools (Faker's ~900-word English list, numbers, clock times, weekdays, items), so the text around
the PII is new in almost every example and has to be copied. PII values come from Faker. A seeded
subset of sentence templates never occurs in train / unlabeled / validation; a ``heldout_share`` of
the test texts is made only of those (generalisation to unseen phrasings), the rest of seen
phrasings with new words and PII (the copy-and-mask skill, where model size shows). The pools and
value makers are in ``generator.py``, the writing of one row in ``examples.py``.

Real data is any (text, masked text) pair dataset; the gold PII strings, needed for the leak
rate, are read from columns when mapped, else derived by diffing the text against the masked one.
Whatever the source, ``load`` adds the hand-written sets (``ood.py``): the out-of-distribution split
``ood``, the ``dev`` rows and ``unlabeled_handwritten`` (prompts for the pairs); ``peer_systems``
offers the rule-based anonymizer (and Presidio, with the ``presidio`` extra: ``presidio.py``) as
model-free systems that evaluation scores next to the trained ones.
"""

from __future__ import annotations

import os
import random
from collections.abc import Callable, Sequence
from typing import Any

from datasets import Dataset, DatasetDict, Features, List, Value
from faker import Faker

from plad.checks import InputError, integer, share
from plad.tasks.anonymization import presidio
from plad.tasks.anonymization.examples import ExampleWriter
from plad.tasks.anonymization.generator import (
    N_PHRASINGS,
    PII_TYPES,
    TEMPLATES,
    WORDLIKE_SHARE,
    pii_values,
    template_types,
)
from plad.tasks.anonymization.metrics import leaked, quality, split_metrics
from plad.tasks.anonymization.ood import DEV_FILE, UNLABELED_FILE, ood_path, ood_split
from plad.tasks.anonymization.rule_based import anonymize
from plad.tasks.anonymization.spans import derive_pii
from plad.tasks.base import SPLITS, DataTask, PeerSystem, PostEdit


class AnonymizationTask(DataTask):
    name = "anonymization"
    main_metric = "quality"  # leak_rate alone rewards empty or garbage outputs, which leak nothing
    higher_is_better = True
    extra_splits = ("ood", "dev")  # eval.split=ood / dev: the shipped hand-written sets (``ood.py``)
    pair_splits = ("unlabeled", "unlabeled_handwritten")  # pairs.split: generated, or the shipped hand-written texts
    CODE_VERSION = "anonymization-5"
    required_columns = ("text", "reference")
    optional_columns = ("id", "pii_values", "pii_types")
    default_columns = {"text": "source_text", "reference": "target_text"}  # public PII-masking sets
    prompt_field = "text"

    def __init__(
        self,
        n_heldout_templates: int = 10,
        heldout_share: float = 0.25,
        validation_heldout_templates: int = 0,
        wordlike_share: float = WORDLIKE_SHARE,
        probe_share: float | None = None,
        scramble_share: float = 0.0,
        proper_share: float = 0.0,
        pii_format_share: float = 0.0,
        validation_dev: bool = False,
        prompt_template: str = "Anonymize: {text}\nOutput:",
        **kwargs: Any,
    ) -> None:
        super().__init__(prompt_template=prompt_template, **kwargs)
        n = integer(n_heldout_templates, "task.n_heldout_templates", minimum=0, maximum=N_PHRASINGS - 1)
        self.n_heldout_templates = n
        self.config["n_heldout_templates"] = n
        self.heldout_share = share(heldout_share, "task.heldout_share")
        self.config["heldout_share"] = self.heldout_share
        self.heldout = self._pick_heldout(n, f"{self.seed}:heldout")
        m = integer(
            validation_heldout_templates, "task.validation_heldout_templates", minimum=0, maximum=N_PHRASINGS - n - 1
        )
        if m:  # absent at 0, so the data's cache key (and every stage built on it) stays as it was
            self.config["validation_heldout_templates"] = m
        self.val_heldout = self._pick_heldout(m, f"{self.seed}:heldout-validation", exclude=self.heldout) if m else ()
        self.wordlike_share = share(wordlike_share, "task.wordlike_share")
        self.config["wordlike_share"] = self.wordlike_share
        self.pii_values = pii_values(self.wordlike_share)
        self.probe_share = share(probe_share, "task.probe_share", null=True)
        self.config["probe_share"] = self.probe_share
        self.scramble_share = share(scramble_share, "task.scramble_share")
        if self.scramble_share:  # absent at 0, like validation_heldout_templates: the data stays as it was
            self.config["scramble_share"] = self.scramble_share
        self.proper_share = share(proper_share, "task.proper_share")
        if self.proper_share:  # absent at 0, as above
            self.config["proper_share"] = self.proper_share
        self.pii_format_share = share(pii_format_share, "task.pii_format_share")
        if self.pii_format_share:  # absent at 0, as above
            self.config["pii_format_share"] = self.pii_format_share
        if not isinstance(validation_dev, bool):
            raise InputError(f"task.validation_dev: expected true or false, got {validation_dev!r}")
        if validation_dev and self.source is not None:
            raise InputError("task.validation_dev: expected false with a task.source (it extends the embedded data)")
        self.validation_dev = validation_dev
        if validation_dev:  # absent when false, as above
            self.config["validation_dev"] = True

    def _pick_heldout(self, n: int, key: str, exclude: Sequence[int] = ()) -> tuple[int, ...]:
        """``n`` seeded held-out phrasings (never leak probes) outside ``exclude``, redrawn until the
        templates left for training still cover every PII type. Test's come first (``exclude`` empty),
        validation's (``validation_heldout_templates``) from the rest: the two never share a phrasing."""
        rng = random.Random(key)
        for _ in range(1000):
            heldout = sorted(rng.sample([i for i in range(N_PHRASINGS) if i not in exclude], n))
            out = set(heldout) | set(exclude)
            kept = set().union(*(template_types(t) for i, t in enumerate(TEMPLATES) if i not in out))
            if kept == set(PII_TYPES):
                return tuple(heldout)
        field = "task.validation_heldout_templates" if exclude else "task.n_heldout_templates"
        raise InputError(f"{field}: {n} held out leaves some PII type without a training template; use fewer")

    @property
    def features(self) -> Features:
        return Features(
            {
                "id": Value("string"),
                "prompt": Value("string"),
                "reference": Value("string"),
                "text": Value("string"),
                "templates": List(Value("int32")),
                "pii_values": List(Value("string")),
                "pii_types": List(Value("string")),
            }
        )

    def load(
        self, cache_root: str | os.PathLike | None = None, validate: Callable[[DatasetDict], None] | None = None
    ) -> DatasetDict:
        """The four splits (cached as ``DataTask.load`` does) plus the shipped hand-written sets, read
        on every load and never cached: ``ood`` and ``dev`` (evaluation) and ``unlabeled_handwritten``
        (prompts for the pairs, ``pairs.split``). A few hundred rows read in milliseconds, and the cache
        key of the four splits (which SFT models and pairs build on) stays independent of them (unless
        ``validation_dev`` puts the dev rows in validation). ``validate`` sees them too. ``eval.split=dev``
        scores any model on the dev rows alone, e.g. one whose choices did not see them. Evaluation
        outputs cached for these splits are reused only for identical prompts."""
        shipped = {  # read once; new dicts below, so the splits about to be cached stay the four
            "ood": ood_split(self.format_prompt, self.features),
            "dev": ood_split(self.format_prompt, self.features, ood_path(DEV_FILE)),
            "unlabeled_handwritten": ood_split(self.format_prompt, self.features, ood_path(UNLABELED_FILE)),
        }
        check = None if validate is None else lambda splits: validate(DatasetDict({**splits, **shipped}))
        return DatasetDict({**super().load(cache_root, check), **shipped})

    def peer_systems(self) -> dict[str, PeerSystem]:
        """Model-free systems evaluated next to the trained ones, each mapping rows of a split to
        outputs, applied to each row's raw text (not to the prompt): the rule-based anonymizer, and
        Microsoft Presidio where the ``presidio`` extra is installed (else one log line says so)."""
        peers: dict[str, PeerSystem] = {"rule_based": lambda rows: [anonymize(self.text_of(r)) for r in rows]}
        if presidio.available():
            peers["presidio"] = lambda rows: presidio.anonymize([self.text_of(r) for r in rows])
        return peers

    def post_edits(self) -> dict[str, PostEdit]:
        """The same anonymizers applied to a model's output: what the model left unmasked and a rule
        catches (card, IBAN, e-mail, IP shapes) is masked, its placeholders stay (RESULTS: the SmolLM2
        teacher copies code-like PII, the rules miss names; chained, they miss less than either)."""
        edits: dict[str, PostEdit] = {"rule_based": lambda outputs: [anonymize(o) for o in outputs]}
        if presidio.available():
            edits["presidio"] = lambda outputs: presidio.anonymize(list(outputs))
        return edits

    # ----------------------------------------------------------------------------- embedded data
    def generate(self) -> DatasetDict:
        """The four embedded splits, each seeded by (task seed, split): which templates a row may use
        is chosen here (``_pool``), the row itself is written by ``examples.ExampleWriter``."""
        train_templates = [i for i in range(len(TEMPLATES)) if i not in self.heldout + self.val_heldout]
        fake = Faker("en_US")
        writer = ExampleWriter(
            self.pii_values,
            self.format_prompt,
            self.probe_share,
            self.scramble_share,
            self.proper_share,
            self.pii_format_share,
        )
        out = {}
        for split in SPLITS:
            fake.seed_instance(f"{self.seed}:{split}")
            rng = random.Random(f"{self.seed}:{split}")
            learn = split in ("train", "unlabeled")  # the *_share options: evaluation data unchanged
            rows = [
                writer.example(fake, rng, self._pool(split, rng, train_templates), f"anon-{split}-{i:05d}", learn)
                for i in range(self.sizes[split])
            ]
            if split == "validation" and self.validation_dev:
                rows += self.dev_rows()
            out[split] = Dataset.from_list(rows, features=self.features)
        return DatasetDict(out)

    def dev_rows(self) -> list[dict[str, Any]]:
        """The shipped hand-written validation rows (``ood.DEV_FILE``), added to validation by
        ``task.validation_dev``: generator text alone cannot tell a model that copies real text
        from one that copies templates, and the OOD test set must not be what choices are made on."""
        return ood_split(self.format_prompt, self.features, ood_path(DEV_FILE)).remove_columns("register").to_list()

    def _pool(self, split: str, rng: random.Random, train_templates: list[int]) -> list[int]:
        """Templates of one example. A ``heldout_share`` of test examples is made only of held-out
        templates (phrasings never seen in training); the rest of the test split measures the
        copy-and-mask skill on seen phrasings with new words and PII, where model size shows. With
        ``validation_heldout_templates`` validation is built alike from its own held-out phrasings,
        so choices made on it see how a model does on phrasings it never saw."""
        heldout = {"test": self.heldout, "validation": self.val_heldout}.get(split)
        if heldout and rng.random() < self.heldout_share:
            return list(heldout)
        return train_templates

    # ---------------------------------------------------------------------------------- real data
    def convert(self, row: dict[str, Any]) -> dict[str, Any]:
        text, reference = str(row["text"]).strip(), str(row["reference"]).strip()
        if "pii_values" in row:
            values = [str(v) for v in row["pii_values"]]
            types = [str(t) for t in row["pii_types"]] if "pii_types" in row else ["PII"] * len(values)
        else:
            values, types = derive_pii(text, reference)
        return {
            "id": row["id"],
            "prompt": self.format_prompt(text),
            "reference": reference,
            "text": text,
            "templates": [],
            "pii_values": values,
            "pii_types": types,
        }

    # ------------------------------------------------------------------------------------ metrics
    def leaked(self, prediction: str, example: dict[str, Any]) -> list[bool]:
        return leaked(prediction, example)

    def quality(self, prediction: str, example: dict[str, Any]) -> float:
        return quality(prediction, example)

    def metrics(self, predictions: Sequence[str], examples: Sequence[dict[str, Any]]) -> dict[str, float]:
        """leak_rate (micro over gold PII strings, and per type: ``leak_rate/<TYPE>``), keep_rate
        (mean per-example share of the input's non-PII words kept, ``metrics.keep_rate``),
        placeholder P/R/F1 (micro and per type, multiset matching of ``[TYPE]`` counts against the
        reference), exact_match and mean quality; on the embedded test split (and validation, with
        ``validation_heldout_templates``) also exact match,
        placeholder F1 and quality on seen phrasings and on held-out ones (``/seen``, ``/heldout``):
        the two measure different skills. Headline metrics (no "/") come first."""
        if len(predictions) != len(examples) or not predictions:
            raise InputError(f"predictions: expected one per example (>0), got {len(predictions)} for {len(examples)}")
        out = split_metrics(predictions, examples)
        dev = [str(e.get("id", "")).startswith("dev-") for e in examples]
        held = [
            bool(e.get("templates"))
            and any(set(e["templates"]) <= set(h) for h in (self.heldout, self.val_heldout) if h)
            for e in examples
        ]
        if any(held) or any(dev):
            head = {k: v for k, v in out.items() if "/" not in k}  # keep the headline metrics first
            seen = [not (h or d) for h, d in zip(held, dev)]
            for name, keep in (("seen", seen), ("heldout", held), ("dev", dev)):
                idx = [i for i, k in enumerate(keep) if k]
                if idx:
                    part = split_metrics([predictions[i] for i in idx], [examples[i] for i in idx])
                    keys = ("exact_match", "placeholder_f1", "quality") + (
                        ("leak_rate", "keep_rate") if name == "dev" else ()
                    )
                    head.update({f"{k}/{name}": part[k] for k in keys})
            out = {**head, **out}
        return out
