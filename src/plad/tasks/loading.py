"""What both tasks share: config validation, real-data loading and seeded split carving.

A task either generates its data (``source: null``) or reads a hub dataset / local files and maps
the source's columns to ours. Real datasets rarely come with the four splits PLaD needs
(train / unlabeled / validation / test), so missing splits are carved from a seeded shuffle of a
pool: the same config always yields the same rows, and carved splits never overlap.
"""
from __future__ import annotations

import logging
import os
from abc import abstractmethod
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any, Callable

import numpy as np
from datasets import Dataset, DatasetDict, concatenate_datasets, load_dataset, load_from_disk
from omegaconf import DictConfig, ListConfig, OmegaConf
from tqdm.auto import tqdm

from plad.cache import atomic_dir, entry_dir, file_hash, fingerprint, is_complete, stage_key
from plad.tasks.base import SPLITS, Task
from plad.tasks.source_checks import (check_not_empty, check_unique_ids, check_utf8, check_value, load_error,
                                      warn_long_texts)
from plad.checks import InputError

log = logging.getLogger(__name__)

FORMATS = {".jsonl": "json", ".json": "json", ".csv": "csv", ".parquet": "parquet", ".pq": "parquet"}
SPLIT_ALIASES = {"validation": ("validation", "valid", "val", "dev"), "test": ("test",)}


def _plain(value: Any) -> Any:
    return OmegaConf.to_container(value, resolve=True) if isinstance(value, (DictConfig, ListConfig)) else value


def positive_int(field: str, value: Any) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value <= 0:
        raise InputError(f"{field}: expected a positive integer, got {value!r}")
    return value


def _local_files(source: str | Mapping[str, str]) -> dict[str, Path] | None:
    """Split -> file for local sources; None for a hub name. Missing local files raise."""
    if isinstance(source, Mapping):
        files = {str(k): Path(v).expanduser() for k, v in source.items()}
    else:
        path = Path(source).expanduser()
        looks_local = path.suffix in FORMATS or str(source).startswith(("/", ".", "~"))
        if not path.exists() and not looks_local:
            return None
        files = {"train": path}
    for path in files.values():
        if not path.exists():
            raise InputError(f"task.source: file not found: {path}")
        if path.is_file() and path.suffix not in FORMATS:
            raise InputError(f"task.source: expected a {'/'.join(FORMATS)} file, got {path}")
        check_not_empty(path)
    return files


def load_source(source: str | Mapping[str, str]) -> DatasetDict:
    """A local file (or split -> file mapping, or folder of data files) or a hub dataset name."""
    files = _local_files(source)
    if files is None:
        return load_dataset(str(source))  # hub name; needs network or a populated HF cache
    formats = {FORMATS[p.suffix] for p in files.values() if p.is_file()}
    if len(formats) > 1:
        raise InputError(f"task.source: expected files of one format, got {sorted(formats)}")
    for path in files.values():
        check_utf8(path)
    try:
        if len(files) == 1 and next(iter(files.values())).is_dir():
            return load_dataset(str(next(iter(files.values()))))
        return load_dataset(formats.pop(), data_files={k: str(p) for k, p in files.items()})
    except Exception as e:  # noqa: BLE001  (datasets raises StopIteration, codec and Arrow errors alike)
        raise load_error(files, e) from e


def source_hashes(source: str | Mapping[str, str] | None) -> dict[str, str]:
    """Content hashes of local source files, so editing a file invalidates cached stages; for a hub
    dataset, the revision of its local snapshot when one is known (the run log says when not)."""
    if source is None:
        return {}
    if (files := _local_files(source)) is None:
        return hub_revision(str(source))
    out = {}
    for split, path in files.items():
        paths = sorted(p for p in path.rglob("*") if p.is_file()) if path.is_dir() else [path]
        out.update({f"{split}:{p}": file_hash(p) for p in paths})
    return out


def hub_revision(name: str) -> dict[str, str]:
    """{"revision": commit} of the newest local snapshot of hub dataset ``name``, else {} (logged)."""
    try:
        from huggingface_hub import scan_cache_dir

        repos = [r for r in scan_cache_dir().repos if r.repo_type == "dataset" and r.repo_id == name]
        revisions = sorted((rev for r in repos for rev in r.revisions), key=lambda rev: rev.last_modified)
    except Exception:  # noqa: BLE001 - no hub cache at all
        revisions = []
    if revisions:
        return {"revision": revisions[-1].commit_hash}
    log.info("task.source: %s is keyed by its name only (no local snapshot revision known)", name)
    return {}


def split_plan(split: Any, available: Sequence[str]) -> dict[str, list[str]]:
    """Our split -> source splits read directly; key "train" is the pool the rest are carved from.

    ``split`` is null (use source splits named like ours, carve the rest from "train" or from
    everything), a name or list (carve all four splits from their union), or a mapping.
    """
    if split is None:
        plan = {}
        for ours, aliases in SPLIT_ALIASES.items():
            found = [a for a in aliases if a in available]
            if found:
                plan[ours] = found[:1]
        used = {names[0] for names in plan.values()}
        plan["train"] = ["train"] if "train" in available else [s for s in available if s not in used]
        if not plan["train"]:  # e.g. a lone "test" split: carve everything from it
            plan = {"train": list(available)}
    elif isinstance(split, str) or (isinstance(split, Sequence) and not isinstance(split, Mapping)):
        plan = {"train": [split] if isinstance(split, str) else list(split)}
    elif isinstance(split, Mapping):
        plan = {str(k): [v] if isinstance(v, str) else list(v) for k, v in split.items()}
        for key in plan:
            if key not in SPLITS:
                raise InputError(f"task.split: expected keys among {', '.join(SPLITS)}, got {key!r}")
        if "train" not in plan:
            used = {s for names in plan.values() for s in names}
            plan["train"] = [s for s in available if s not in used]
    else:
        raise InputError(f"task.split: expected null, a split name, a list or a mapping, got {split!r}")
    for names in plan.values():
        for name in names:
            if name not in available:
                raise InputError(f"task.split: source split {name!r} not found (available: {', '.join(available)})")
    if not plan["train"]:
        raise InputError("task.split: no source split left to carve train from")
    return plan


