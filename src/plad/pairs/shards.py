"""Building the pair set's shards: phases 1-2 draw each role's samples per shard (one model in the
generation backend at a time) and keep their generated ids and whether they ended with EOS; phase 3
turns a shard's samples into pair rows (``plad.pairs.rows``), scored by the student's HF model in
the training precision. Every shard is written atomically (``plad.pairs.store``) and checked on
reuse, so a killed run resumes at the first shard it had not finished. ``plad.pairs.build`` decides
which shards this process builds and merges them into the cache entry.
"""

from __future__ import annotations

import logging
import time
from pathlib import Path
from typing import Any

from datasets import Dataset
from omegaconf import DictConfig, OmegaConf
from tqdm.auto import tqdm

from plad.backends.base import Backend
from plad.cache import fingerprint
from plad.models.precision import scoring_precision
from plad.models.ref import ModelRef
from plad.pairs import store
from plad.pairs.rows import CUT_SAMPLES_DEFAULT, Sample
from plad.tasks.base import PostEdit, Task

log = logging.getLogger(__name__)


def _role_seed(seed: int, role: str) -> int:
    """Teacher and student get different noise: the same model in both roles still yields pairs."""
    return int(fingerprint(seed, role), 16) % 2**31


def build_shards(
    cfg: DictConfig,
    entry: Path,
    mine: list[int],
    examples: list[dict[str, Any]],
    teacher_outputs: list[list[str]] | None,
    post_edit: PostEdit | None,
    task: Task,
    scorer: Any,
    teacher: ModelRef,
    student: ModelRef,
    backend: Backend,
    *,
    listwise: bool,
    has_reference: bool,
    max_prompt_tokens: int,
    max_new_tokens: int,
    seed: int,
    precision: str,
) -> None:
    """Phases 1-2: each role's samples per shard (one model in the backend at a time), with their
    generated ids; phase 3: pair rows per shard, scored by the student's HF model. ``post_edit``
    edits the teacher's samples (stored as sampled) before they enter the rows."""
    from plad.backends.base import Sampling, sampled
    from plad.models.likelihood import score_completions
    from plad.models.tokenizer import tokenizer_fingerprint
    from plad.pairs.rows import build_rows

    size = cfg.shard_size

    def rows_of(k: int) -> list[dict[str, Any]]:
        return examples[k * size : (k + 1) * size]

    def sample_shards(ref: ModelRef, role: str, n: int, todo: list[int]) -> None:
        sampling = Sampling(
            n=n,
            max_new_tokens=max_new_tokens,
            max_prompt_tokens=max_prompt_tokens,
            seed=_role_seed(seed, role),
            **OmegaConf.to_container(cfg[role], resolve=True),
        )
        tokenizer_fp = tokenizer_fingerprint(ref.tokenizer()) if todo else None  # whose ids these are
        for k in tqdm(todo, desc=f"{role} shards", disable=len(todo) < 2):
            out = backend.generate(
                ref, [r["prompt"] for r in rows_of(k)], sampling, batch_size=cfg.batch_size, desc=f"{role} shard {k}"
            )
            meta = {
                "samples": len(out.texts) * n,
                "tokens": out.total_tokens,
                "seconds": out.seconds,
                "empty": sum(not t.strip() for ts in out.texts for t in ts),
                "cut": sum(not f for fs in out.finished for f in fs),
                "tokenizers": {tokenizer_fp: 1},
            }
            outputs = {
                "prompt_id": [r["id"] for r in rows_of(k)],
                "texts": out.texts,
                "ids": sampled(out, f"generation={backend.name}"),
                "finished": out.finished,
            }
            store.write_shard(entry, role, k, {"outputs": Dataset.from_dict(outputs)}, meta)

    def intact(kind: str, k: int, n: int = 0) -> bool:
        """Shard ``k`` is written, verified, and holds what shard k must: the samples of its own
        prompts in order, n each, or pair rows of those prompts only. A shard that verifies but
        holds other rows (copied from elsewhere, written by a defect) is built again."""
        if not store.shard_done(entry, kind, k):
            return False
        tables, meta = store.read_shard(entry, kind, k)
        ids = [r["id"] for r in rows_of(k)]
        if kind == "shards":
            rows = tables.get("pairwise")
            ok = rows is not None and set(rows["id"]) <= set(ids) and len(rows) == meta["pairwise"]["kept"]
        else:
            out = tables.get("outputs")
            ok = (
                out is not None
                and "prompt_id" in out.column_names
                and list(out["prompt_id"]) == ids
                and all(len(t) == len(i) == len(f) == n for t, i, f in zip(out["texts"], out["ids"], out["finished"]))
            )
        if not ok:
            log.warning(
                "pairs: %s shard %d does not hold the rows of its %d prompts; building it again", kind, k, len(ids)
            )
            store.remove(store.shard_dir(entry, kind, k))
        return ok

    todo = [k for k in mine if not intact("shards", k)]
    if teacher_outputs is None:
        sample_shards(teacher, "teacher", cfg.n_teacher, [k for k in todo if not intact("teacher", k, cfg.n_teacher)])
    sample_shards(student, "student", cfg.n_student, [k for k in todo if not intact("student", k, cfg.n_student)])
    if not todo:
        return
    model, tok = backend.scoring_model(student)
    score_fn = (lambda outs, exs: scorer(outs, exs, task)) if scorer is not None else None
    student_tokenizer = tokenizer_fingerprint(tok)

    def encoded(
        texts: list[list[str]], ids: list[list[list[int]]] | None, finished: list[list[bool]] | None
    ) -> list[list[Sample]]:
        return [
            [
                Sample(
                    t,
                    tuple(ids[i][j]) if ids is not None else tuple(tok(t, add_special_tokens=False)["input_ids"]),
                    bool(finished[i][j]) if finished is not None else True,
                )
                for j, t in enumerate(ts)
            ]
            for i, ts in enumerate(texts)
        ]

    def edited(texts: list[list[str]]) -> list[list[str]]:
        return texts if post_edit is None else [post_edit(ts) for ts in texts]

    def logp_fn(ps: list[str], cs: list, finished: list[bool]) -> list[float]:  # training's layout and precision
        with scoring_precision(precision, model) as scoring_model:
            return score_completions(
                scoring_model,
                tok,
                ps,
                cs,
                max_prompt_tokens=max_prompt_tokens,
                max_completion_tokens=max_new_tokens,
                finished=finished,
                batch_size=cfg.batch_size,
                desc="reference log-probs",
            ).sum_logp

    for k in tqdm(todo, desc="pair shards", disable=len(todo) < 2):
        if teacher_outputs is not None:  # text only: tokenised once, and it ended
            t_texts = teacher_outputs[k * size : (k + 1) * size]
            t_meta = {
                "samples": sum(map(len, t_texts)),
                "tokens": 0,
                "seconds": 0.0,
                "empty": sum(not t.strip() for ts in t_texts for t in ts),
                "cut": 0,
            }
            t_samples = encoded(edited(t_texts), None, None)
        else:
            t_tables, t_meta = store.read_shard(entry, "teacher", k)
            t_out = t_tables["outputs"]
            # The teacher's generated ids serve the student when both tokenizers encode alike and no
            # edit changed the texts; else its texts are tokenised once by the student's tokenizer,
            # as a black-box teacher's are.
            same = set(t_meta.get("tokenizers", {})) == {student_tokenizer} and post_edit is None
            t_samples = encoded(edited(t_out["texts"]), t_out["ids"] if same else None, t_out["finished"])
        s_tables, s_meta = store.read_shard(entry, "student", k)
        s_out = s_tables["outputs"]
        t0 = time.perf_counter()
        tables, stats = build_rows(
            rows_of(k),
            t_samples,
            encoded(s_out["texts"], s_out["ids"], s_out["finished"]),
            listwise=listwise,
            has_reference=has_reference,
            filter_by_score=bool(cfg.filter_by_score),
            score_fn=score_fn,
            logp_fn=logp_fn,
            cut_samples=cfg.get("cut_samples", CUT_SAMPLES_DEFAULT),
        )
        stats |= {"teacher": t_meta, "student": s_meta, "rows_seconds": time.perf_counter() - t0}
        store.write_shard(entry, "shards", k, tables, stats)
    if scorer is not None:
        scorer.close()
    model = tok = None
    backend.release()
