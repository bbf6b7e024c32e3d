"""Serving a pair set to the distillation loop: K sequences per example, one forward pass.

Each example becomes K (prompt, completion) sequences (``inputs`` names the columns: ("chosen",
"rejected"), ("chosen",), ("reference",) or ("candidates",)). A sampled completion is served as the
token ids that were generated (``<col>_ids``), with an EOS only when it ended with one
(``<col>_finished``): the sequence every loss scores is the one that was sampled, and a sample cut
at the budget never teaches "stop here". A reference (oracle runs) is text that ends. They are tokenised once with
``datasets.map`` into a cache keyed by the tokenizer and lengths, stored inside the pair entry (so
it disappears with it). ``PairCollator`` lays a batch out example-major (row b*K + k) in the
``plad.models.logprobs`` format plus ``ref_logp`` / ``quality`` / ``mask`` / ``n_teacher`` [B, K].
Validation holds out whole prompts, chosen by a seeded hash of the prompt id.
"""

from __future__ import annotations

import hashlib
import json
import logging
from collections.abc import Sequence
from functools import partial
from pathlib import Path
from typing import Any

import lightning as L
import torch
from datasets import Dataset, load_from_disk
from torch import Tensor
from torch.utils.data import DataLoader

from plad.cache import atomic_dir, is_complete, stage_key
from plad.checks import InputError, integer
from plad.data.loader import ResumableLoader
from plad.models.encoding import encode_example, pad_batch, target_counts
from plad.models.tokenizer import tokenizer_fingerprint
from plad.pairs.store import quiet_datasets, save
from plad.training.teacher_topk import TARGET, collate_topk, with_teacher_topk

log = logging.getLogger(__name__)


def val_ids(ids: Sequence[str], val_size: float, seed: int) -> set[str]:
    """Prompt ids held out: ids ranked by a seeded hash, taken until ``val_size`` rows are covered
    (an int = rows, a float in (0, 1) = fraction of rows). Depends only on (ids, seed)."""
    if val_size < 0 or (isinstance(val_size, float) and val_size >= 1):
        raise InputError(f"val_size: expected an int >= 0 or a float in [0, 1), got {val_size}")
    target = val_size * len(ids) if isinstance(val_size, float) else val_size
    counts: dict[str, int] = {}
    for i in ids:
        counts[i] = counts.get(i, 0) + 1
    ranked = sorted(counts, key=lambda i: hashlib.sha256(f"{seed}\x00{i}".encode()).hexdigest())
    held, covered = set(), 0
    for i in ranked:
        if covered >= target:
            break
        held.add(i)
        covered += counts[i]
    return held


class PairCollator:
    """Pads pre-tokenised examples of K_i sequences into [B*K, T] with K = max K_i; ragged
    examples repeat their first sequence as a dummy with ``mask`` False (keeps logits finite)."""

    def __init__(self, pad_token_id: int, encoder_decoder: bool, padding_side: str = "right") -> None:
        if padding_side not in ("left", "right"):
            raise InputError(f"padding_side: expected 'left' or 'right', got {padding_side!r}")
        self.pad_token_id = pad_token_id
        self.encoder_decoder = encoder_decoder
        self.padding_side = padding_side

    def __call__(self, rows: Sequence[dict[str, Any]]) -> dict[str, Tensor]:
        k = max(len(r["input_ids"]) for r in rows)
        feats, mask = [], []
        for r in rows:
            n = len(r["input_ids"])
            feats += [
                {"input_ids": r["input_ids"][j if j < n else 0], "labels": r["labels"][j if j < n else 0]}
                for j in range(k)
            ]
            mask.append([j < n for j in range(k)])
        batch = pad_batch(feats, self.pad_token_id, self.encoder_decoder, self.padding_side)
        batch["mask"] = torch.tensor(mask, dtype=torch.bool)
        for key in ("ref_logp", "quality"):
            if key in rows[0]:
                batch[key] = torch.tensor([list(r[key]) + [0.0] * (k - len(r[key])) for r in rows], dtype=torch.float32)
        if "n_teacher" in rows[0]:
            batch["n_teacher"] = torch.tensor([r["n_teacher"] for r in rows], dtype=torch.long)
        if TARGET in rows[0]:  # distill.teacher_logits=topk: the cached teacher (plad.training.teacher_topk)
            batch.update(collate_topk(rows, k))
        if "prompt" in rows[0]:  # the texts, for on-policy sampling (plad.training.on_policy)
            batch["prompts"] = [r["prompt"] for r in rows]
        return batch


