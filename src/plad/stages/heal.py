"""The start of a student cut from its teacher (``model.student.init_from_teacher``), before copy
pretraining and SFT (``plad.stages.sft`` calls ``cut_student``): the teacher's pretrained start with
only the kept layers (evenly spaced, or the most influential on the validation prompts), then, with
``model.student.heal``, healed by logit distillation from that same pretrained teacher on task text
without labels (``plad.training.heal``).

The healed start is cached as its own model entry, ``<cache>/models/<family>-student_healed-<fp>``,
keyed by the cut, the heal settings, the teacher's source (and seed, when built from config), the
task's data and the run seed: the copy pretraining and the SFT of every setting of one seed start
from it, and a rerun, another loss or another SFT budget reuses it. Resumable as copy pretraining
is: the entry is written whole or not at all (``plad.cache.atomic_dir``), healing is seeded, so a
run killed while healing heals again from the start and writes the same weights."""

from __future__ import annotations

import json
import logging
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from omegaconf import DictConfig, OmegaConf

from plad.cache import atomic_dir, entry_dir, fingerprint, is_complete, stage_key
from plad.checks import InputError
from plad.tasks.base import Task

log = logging.getLogger("plad")
STATS = "heal_stats.json"
INFLUENCE_BATCH = 8  # validation prompts per forward pass when measuring block influence


@dataclass(frozen=True)
class StudentKey:
    """How ``plad.stages.sft`` keys the student's entries: its spec as keyed (``_keyed_spec``), the
    key parts only some configurations have (``_extra_keys``: the teacher's source, ...) and its seed."""

    spec: dict[str, Any]
    extra: list[dict[str, Any]]
    seed: int


def healed_entry(cfg: DictConfig, task: Task, cache: Path, key: StudentKey) -> Path:
    """Where the healed cut is cached: keyed like the student's copy-pretrained start without what
    only later steps use (copy pretraining, SFT, LoRA), plus the filled heal schedule."""
    from plad.models.student_init import heal_settings

    spec = {k: v for k, v in key.spec.items() if k not in ("sft", "lora", "pretrain")}
    spec["heal"] = OmegaConf.to_container(heal_settings(cfg.model.student), resolve=True)
    fp = stage_key(
        "models",
        "heal",
        spec,
        fingerprint(cfg.model.tokenizer, task.fingerprint()),
        task.fingerprint(),
        key.seed,
        cfg.sft_selection,
        cfg.task.max_prompt_tokens,
        *key.extra,
    )
    return entry_dir(cache, "models", f"{cfg.model.family}-student_healed-{fp}")  # not matched by *-student-*


def plain_ids(tok: Any, text: str, max_tokens: int) -> list[int]:
    """A text as a plain LM sequence: BOS (when the tokenizer has one) + its first tokens."""
    bos = [tok.bos_token_id] if tok.bos_token_id is not None else []
    return (bos + tok(text, add_special_tokens=False)["input_ids"])[:max_tokens]


def heal_texts(task: Task, tok: Any, data: Any, split: str, source: str, max_tokens: int) -> list[list[int]]:
    """Token sequences of ``split`` as ``source`` renders them, none with a reference: ``unlabeled``
    and ``train`` take each row's input text (``task.text_of``) as plain text; ``prompts`` takes its
    prompt as the model sees it in SFT (the chat template of an instruct model included). The
    validation split is rendered the same way to choose the checkpoint."""
    from plad.models.encoding import encode_prompt

    rows = _split(data, split)
    if source == "prompts":
        return [encode_prompt(tok, p, False, max_tokens) for p in rows["prompt"]]
    return [plain_ids(tok, task.text_of(row), max_tokens) for row in rows]


def _influence_batches(cfg: DictConfig, tok: Any, data: Any) -> list[Any]:
    """The validation prompts, as the model sees them, in batches: what block influence measures on."""
    from plad.models.encoding import encode_prompt
    from plad.training.heal import text_batches

    prompts = [encode_prompt(tok, p, False, cfg.task.max_prompt_tokens) for p in _split(data, "validation")["prompt"]]
    return text_batches(prompts, tok.pad_token_id, INFLUENCE_BATCH)


def _split(data: Any, name: str) -> Any:
    if name not in data or len(data[name]) == 0:
        raise InputError(f"model.student: healing and block_influence need texts of the {name} split, got none")
    return data[name]


def cut_student(
    cfg: DictConfig,
    task: Task,
    data: Any,
    cache: Path,
    run_dir: Path,
    key: StudentKey,
    teacher_start: Callable[[], tuple[Any, Any]],
) -> tuple[Any, Any, dict[str, Any]]:
    """The cut (and healed) student, its tokenizer and how it was made: ``select``, ``kept_layers``
    (teacher indices), each layer's ``block_influence`` when measured, and ``heal`` (the healing
    run's stats) when healed. ``teacher_start()``: the teacher's pretrained start and tokenizer."""
    from plad import distributed
    from plad.models.build import load_saved, save_model
    from plad.models.student_init import cut_from_teacher, heal_settings, init_spec, selector
    from plad.models.tokenizer import set_prompt_format
    from plad.training.heal import fit_heal

    spec, heal = cfg.model.student, heal_settings(cfg.model.student)
    path = healed_entry(cfg, task, cache, key) if heal is not None else None
    if path is not None and distributed.broadcast(is_complete(path)):
        log.info("student: reusing its healed start %s", path)
        model, tok = load_saved(path)
        return model.train(), tok, json.loads((path / STATS).read_text())
    teacher, tok = teacher_start()
    set_prompt_format(tok, task.chat_template)  # prompts encoded here as SFT will encode them
    influence = selector(init_spec(spec)) == "block_influence"
    model, info = cut_from_teacher(teacher, spec, _influence_batches(cfg, tok, data) if influence else None)
    log.info("student: layers %s of the teacher's %d (%s)", info["kept_layers"], info["teacher_layers"], info["select"])
    if heal is None:
        return model, tok, info
    train_split = "train" if heal.source == "train" else "unlabeled"
    train, validation = (
        heal_texts(task, tok, data, s, heal.source, cfg.task.max_prompt_tokens) for s in (train_split, "validation")
    )
    log.info("student: healing on %d %s texts for up to %d steps", len(train), heal.source, heal.max_steps)
    model, info["heal"] = fit_heal(cfg, model, teacher, heal, train, validation, tok.pad_token_id, run_dir, key.seed)
    if distributed.is_main():  # rank 0 writes the entry, the others wait for it
        with atomic_dir(path) as tmp:
            save_model(model, tok, tmp)
            (tmp / STATS).write_text(json.dumps(info, indent=2))
    distributed.barrier()
    return model.train(), tok, info
