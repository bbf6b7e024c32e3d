"""A cached top-k teacher for the white-box losses (``distill.teacher_logits: topk``).

Why: online, ``DistillModule`` holds the teacher and runs it on every batch, so a run pays the
teacher's weights and activations in memory and its forward pass in time, at every step and again
for every loss and seed. But the teacher is fixed and so are the sequences a white-box loss trains
on (the tokenized pair set), so its distributions over them can be computed once and read back.

How: ``obtain_teacher_topk`` runs the teacher once (no grad, batched by length, in the trainer's
precision) over ALL rows of the tokenized pair set (train and validation, all K sequences of a row)
and stores, at each target position (labels != -100, in order), the top-k of its log-probabilities
over the full vocabulary (values float32, ids int32) and the log-prob of the target token itself,
so dpkd, which reads the teacher's likelihood of the sampled sequence, stays exact when a token is
outside the top-k. The Arrow table is a content-addressed entry inside the pair entry, next to the
tokenized table it extends (``<pairs>/teacher_topk/<key>``): it is derived from that table alone,
so it disappears with the pair set, and a run with another loss or seed reuses it. The key holds the
tokenized table's key, the teacher's content (``plad.cache.content_key``), k, the precision and the
stage version. Training then loads no teacher: the collator serves the values as tensors and
``dense_teacher_logits`` scatters them into [N, L, V] log-probs filled with ``FILL`` elsewhere
(finite: the losses multiply probabilities by log-ratios, and 0 * -inf is nan). The losses' own
log_softmax renormalises over the kept tokens, so k = V gives the online teacher up to float error.
The rebuilt tensor is as large as the online teacher's logits: what is saved is the teacher's weights,
its activations and its forward pass. Precision: the cache is computed as the pair stage scores
(``scoring_precision``); under 16-true / bf16-true that is a converted copy, while the online teacher,
held outside the module, keeps its own dtype, so there the two differ by that rounding.

Compared with DistillKit (arcee-ai/DistillKit, distillkit/lossfuncs/common.py ``get_target_logprobs``
@ a61c2e7d25c2e990d45832e12bd8542bdee9c810): it captures top-k log-probs offline too, compressed
(a polynomial fit of the sorted curve, quantised residuals, bit-packing) for billions of tokens, and
its sparse KL renormalises the teacher over the stored ids (``missing_probability_handling: zero``)
or spreads the missing mass uniformly (``symmetric_uniform``). Here the pair sets are small, so the
values stay float32 and uncompressed; the renormalisation is its ``zero`` handling, done by the dense
rebuild so that every white-box loss (kd, gkd, skew_kl, taid, dpkd) runs unchanged; and the target
token is always kept (k or k + 1 tokens per position).
"""

from __future__ import annotations

import gc
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import torch
from datasets import Dataset, concatenate_datasets, load_from_disk
from torch import Tensor
from tqdm.auto import tqdm

from plad.cache import atomic_dir, content_key, is_complete, stage_key
from plad.checks import InputError, integer
from plad.models.encoding import pad_batch
from plad.models.logprobs import IGNORE_INDEX, sequence_logprobs
from plad.pairs.store import quiet_datasets, save

MODES = ("online", "topk")
FILL = -1.0e4  # log-prob of the tokens not kept: exp() is exactly 0 in float32, and it stays finite
# Columns added to the tokenized pair rows ([K][n][k], [K][n][k], [K][n]) and the batch keys they become.
LOGP, IDS, TARGET = "teacher_topk_logp", "teacher_topk_ids", "teacher_target_logp"
COUNT = "teacher_n_targets"  # batch only: [B*K] target positions per sequence, checked against the labels


def check_teacher_logits(mode: Any, k: Any = 20) -> tuple[str, int]:
    """(mode, k) of ``distill.teacher_logits`` / ``distill.topk``, or a one-line InputError."""
    if mode not in MODES:
        raise InputError(f"distill.teacher_logits: expected online or topk, got {mode!r}")
    return mode, integer(k, "distill.topk")


def teacher_vocabulary(path: str | Path) -> tuple[Any, int]:
    """(tokenizer, logits width) of a saved teacher without loading its weights."""
    from transformers import AutoConfig, AutoTokenizer

    from plad.models.tokenizer import ensure_pad

    config = AutoConfig.from_pretrained(str(path))
    return ensure_pad(AutoTokenizer.from_pretrained(str(path))), int(config.get_text_config().vocab_size)


