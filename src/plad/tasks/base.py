"""The task contract (``Task``) and the base a new task subclasses (``DataTask``).

``Task`` declares everything the stages call on a task, so the whole contract is read in one place:
the splits (``load``), how an output is scored (``quality``, ``metrics``, ``main_metric``), the
cache key (``fingerprint``), the prompt format (``chat_template``, ``text_of``) and two optional
hooks whose defaults are empty (``extra_splits``, ``peer_systems``). A task knows nothing of
models or losses.

``DataTask`` implements the contract for tasks whose data is either generated (``source: null``)
or read from a hub dataset / local files through a column mapping (``plad.tasks.loading``), carved
into seeded splits and cached as Arrow; a new task subclasses it and writes ``generate``,
``convert``, ``features``, ``quality`` and ``metrics``.
"""

from __future__ import annotations

import os
from abc import ABC, abstractmethod
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import numpy as np
from datasets import Dataset, DatasetDict, concatenate_datasets, load_from_disk
from tqdm.auto import tqdm

from plad.cache import atomic_dir, entry_dir, fingerprint, is_complete, stage_key
from plad.checks import InputError, integer, number
from plad.jsonable import plain
from plad.tasks.loading import carve_sizes, check_columns, load_source, source_hashes, split_plan
from plad.tasks.source_checks import check_unique_ids, check_value, warn_long_texts

SPLITS = ("train", "unlabeled", "validation", "test")
PeerSystem = Callable[[Sequence[dict[str, Any]]], list[str]]  # rows of a split -> one output per row
PostEdit = Callable[[Sequence[str]], list[str]]  # a model's outputs -> the edited outputs, one each


class Task(ABC):
    """What every stage may call on a task.

    ``load`` returns a ``datasets.DatasetDict`` with the splits ``SPLITS`` (plus ``extra_splits``)
    and at least the columns ``prompt`` (the full model input) and ``reference`` (the target),
    plus task extras.
    """

    name: str = "task"
    main_metric: str = ""  # key of ``metrics`` reported first and used for model selection
    higher_is_better: bool = True  # direction of ``main_metric``
    chat_template: str = "auto"  # auto | none: wrap prompts in the tokenizer's chat template (plad.models.encoding)
    # Splits ``load`` returns beyond SPLITS, for evaluation only (``eval.split``, ``eval.extra_splits``),
    # e.g. anonymization's hand-written ``ood`` set. Default: none.
    extra_splits: tuple[str, ...] = ()
    # Splits whose prompts may feed the pair stage (``pairs.split``): prompts used without labels, never
    # an evaluation split. Default: ``unlabeled``; anonymization adds its hand-written unlabeled set.
    pair_splits: tuple[str, ...] = ("unlabeled",)

    @abstractmethod
    def load(
        self, cache_root: str | os.PathLike | None = None, validate: Callable[[DatasetDict], None] | None = None
    ) -> DatasetDict:
        """Splits train / unlabeled / validation / test (+ ``extra_splits``, ``pair_splits``) with columns prompt,
        reference (+ extras). With ``cache_root`` the splits may be stored there, keyed by
        ``fingerprint``. ``validate`` (checks against the run's other inputs, ``plad.stages.data.check_data``)
        must be called on the splits before anything is stored, so a bad input is never cached."""

    @abstractmethod
    def metrics(self, predictions: Sequence[str], examples: Sequence[dict[str, Any]]) -> dict[str, float]:
        """Corpus-level metrics of predictions against the examples (rows of a split)."""

    @abstractmethod
    def quality(self, prediction: str, example: dict[str, Any]) -> float:
        """One scalar in [0, 1], higher is better, to compare two outputs for the same example."""

    @abstractmethod
    def fingerprint(self) -> str:
        """Stable hash of everything ``load`` depends on (config, data file contents, code version)."""

    def text_of(self, row: dict[str, Any]) -> str:
        """The raw input a row's prompt was made from, without the prompt template: copy pretraining
        (``model.<role>.pretrain``) trains on it. Default: the prompt itself."""
        return str(row["prompt"])

    def peer_systems(self) -> dict[str, PeerSystem]:
        """Model-free systems that evaluation scores, judges and plots next to the trained ones
        (anonymization: its rule-based anonymizer), by name. Default: none."""
        return {}

    def post_edits(self) -> dict[str, PostEdit]:
        """Model-free edits of a model's outputs, by name (``model.teacher.post_edit``): the teacher
        system a run distills from and evaluates is then the teacher model followed by the edit, as a
        practitioner would chain an LLM with rules; a black box returning text either way. Default: none."""
        return {}