def carve_sizes(n_pool: int, sizes: dict[str, int]) -> dict[str, int]:
    """Requested sizes, scaled down proportionally when the pool is too small."""
    total = sum(sizes.values())
    if total <= n_pool:
        return dict(sizes)
    scaled = {name: n * n_pool // total for name, n in sizes.items()}
    for name, n in scaled.items():
        if n == 0:
            raise InputError(f"task.n_{name}: the data has only {n_pool} rows for {total} requested, "
                             f"split '{name}' would be empty")
    log.warning("source has %d rows for %d requested; using %s", n_pool, total, scaled)
    return scaled


def check_columns(ds: Dataset, columns: Mapping[str, str], required: Sequence[str]) -> None:
    for ours in required:
        if ours not in columns:
            raise InputError(f"task.columns.{ours}: expected the name of a source column, got nothing")
    for ours, theirs in columns.items():
        if theirs not in ds.column_names:
            raise InputError(f"task.columns.{ours}: column {theirs!r} not in the data "
                             f"(available: {', '.join(ds.column_names)})")


class DataTask(Task):
    """A task whose data is either generated (``source: null``) or read through a column mapping.

    Subclasses implement ``generate`` (the embedded data) and ``convert`` (a source row with our
    column names -> a full row), and list the columns they need in ``required_columns``.
    """

    CODE_VERSION = "0"
    required_columns: tuple[str, ...] = ()
    default_columns: dict[str, str] = {}  # our name -> source column, overridden key by key by ``columns``
    optional_columns: tuple[str, ...] = ("id",)
    prompt_field: str = "text"  # the placeholder ``prompt_template`` must contain

    def __init__(self, seed: int = 0, n_train: int = 1000, n_unlabeled: int = 500, n_validation: int = 100,
                 n_test: int = 200, source: str | Mapping[str, str] | None = None,
                 columns: Mapping[str, str] | None = None, split: Any = None, max_prompt_tokens: int = 128,
                 max_new_tokens: int = 64, prompt_template: str = "{text}\nOutput:",
                 chat_template: str = "auto", student_labels: int | None = None) -> None:
        if isinstance(seed, bool) or not isinstance(seed, int):
            raise InputError(f"task.seed: expected an integer, got {seed!r}")
        self.seed = seed
        self.sizes = {s: positive_int(f"task.n_{s}", n) for s, n in
                      zip(SPLITS, (n_train, n_unlabeled, n_validation, n_test))}
        self.max_prompt_tokens = positive_int("task.max_prompt_tokens", max_prompt_tokens)
        self.max_new_tokens = positive_int("task.max_new_tokens", max_new_tokens)
        # The experiment's label budget (model YAMLs read it as the student's sft.train_examples); not
        # part of the data, so not of ``config`` or the data key.
        self.student_labels = None if student_labels is None else positive_int("task.student_labels", student_labels)
        placeholder = "{" + self.prompt_field + "}"
        if not isinstance(prompt_template, str) or placeholder not in prompt_template:
            raise InputError(f"task.prompt_template: expected a string containing {placeholder!r}, "
                             f"got {prompt_template!r}")
        self.prompt_template = prompt_template
        # How models see a prompt, not what the data is: outside ``config`` (data keys unchanged);
        # the SFT key covers it for roles with a pretrained tokenizer (plad.stages.sft.entry).
        from plad.models.encoding import check_chat_template  # here: torch stays out of importing tasks

        self.chat_template = check_chat_template(chat_template)
        self.source, self.split = _plain(source), _plain(split)
        self.columns = {**self.default_columns, **(_plain(columns) or {})}
        if self.source is not None and not isinstance(self.source, (str, Mapping)):
            raise InputError(f"task.source: expected null, a hub name, a file or a split->file mapping, "
                             f"got {self.source!r}")
        unknown = set(self.columns) - set(self.required_columns) - set(self.optional_columns)
        if unknown:
            raise InputError(f"task.columns: expected keys among "
                             f"{', '.join(self.required_columns + self.optional_columns)}, got {sorted(unknown)}")
        self.config: dict[str, Any] = {
            "seed": seed, **{f"n_{s}": n for s, n in self.sizes.items()}, "source": self.source,
            "columns": self.columns, "split": self.split, "max_prompt_tokens": max_prompt_tokens,
            "max_new_tokens": max_new_tokens, "prompt_template": prompt_template}

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
            return prompt[len(head): len(prompt) - len(tail)]
        return prompt

    @abstractmethod
    def generate(self) -> DatasetDict:
        """The embedded, seeded data set."""

    @abstractmethod
    def convert(self, row: dict[str, Any]) -> dict[str, Any]:
        """A source row (our column names, ``id`` filled) -> a row with prompt, reference, extras."""

    def load(self, cache_root: str | os.PathLike | None = None,
             validate: Callable[[DatasetDict], None] | None = None) -> DatasetDict:
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
        plan = split_plan(self.split, list(raw.keys()))
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
                take = order[start: start + sizes[name]]
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