def topk_entry(dm: Any, teacher_path: str | Path, k: int, precision: str) -> Path:
    """Where the cache of ``dm``'s tokenized pair set under this teacher lives (see the docstring)."""
    key = stage_key("teacher_topk", dm.cache_dir.name, content_key(teacher_path), k, precision)
    return dm.path / "teacher_topk" / key


def obtain_teacher_topk(
    dm: Any, teacher_path: str | Path, k: int, precision: str | int | None, device: Any, batch_size: int = 32
) -> Path:
    """The cache entry for a PairDataModule ``dm``: reused when complete, else built on rank 0 (the
    others wait at the barrier and find it). The teacher is loaded only to build it, then released."""
    from plad.distributed import main_first
    from plad.models.build import load_saved
    from plad.models.precision import canonical_precision

    precision = canonical_precision(precision)
    main_first(dm.prepare_data)
    entry = topk_entry(dm, teacher_path, k, precision)

    def build() -> None:
        if is_complete(entry):
            return
        teacher, _ = load_saved(teacher_path)
        teacher = teacher.to(device).eval().requires_grad_(False)
        rows = load_from_disk(str(dm.cache_dir / "data"))
        try:
            pad_id, enc_dec = dm.collator.pad_token_id, dm.encoder_decoder
            table = teacher_topk_table(
                teacher, rows["input_ids"], rows["labels"], pad_id, enc_dec, k, precision, batch_size
            )
        finally:
            del teacher
            gc.collect()
            if torch.cuda.is_available():
                torch.cuda.empty_cache()
        with atomic_dir(entry) as tmp, quiet_datasets():
            save(table, tmp / "data")

    main_first(build)
    return entry


@torch.no_grad()
def teacher_topk_table(
    teacher: torch.nn.Module,
    input_ids: list[list[list[int]]],
    labels: list[list[list[int]]],
    pad_token_id: int,
    encoder_decoder: bool,
    k: int,
    precision: str = "32-true",
    batch_size: int = 32,
) -> Dataset:
    """One row per tokenized pair row ([K] sequences of ids and labels): the teacher's top-k
    log-probs and ids and the target's log-prob at each target position. Sequences go through the
    teacher longest first, ``batch_size`` at a time (little padding), and are put back in place."""
    from plad.models.precision import scoring_precision

    device = next(teacher.parameters()).device
    order = sorted(
        ((r, j) for r, row in enumerate(input_ids) for j in range(len(row))),
        key=lambda s: -(len(input_ids[s[0]][s[1]]) + len(labels[s[0]][s[1]])),
    )
    vals: list[list[Any]] = [[None] * len(row) for row in input_ids]
    ids, target = [list(v) for v in vals], [list(v) for v in vals]
    width = k
    with scoring_precision(precision, teacher) as model:
        for start in tqdm(range(0, len(order), batch_size), desc="teacher top-k", unit="batch"):
            chunk = order[start : start + batch_size]
            feats = [{"input_ids": input_ids[r][j], "labels": labels[r][j]} for r, j in chunk]
            batch = {key: t.to(device) for key, t in pad_batch(feats, pad_token_id, encoder_decoder).items()}
            out = sequence_logprobs(model, batch["input_ids"], batch["attention_mask"], batch["labels"], True)
            mask = out.labels != IGNORE_INDEX
            logp = torch.log_softmax(out.logits[mask].float(), dim=-1)  # [M, V] at the target positions
            width = min(k, logp.shape[-1])  # k above the vocabulary keeps all of it
            top = logp.topk(width, dim=-1)
            tgt = logp.gather(-1, out.labels[mask].unsqueeze(-1)).squeeze(-1)
            counts = mask.sum(-1).tolist()
            parts = zip(top.values.split(counts), top.indices.split(counts), tgt.split(counts))
            for (r, j), (v, i, t) in zip(chunk, parts):
                vals[r][j], ids[r][j] = v.cpu().numpy(), i.to(torch.int32).cpu().numpy()
                target[r][j] = t.cpu().numpy()
    table = pa.table(
        {
            LOGP: _nested(vals, np.float32, width),
            IDS: _nested(ids, np.int32, width),
            TARGET: _nested(target, np.float32),
        }
    )
    return Dataset(table)