def _completions(row: dict[str, Any], inputs: tuple[str, ...]) -> list[tuple[Any, bool]]:
    """(completion, ends with EOS) per sequence: generated ids of samples, the text of a reference."""
    if inputs == ("candidates",):
        return list(zip(row["candidates_ids"], row["candidates_finished"]))
    return [(row[c], True) if c == "reference" else (row[f"{c}_ids"], row[f"{c}_finished"]) for c in inputs]


def _encode(
    row: dict[str, Any],
    *,
    tokenizer: Any,
    inputs: tuple[str, ...],
    encoder_decoder: bool,
    max_prompt_tokens: int,
    max_completion_tokens: int,
    ref_cols: list[str] | None,
    quality_cols: list[str] | None,
) -> dict[str, Any]:
    feats = [
        encode_example(
            tokenizer, row["prompt"], c, encoder_decoder, max_prompt_tokens, max_completion_tokens, eos=bool(ends)
        )
        for c, ends in _completions(row, inputs)
    ]
    out: dict[str, Any] = {"input_ids": [f["input_ids"] for f in feats], "labels": [f["labels"] for f in feats]}
    listwise = inputs == ("candidates",)
    if ref_cols:
        out["ref_logp"] = row[ref_cols[0]] if listwise else [row[c] for c in ref_cols]
    if quality_cols:
        out["quality"] = row[quality_cols[0]] if listwise else [row[c] for c in quality_cols]
    if listwise:
        out["n_teacher"] = row["n_teacher"]
    return out


def _pairs_as_lists(ds: Dataset) -> Dataset:
    """Pairwise rows in the listwise layout: candidates [chosen, rejected], one teacher sample."""

    def to_list(row: dict[str, Any]) -> dict[str, Any]:
        out = {
            "candidates": [row["chosen"], row["rejected"]],
            "n_teacher": 1,
            "candidates_ids": [row["chosen_ids"], row["rejected_ids"]],
            "candidates_finished": [row["chosen_finished"], row["rejected_finished"]],
        }
        if "ref_chosen_logp" in row:
            out["ref_candidates_logp"] = [row["ref_chosen_logp"], row["ref_rejected_logp"]]
        if "chosen_score" in row:
            out["scores"] = [row["chosen_score"], row["rejected_score"]]
        return out

    keep = [c for c in ("id", "prompt") if c in ds.column_names]
    return ds.map(to_list, remove_columns=[c for c in ds.column_names if c not in keep], keep_in_memory=True)


