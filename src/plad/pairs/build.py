"""Pseudo-preference pairs: teacher samples (y+) vs initial-student samples (y-) on unlabeled prompts.

The pair set is a content-addressed cache entry (``<cache>/pairs/<fingerprint>``), built in shards
of ``shard_size`` prompts in three phases so only one model is in memory at a time
(``plad.pairs.shards``): (1) the teacher's samples per shard, (2) the student's samples per shard,
both drawn by the generation backend (``plad.backends``: HF in this process, or vLLM) and stored
with their generated token ids and whether they ended with EOS, (3) scores, pairs and reference
log-likelihoods per shard with the student's HF model, in the training precision, of exactly the
generated ids (``pairs.rows``). Every shard is written atomically, so a killed run resumes where
it stopped; sampling noise depends only on (seed, role, prompt), so results do not depend on
interruptions, batch size or process count. Under torchrun / Lightning DDP (RANK, WORLD_SIZE) rank
r builds shards k with k % world == r, rank 0 merges, and the others wait for the entry. Models are
handed over as ``ModelRef``s and loaded only when a shard needs them: a warm cache or a black-box
teacher never loads the teacher.
"""

from __future__ import annotations

import hashlib
import logging
import time
from collections.abc import Callable
from contextlib import nullcontext
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from datasets import Dataset, concatenate_datasets
from omegaconf import DictConfig, OmegaConf

from plad.backends.base import Backend, check_sampling
from plad.cache import STAGE_VERSIONS, entry_dir, file_hash, is_complete, stage_key
from plad.checks import InputError, integer
from plad.locks import locked
from plad.models.precision import canonical_precision
from plad.models.ref import ModelRef
from plad.pairs import store
from plad.pairs.rows import CUT_SAMPLES_DEFAULT, check_cut_samples
from plad.pairs.shards import build_shards
from plad.tasks.base import Task, post_edit_of

log = logging.getLogger(__name__)
# Keys never part of the cache key as written: they change how a run proceeds, not what it produces,
# or the key holds what they yield (the teacher file's hash, the scorer's fingerprint, the prompts of `split`).
RUN_KEYS = ("rebuild", "batch_size", "wait_timeout_s", "poll_s", "teacher_outputs", "scorer", "split")
SAMPLING_KEYS = ("do_sample", "temperature", "top_p", "top_k")


@dataclass
class PairSet:
    path: Path
    fingerprint: str
    stats: dict[str, Any]
    pairwise: Dataset
    listwise: Dataset | None
    reused: bool = False  # served from the cache by this call


def check_pairs(cfg: DictConfig) -> None:
    """The pair stage's settings (``pairs``): sizes, each role's sampling, ``cut_samples``. The one
    check of them: the preflight runs it before any stage, ``obtain_pairs`` for callers without one.
    (The black-box teacher file is checked by ``plad.pairs.teacher_file``.)"""
    for key in ("n_teacher", "n_student", "shard_size", "batch_size"):
        integer(cfg[key], f"pairs.{key}")
    for role in ("teacher", "student"):
        extra = set(cfg[role]) - set(SAMPLING_KEYS)
        if extra:
            raise InputError(f"pairs.{role}: expected keys among {list(SAMPLING_KEYS)}, got {sorted(extra)}")
        check_sampling(cfg[role], f"pairs.{role}")
    check_cut_samples(cfg.get("cut_samples", CUT_SAMPLES_DEFAULT))


def dist_info() -> tuple[int, int]:
    """(rank, world size) of the run's process group (``plad.distributed.connect``), else as the
    launcher's environment variables announce them (torchrun, srun)."""
    from plad import distributed

    rank, world = distributed.rank(), distributed.world()
    if not 0 <= rank < world:
        raise InputError(f"RANK/WORLD_SIZE: expected 0 <= RANK < WORLD_SIZE, got {rank}/{world}")
    return rank, world


def _prompt_ids(prompts: Dataset) -> list[str]:
    ids = [str(i) for i in prompts["id"]] if "id" in prompts.column_names else [str(i) for i in range(len(prompts))]
    if len(set(ids)) != len(ids):
        dup = next(i for n, i in enumerate(ids) if i in ids[:n])
        raise InputError(f"prompts.id: expected unique prompt ids, got duplicates (first: {dup})")
    return ids