def _nested(per_row: list[list[np.ndarray]], dtype: type, width: int | None = None) -> pa.Array:
    """Rows -> sequences -> positions (-> ``width`` values each) as nested Arrow lists, built from
    flat buffers (no Python object per number)."""
    seqs = [a for row in per_row for a in row]
    flat = np.concatenate([a.reshape(-1) for a in seqs]).astype(dtype) if seqs else np.zeros(0, dtype)
    values: pa.Array = pa.array(flat)
    if width is not None:
        values = pa.FixedSizeListArray.from_arrays(values, width)
    positions = pa.ListArray.from_arrays(_offsets([len(a) for a in seqs]), values)
    return pa.ListArray.from_arrays(_offsets([len(row) for row in per_row]), positions)


def _offsets(lengths: list[int]) -> pa.Array:
    return pa.array(np.concatenate([[0], np.cumsum(lengths, dtype=np.int64)]).astype(np.int32))


def with_teacher_topk(rows: Dataset, entry: str | Path) -> Dataset:
    """The tokenized pair rows with the cached teacher columns beside them (same rows, same order)."""
    topk = load_from_disk(str(Path(entry) / "data"))
    if len(topk) != len(rows):
        raise RuntimeError(f"teacher top-k cache {entry}: {len(topk)} rows for a tokenized pair set of {len(rows)}")
    return concatenate_datasets([rows, topk], axis=1)


def collate_topk(rows: list[dict[str, Any]], k_max: int) -> dict[str, Tensor]:
    """[B*K, P, k] top-k log-probs and ids, [B*K, P] target log-probs and [B*K] counts, laid out as
    ``PairCollator`` lays out sequences (a ragged example repeats its first sequence)."""
    seqs = [(r, j if j < len(r[TARGET]) else 0) for r in rows for j in range(k_max)]
    counts = [len(r[TARGET][j]) for r, j in seqs]
    width = next((len(r[LOGP][j][0]) for (r, j), n in zip(seqs, counts) if n), 1)
    P = max(max(counts), 1)
    logp = np.full((len(seqs), P, width), FILL, dtype=np.float32)
    ids = np.zeros((len(seqs), P, width), dtype=np.int64)
    target = np.full((len(seqs), P), FILL, dtype=np.float32)
    for n, ((r, j), c) in enumerate(zip(seqs, counts)):
        if c:
            logp[n, :c], ids[n, :c], target[n, :c] = r[LOGP][j], r[IDS][j], r[TARGET][j]
    return {
        LOGP: torch.from_numpy(logp),
        IDS: torch.from_numpy(ids),
        TARGET: torch.from_numpy(target),
        COUNT: torch.tensor(counts, dtype=torch.long),
    }


def dense_teacher_logits(batch: dict[str, Tensor], labels: Tensor, vocab_size: int) -> Tensor:
    """[N, L, V] teacher log-probs aligned with ``labels`` [N, L] (the student's shifted targets): at
    each target position the cached top-k and the target token's log-prob, ``FILL`` elsewhere."""
    if COUNT not in batch:
        raise RuntimeError(
            "teacher_logits=topk: the batch has no cached teacher top-k (set PairDataModule.teacher_topk)"
        )
    mask = labels != IGNORE_INDEX
    counts = mask.sum(-1)
    if not torch.equal(counts, batch[COUNT].to(counts.device)):
        raise RuntimeError(
            "teacher top-k cache: its target positions differ from the batch's (a cache of other sequences)"
        )
    logp, ids, target = batch[LOGP], batch[IDS], batch[TARGET]
    keep = torch.arange(ids.shape[1], device=ids.device) < counts.unsqueeze(-1)  # cached rows that exist
    N, L = labels.shape
    at_ids = torch.zeros((N, L, ids.shape[-1]), dtype=torch.long, device=labels.device)
    at_logp = torch.full((N, L, ids.shape[-1]), FILL, dtype=torch.float32, device=labels.device)
    at_target = torch.full((N, L), FILL, dtype=torch.float32, device=labels.device)
    at_ids[mask], at_logp[mask], at_target[mask] = ids[keep].long(), logp[keep].float(), target[keep].float()
    dense = torch.full((N, L, vocab_size), FILL, dtype=torch.float32, device=labels.device)
    dense.scatter_(-1, at_ids, at_logp)  # positions without a target write FILL at id 0: no change
    return dense.scatter_(-1, labels.clamp(min=0).unsqueeze(-1), at_target.unsqueeze(-1))