def post_edit_of(task: Task, name: str | None) -> PostEdit | None:
    """The task's post-edit called ``name`` (``model.teacher.post_edit``); None for null. Every
    caller gets it checked here: strings out, one per output in."""
    if name is None:
        return None
    edits = task.post_edits()
    if name not in edits:
        raise InputError(
            f"model.teacher.post_edit: expected null or one of {sorted(edits)} (the post-edits of task "
            f"{task.name}), got {name!r}"
        )

    def checked(outputs: Sequence[str]) -> list[str]:
        edited = [str(o) for o in edits[name](outputs)]
        if len(edited) != len(outputs):
            raise InputError(f"model.teacher.post_edit: expected {len(outputs)} outputs, got {len(edited)}")
        return edited

    return checked


class DataTask(Task):
    """A task whose data is either generated (``source: null``) or read through a column mapping.

    Subclasses implement ``generate`` (the embedded data), ``convert`` (a source row with our
    column names -> a full row), ``features``, ``quality`` and ``metrics``; set ``name``,
    ``main_metric`` and ``CODE_VERSION`` (bump it when the data a config yields changes: it keys
    every cached stage); and list the columns they need in ``required_columns``. ``load``,
    ``fingerprint`` and ``text_of`` come from here; ``extra_splits`` and ``peer_systems`` are
    overridden only by tasks that have them.
    """

    CODE_VERSION = "0"
    required_columns: tuple[str, ...] = ()
    default_columns: dict[str, str] = {}  # our name -> source column, overridden key by key by ``columns``
    optional_columns: tuple[str, ...] = ("id",)
    prompt_field: str = "text"  # the placeholder ``prompt_template`` must contain

    def __init__(
        self,
        seed: int = 0,
        n_train: int = 1000,
        n_unlabeled: int = 500,
        n_validation: int = 100,
        n_test: int = 200,
        source: str | Mapping[str, str] | None = None,
        columns: Mapping[str, str] | None = None,
        split: Any = None,
        max_prompt_tokens: int = 128,
        max_new_tokens: int = 64,
        prompt_template: str = "{text}\nOutput:",
        chat_template: str = "auto",
        student_labels: int | None = None,
        student_sft_steps: int | None = None,
        lrs: Mapping[str, float] | None = None,
    ) -> None:
        if isinstance(seed, bool) or not isinstance(seed, int):
            raise InputError(f"task.seed: expected an integer, got {seed!r}")
        self.seed = seed
        self.sizes = {
            s: integer(n, f"task.n_{s}") for s, n in zip(SPLITS, (n_train, n_unlabeled, n_validation, n_test))
        }
        self.max_prompt_tokens = integer(max_prompt_tokens, "task.max_prompt_tokens")
        self.max_new_tokens = integer(max_new_tokens, "task.max_new_tokens")
        # The experiment's label budget (model YAMLs read it as the student's sft.train_examples); not
        # part of the data, so not of ``config`` or the data key.
        self.student_labels = None if student_labels is None else integer(student_labels, "task.student_labels")
        # How many SFT steps that budget supports (model YAMLs read it as the student's sft.max_steps):
        # the same 300 texts are learned in fewer steps on one task than another, and a student still
        # improving at a lower learning rate is not converged. Not part of the data either.
        self.student_sft_steps = integer(student_sft_steps, "task.student_sft_steps", null=True)
        # Learning rates tuned on this task's validation split where they differ from the loss YAML's
        # (loss YAMLs read task.lrs.<loss name>, else task.lrs.default: the lr of the losses a task did
        # not tune, where the YAMLs' tiny-model values do not fit); names are checked in preflight.
        if lrs is not None and not isinstance(lrs, Mapping):
            raise InputError(f"task.lrs: expected a mapping of loss name to learning rate, got {lrs!r}")
        self.lrs = {str(k): number(v, f"task.lrs.{k}", positive=True) for k, v in (lrs or {}).items()}
        placeholder = "{" + self.prompt_field + "}"
        if not isinstance(prompt_template, str) or placeholder not in prompt_template:
            raise InputError(
                f"task.prompt_template: expected a string containing {placeholder!r}, got {prompt_template!r}"
            )
        self.prompt_template = prompt_template
        # How models see a prompt, not what the data is: outside ``config`` (data keys unchanged);
        # the SFT key covers it for roles with a pretrained tokenizer (plad.stages.sft.entry).
        from plad.models.encoding import check_chat_template  # here: torch stays out of importing tasks

        self.chat_template = check_chat_template(chat_template)
        self.source, self.split = plain(source), plain(split)
        self.columns = {**self.default_columns, **(plain(columns) or {})}
        if self.source is not None and not isinstance(self.source, (str, Mapping)):
            raise InputError(
                f"task.source: expected null, a hub name, a file or a split->file mapping, got {self.source!r}"
            )
        unknown = set(self.columns) - set(self.required_columns) - set(self.optional_columns)
        if unknown:
            raise InputError(
                f"task.columns: expected keys among "
                f"{', '.join(self.required_columns + self.optional_columns)}, got {sorted(unknown)}"
            )
        self.config: dict[str, Any] = {
            "seed": seed,
            **{f"n_{s}": n for s, n in self.sizes.items()},
            "source": self.source,
            "columns": self.columns,
            "split": self.split,
            "max_prompt_tokens": max_prompt_tokens,
            "max_new_tokens": max_new_tokens,
            "prompt_template": prompt_template,
        }

    def format_prompt(self, value: str) -> str:
        return self.prompt_template.replace("{" + self.prompt_field + "}", value)

    def text_of(self, row: dict[str, Any]) -> str:
        """What ``format_prompt`` made a row's prompt from: its ``prompt_field`` column, else cut out
        of the prompt (model-free systems, such as anonymization's rule-based peer, read it)."""
        if row.get(self.prompt_field) is not None:
            return str(row[self.prompt_field])
        head, _, tail = self.prompt_template.partition("{" + self.prompt_field + "}")
        prompt = str(row["prompt"])
        if prompt.startswith(head) and prompt.endswith(tail):
            return prompt[len(head) : len(prompt) - len(tail)]
        return prompt

    @abstractmethod
    def generate(self) -> DatasetDict:
        """The embedded, seeded data set."""

    @abstractmethod
    def convert(self, row: dict[str, Any]) -> dict[str, Any]:
        """A source row (our column names, ``id`` filled) -> a row with prompt, reference, extras."""

    def load(
        self, cache_root: str | os.PathLike | None = None, validate: Callable[[DatasetDict], None] | None = None
    ) -> DatasetDict:
        """The splits; with ``cache_root``, stored once as Arrow under ``<cache>/data/<fingerprint>``
        (generating 100k embedded examples takes a minute; reading them back, a second).
        ``validate`` (checks against the run's other inputs) runs before anything is cached."""
        if cache_root is None:
            data = self._load()
        else:
            entry = entry_dir(cache_root, "data", f"{self.name}-{stage_key('data', self.fingerprint())}")
            if is_complete(entry):
                data = load_from_disk(str(entry / "splits"))
            else:
                data = self._load()
                if validate is not None:
                    validate(data)
                with atomic_dir(entry) as tmp:
                    data.save_to_disk(str(tmp / "splits"))
                data = load_from_disk(str(entry / "splits"))
                validate = None  # already checked
        if validate is not None:
            validate(data)
        warn_long_texts(data, self.max_prompt_tokens, self.max_new_tokens)
        return data

    def _load(self) -> DatasetDict:
        data = self.generate() if self.source is None else self.load_real()
        check_unique_ids([i for name in SPLITS for i in data[name]["id"]])
        return data

    def load_real(self) -> DatasetDict:
        raw = load_source(self.source)
        plan = split_plan(self.split, list(raw.keys()), SPLITS)
        rng = np.random.default_rng(self.seed)
        chosen: dict[str, tuple[Dataset, list[str]]] = {}
        for ours, names in plan.items():
            parts = [raw[n] for n in names]
            for part in parts:
                check_columns(part, self.columns, self.required_columns)
            pool = concatenate_datasets(parts) if len(parts) > 1 else parts[0]
            origin = [f"{n}-{i}" for n, part in zip(names, parts) for i in range(len(part))]
            if len(pool) == 0:
                raise InputError(f"task.split: source split(s) {names} for '{ours}' are empty")
            order = rng.permutation(len(pool))
            if ours != "train":  # read directly, only truncated
                take = order[: self.sizes[ours]]
                chosen[ours] = (pool.select(take), [origin[i] for i in take])
                continue
            carved = [s for s in SPLITS if s == "train" or s not in plan]
            sizes = carve_sizes(len(pool), {s: self.sizes[s] for s in carved})
            start = 0
            for name in carved:
                take = order[start : start + sizes[name]]
                chosen[name] = (pool.select(take), [origin[i] for i in take])
                start += sizes[name]
        return DatasetDict({name: self._convert_split(*chosen[name]) for name in SPLITS})

    def _convert_split(self, ds: Dataset, origin: list[str]) -> Dataset:
        rows = []
        for idx, row in enumerate(tqdm(ds, desc="converting source rows", disable=len(ds) < 20000)):
            ours = {k: row[v] for k, v in self.columns.items()}
            for column in self.required_columns:
                check_value(column, ours[column], origin[idx])
            ours["id"] = str(ours["id"]) if "id" in ours else origin[idx]
            rows.append(self.convert(ours))
        return Dataset.from_list(rows, features=self.features)

    @property
    @abstractmethod
    def features(self) -> Any:
        """``datasets.Features`` of a loaded split (same for embedded and real data)."""

    def fingerprint(self) -> str:
        return fingerprint(self.name, self.CODE_VERSION, self.config, source_hashes(self.source))