def _hash_prompts(ids: list[str], texts: list[str]) -> str:
    h = hashlib.sha256()
    for i, p in zip(ids, texts):
        h.update(f"{i}\x00{p}\x00".encode())
    return h.hexdigest()[:16]


def _wait(done: Callable[[], bool], timeout: float, poll: float, what: Callable[[], str]) -> None:
    deadline = time.monotonic() + timeout
    while not done():
        if time.monotonic() > deadline:
            raise TimeoutError(f"pairs: waited {timeout:.0f}s for {what()} (pairs.wait_timeout_s)")
        time.sleep(poll)


def _load(entry: Path, fp: str) -> PairSet:
    tables, stats = store.load_entry(entry)
    return PairSet(path=entry, fingerprint=fp, stats=stats, pairwise=tables["pairwise"], listwise=tables["listwise"])


def _try_load(entry: Path, fp: str, newer_than: float = 0.0, warn: bool = True) -> PairSet | None:
    """The cached pair set, or None when absent, older than ``newer_than`` or damaged."""
    try:
        if not is_complete(entry) or (entry / "COMPLETE").stat().st_mtime < newer_than:
            return None
        return _load(entry, fp)
    except (store.CorruptEntry, FileNotFoundError) as e:  # FileNotFoundError: removed while we looked
        if warn:
            log.warning("pairs: cached entry is damaged, rebuilding it (%s)", e)
        return None


def _wait_for_entry(entry: Path, fp: str, timeout: float, poll: float, why: str, newer_than: float = 0.0) -> PairSet:
    found: list[PairSet] = []

    def ready() -> bool:
        ps = _try_load(entry, fp, newer_than, warn=False)
        found.extend([ps] if ps else [])
        return ps is not None

    _wait(ready, timeout, poll, lambda: why)
    return found[0]


def _add(total: dict[str, Any], part: dict[str, Any]) -> dict[str, Any]:
    """Sum nested numeric stats of shards."""
    for k, v in part.items():
        total[k] = _add(total.get(k, {}), v) if isinstance(v, dict) else total.get(k, 0) + v
    return total


def _concat(parts: list[Dataset]) -> Dataset:
    """Shards in order; empty shards are skipped (Arrow cannot concatenate a table with no blocks)."""
    nonempty = [p for p in parts if len(p)]
    return concatenate_datasets(nonempty) if nonempty else parts[0]