class PairDataModule(L.LightningDataModule):
    def __init__(
        self,
        pairs: Any,
        tokenizer: Any,
        encoder_decoder: bool,
        inputs: Sequence[str] = ("chosen", "rejected"),
        batch_size: int = 8,
        max_prompt_tokens: int = 256,
        max_completion_tokens: int = 64,
        val_size: float = 0.05,
        seed: int = 0,
        num_workers: int = 0,
        accumulate_grad_batches: int = 1,
    ) -> None:
        super().__init__()
        self.path = Path(getattr(pairs, "path", pairs))
        self.accumulate = accumulate_grad_batches
        self.tokenizer = tokenizer
        self.encoder_decoder = encoder_decoder
        self.inputs = tuple(inputs)
        if not self.inputs or ("candidates" in self.inputs and self.inputs != ("candidates",)):
            raise InputError(
                f"inputs: expected pairwise columns like ('chosen', 'rejected') or ('candidates',), got {self.inputs}"
            )
        integer(batch_size, "batch_size")
        self.batch_size, self.seed, self.num_workers = batch_size, seed, num_workers
        self.max_prompt_tokens, self.max_completion_tokens = max_prompt_tokens, max_completion_tokens
        self.val_size = val_size
        self.collator = PairCollator(
            tokenizer.pad_token_id if tokenizer.pad_token_id is not None else tokenizer.eos_token_id, encoder_decoder
        )
        self.table = "listwise" if self.inputs == ("candidates",) else "pairwise"
        key = stage_key(
            "pair_tokens",
            tokenizer_fingerprint(tokenizer),
            encoder_decoder,
            self.inputs,
            max_prompt_tokens,
            max_completion_tokens,
        )
        self.cache_dir = self.path / "tokenized" / key
        self.train_dataset: Dataset | None = None
        self.val_dataset: Dataset | None = None
        self.teacher_topk: Path | None = None  # the teacher's cached top-k, served with the rows (fit_distill sets it)

    def _source(self) -> Dataset:
        table = self.path / self.table
        if self.table == "listwise" and not table.is_dir() and (self.path / "pairwise").is_dir():
            # One teacher and one student sample per prompt: the list is the pair (K = 2).
            return _pairs_as_lists(load_from_disk(str(self.path / "pairwise")))
        if not table.is_dir():
            raise InputError(f"inputs: {self.inputs} needs the {self.table} table of {self.path}, not found")
        ds = load_from_disk(str(table))
        needed = [c if c == "reference" else f"{c}_ids" for c in self.inputs] if self.table == "pairwise" else []
        missing = [c for c in needed if c not in ds.column_names]
        if missing:
            raise InputError(f"inputs: expected columns of {ds.column_names}, got {missing}")
        if len(self.inputs) == 1 and self.table == "pairwise":  # one sequence per row: drop repeats of it
            col = self.inputs[0] if self.inputs[0] == "reference" else f"{self.inputs[0]}_ids"
            seen, keep = set(), []
            for n, key in enumerate(zip(ds["id"], map(str, ds[col]))):
                if key not in seen:
                    seen.add(key)
                    keep.append(n)
            ds = ds.select(keep)
        return ds

    def _check_ref_lengths(self, ds: Dataset) -> None:
        """The pair set's ``ref_logp`` score sequences cut at the lengths it was built with; served
        under other lengths they would belong to other sequences (an error, not a warning)."""
        stats_file = self.path / "stats.json"
        if "ref_logp" not in ds.column_names or not stats_file.is_file():
            return
        used = json.loads(stats_file.read_text()).get("ref_lengths", {})
        mine = {"max_prompt_tokens": self.max_prompt_tokens, "max_completion_tokens": self.max_completion_tokens}
        for key, value in used.items():
            if mine.get(key) != value:
                raise InputError(
                    f"distill.datamodule.pairs.{key}: expected {value}, the length the pair set's "
                    f"ref_logp were computed with ({self.path}), got {mine.get(key)}"
                )

    def prepare_data(self) -> None:
        """Tokenise once (Lightning runs this on local rank 0 only)."""
        if is_complete(self.cache_dir):
            return
        ds = self._source()
        if self.table == "listwise":
            ref_cols = ["ref_candidates_logp"] if "ref_candidates_logp" in ds.column_names else None
            quality_cols = ["scores"] if "scores" in ds.column_names else None
        else:
            ref_cols = [f"ref_{c}_logp" for c in self.inputs]
            ref_cols = ref_cols if all(c in ds.column_names for c in ref_cols) else None
            quality_cols = [f"{c}_score" for c in self.inputs]
            quality_cols = quality_cols if all(c in ds.column_names for c in quality_cols) else None
        fn_kwargs = {
            "tokenizer": self.tokenizer,
            "inputs": self.inputs,
            "encoder_decoder": self.encoder_decoder,
            "max_prompt_tokens": self.max_prompt_tokens,
            "max_completion_tokens": self.max_completion_tokens,
            "ref_cols": ref_cols,
            "quality_cols": quality_cols,
        }
        encoded = ds.map(
            _encode,
            fn_kwargs=fn_kwargs,
            remove_columns=[c for c in ds.column_names if c not in ("id", "prompt")],
            keep_in_memory=True,
            new_fingerprint=self.cache_dir.name,
            desc="tokenize pairs",
        )
        with atomic_dir(self.cache_dir) as tmp, quiet_datasets():
            save(encoded, tmp / "data")

    def setup(self, stage: str | None = None) -> None:
        if not is_complete(self.cache_dir):
            raise RuntimeError(f"pairs: tokenized cache {self.cache_dir} is missing; call prepare_data() first")
        ds = load_from_disk(str(self.cache_dir / "data"))
        if self.teacher_topk is not None:
            ds = with_teacher_topk(ds, self.teacher_topk)
        self._check_ref_lengths(ds)
        held = val_ids(ds["id"], self.val_size, self.seed)
        is_val = [i in held for i in ds["id"]]
        self.val_dataset = ds.select([n for n, v in enumerate(is_val) if v])
        self.train_dataset = ds.select([n for n, v in enumerate(is_val) if not v])
        if len(self.train_dataset) == 0:
            raise InputError(f"val_size: expected to leave training rows, got all {len(ds)} held out ({self.val_size})")

    def loader(self, ds: Dataset, shuffle: bool = False) -> DataLoader:
        """Batches of ``ds`` (a split of this module) in order, or reshuffled per epoch and resumable."""
        ds = ds.with_format(columns=[c for c in ds.column_names if c != "id"])
        kw = dict(collate_fn=self.collator, num_workers=self.num_workers, persistent_workers=self.num_workers > 0)
        if shuffle:
            return ResumableLoader(
                ds,
                self.batch_size,
                seed=self.seed,
                accumulate=self.accumulate,
                counts=partial(target_counts, encoder_decoder=self.encoder_decoder),
                **kw,
            )
        return DataLoader(ds, batch_size=self.batch_size, **kw)

    def train_dataloader(self) -> DataLoader:
        return self.loader(self.train_dataset, shuffle=True)

    def val_dataloader(self) -> DataLoader | list:
        return self.loader(self.val_dataset) if len(self.val_dataset) else []