def obtain_pairs(
    cfg: DictConfig,
    prompts: Dataset,
    task: Task,
    teacher: ModelRef,
    student: ModelRef,
    cache_root: Path,
    max_prompt_tokens: int,
    max_new_tokens: int,
    seed: int,
    lookup_only: bool = False,
    backend: Backend | None = None,
    precision: str | int = "32-true",
    post_edit: str | None = None,
) -> PairSet | None:
    """The pair set for these prompts and models: from the cache when it is complete and intact.
    ``backend`` draws the samples (default: HF in this process); ``precision`` is the trainer's, in
    which the reference log-probs are computed. ``post_edit``: the task's edit applied to every
    teacher sample (``model.teacher.post_edit``). ``lookup_only``: never build; None when the cache
    has no such entry (loads no model)."""
    if backend is None:
        from plad.backends.hf import HFBackend

        backend = HFBackend()
    started = time.time()
    check_pairs(cfg)
    rank, world = dist_info()
    if len(prompts) == 0:
        raise InputError("prompts: expected at least one unlabeled prompt, got an empty split")
    if not cfg.get("oracle_references", False) and "reference" in prompts.column_names:
        prompts = prompts.remove_columns(["reference"])  # the paper's protocol: unlabeled means unlabeled
    ids, texts = _prompt_ids(prompts), list(prompts["prompt"])
    scorer = None
    if cfg.get("scorer") is not None:
        from hydra.utils import instantiate

        from plad.pairs.quality import check_scorer

        check_scorer(cfg)
        scorer = instantiate(cfg.scorer)
        scorer.bind(teacher.load, teacher.fingerprint, max_prompt_tokens, max_new_tokens, cfg.batch_size)
    black_box = cfg.get("teacher_outputs")
    teacher_key = {"file": file_hash(black_box)} if black_box else {"model": teacher.fingerprint}
    edit = post_edit_of(task, post_edit)
    if edit is not None:  # keyed only when set: entries without an edit keep their keys
        teacher_key["post_edit"] = post_edit
    generation_cfg = {k: v for k, v in OmegaConf.to_container(cfg, resolve=True).items() if k not in RUN_KEYS}
    precision = canonical_precision(precision)
    fp = stage_key(
        "pairs",
        teacher_key,
        student.fingerprint,
        _hash_prompts(ids, texts),
        generation_cfg,
        scorer.fingerprint(task) if scorer else None,
        max_prompt_tokens,
        max_new_tokens,
        seed,
        backend.key(),
        precision,
    )
    entry = entry_dir(cache_root, "pairs", fp)
    if lookup_only:
        return _try_load(entry, fp, warn=False)
    timeout, poll = float(cfg.get("wait_timeout_s", 86400)), float(cfg.get("poll_s", 2.0))
    # Rank 0 holds the entry's lock for the whole build: a concurrent run of the same config waits
    # for it, then reuses the entry, and never has the partial shards removed under it.
    with locked(entry) if rank == 0 else nullcontext():
        if cfg.rebuild and rank == 0:  # built beside the old entry, which is swapped out at the end
            store.remove(store.partial_dir(entry))
        elif cfg.rebuild:  # only rank 0 rebuilds; wait for an entry newer than this run
            return _wait_for_entry(entry, fp, timeout, poll, f"rank 0 to rebuild {entry}", newer_than=started)
        elif (cached := _try_load(entry, fp)) is not None:
            if world == 1:
                store.remove(store.partial_dir(entry))  # left behind if a run died right after merging
            log.info("pairs: %d cached pairwise rows from %s", len(cached.pairwise), entry)
            cached.reused = True
            return cached
        elif rank == 0 and is_complete(entry):
            store.remove(entry)

        n_shards = max(1, -(-len(ids) // cfg.shard_size))
        mine = [k for k in range(n_shards) if k % world == rank]
        resumed = sum(store.shard_done(entry, "shards", k) for k in range(n_shards))
        examples = [{**row, "id": i} for i, row in zip(ids, prompts)]
        teacher_outputs = None
        if black_box:
            from plad.pairs.teacher_file import read_teacher_outputs

            teacher_outputs = read_teacher_outputs(black_box, ids, texts)
        listwise = (max(map(len, teacher_outputs)) if teacher_outputs else cfg.n_teacher) + cfg.n_student > 2
        has_reference = "reference" in prompts.column_names and all(isinstance(r, str) for r in prompts["reference"])
        with backend:
            build_shards(
                cfg,
                entry,
                mine,
                examples,
                teacher_outputs,
                edit,
                task,
                scorer,
                teacher,
                student,
                backend,
                listwise=listwise,
                has_reference=has_reference,
                max_prompt_tokens=max_prompt_tokens,
                max_new_tokens=max_new_tokens,
                seed=seed,
                precision=precision,
            )

        if rank != 0:
            return _wait_for_entry(entry, fp, timeout, poll, f"rank 0 to merge {entry}")
        missing = lambda: [k for k in range(n_shards) if not store.shard_done(entry, "shards", k)]  # noqa: E731
        _wait(lambda: not missing(), timeout, poll, lambda: f"shards {missing()[:5]} from other ranks")
        shards = [store.read_shard(entry, "shards", k) for k in range(n_shards)]
        stats: dict[str, Any] = {}
        for _, meta in shards:
            _add(stats, meta)
        tables = {
            name: _concat([t[name] for t, _ in shards]) if listwise or name == "pairwise" else None
            for name in store.TABLES
        }
        stats = {
            "fingerprint": fp,
            "version": STAGE_VERSIONS["pairs"],
            "n_prompts": len(ids),
            "n_shards": n_shards,
            "resumed_shards": resumed,
            "world_size": world,
            "teacher_source": "file" if black_box else "model",
            "backend": backend.key(),
            "precision": precision,
            "oracle": bool(cfg.get("oracle_references", False)),
            "ref_lengths": {"max_prompt_tokens": max_prompt_tokens, "max_completion_tokens": max_new_tokens},
            "rows": {name: len(t) if t is not None else 0 for name, t in tables.items()},
            **stats,
        }
        store.write_entry(entry, tables, stats, replace=bool(cfg.rebuild))
        store.remove(store.partial_dir(entry))
        log.info("pairs: %d pairwise rows in %s", stats["rows"]["pairwise"], entry)
        return _load(entry, fp)
