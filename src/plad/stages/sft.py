"""Stages 2-3: the shared tokenizer, then the SFT'd teacher and initial student, cached under
``<cache>/models/<family>-<role>-<fp>``. The key covers the model spec, the tokenizer, the task,
the seed (init and data order), the SFT selection settings and the stage version (``plad.cache``).

The teacher is a fixed, given model (as the teacher LLM is in the paper): it is seeded by
``base_seed`` and shared by every run seed. The initial student is seeded by the run ``seed``, so
seeds vary the student's SFT init and data order, the pairs and the distillation.

Two options shape the paper's setting on models built from config. ``sft.train_examples`` is a
role's label budget: SFT sees the first N rows of the labeled train split (the teacher all of them,
the student few). ``pretrain`` gives a model what pretraining gives a real student, without a label:
before SFT it learns to copy the task's unlabeled texts ("Repeat: {text}" -> the text), the
in-context copying that a tiny model trained on a few hundred labels cannot discover by itself."""

from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import Any

from omegaconf import DictConfig, OmegaConf

from plad.cache import atomic_dir, entry_dir, fingerprint, is_complete, stage_key
from plad.checks import InputError
from plad.distributed import processes
from plad.models.ref import ModelRef
from plad.tasks.base import Task

log = logging.getLogger("plad")


def tokenizer(cfg: DictConfig, task: Task, data: Any, cache: Path) -> Any:
    """The tokenizer shared by built-from-config models, trained on the train split once per task."""
    from plad.distributed import main_first
    from plad.models.build import obtain_tokenizer

    return main_first(
        lambda: obtain_tokenizer(
            cfg.model.tokenizer,
            lambda: list(data["train"]["prompt"]) + list(data["train"]["reference"]),
            task.fingerprint(),
            cache,
        )
    )


def _seed(cfg: DictConfig, role: str) -> int:
    return int(cfg.base_seed if role == "teacher" else cfg.seed)


def _keyed_spec(cfg: DictConfig, role: str) -> dict[str, Any]:
    """The model spec as the cache key sees it: SFT's batch is the GLOBAL one (per-process batch x
    processes x accumulation), so 2 processes x 8 and 1 x 16 share an entry (the same math, see
    GuardedStepModule) and 2 x 16 does not (1-process keys are unchanged). ``lora`` counts only when
    ``r`` is set; ``gradient_checkpointing`` never does (it changes memory, not the result)."""
    from plad.models.student_init import selector

    spec = OmegaConf.to_container(cfg.model[role], resolve=True)
    spec.pop("gradient_checkpointing", None)  # the same math, the same weights
    spec.pop("post_edit", None)  # edits the teacher's outputs (pairs, evaluation), not its weights
    if not (spec.get("pretrain") or {}).get("max_steps"):
        spec.pop("pretrain", None)  # models without copy pretraining key as before the option existed
    if (spec.get("sft") or {}).get("train_examples", 0) is None:
        spec["sft"].pop("train_examples")  # all labels: keyed as before the option existed
    if spec.get("init_from_teacher") is None:
        spec.pop("init_from_teacher", None)  # students built from config key as before the option existed
    elif selector(spec["init_from_teacher"]) == "even":
        spec["init_from_teacher"].pop("select", None)  # the even cut keys as before `select` existed
    if not (spec.get("heal") or {}).get("max_steps"):
        spec.pop("heal", None)  # unhealed students key as before the heal option existed
    if (spec.get("lora") or {}).get("r") is None:
        spec.pop("lora", None)  # full fine-tuning keys as before the lora option existed
    sft = spec.get("sft") or {}
    if "monitor" in sft and sft["monitor"] is None:
        sft.pop("monitor")  # null = sft_selection.monitor, keyed below: keyed as before the field was listed
    factor = processes(cfg.trainer) * int(sft.pop("accumulate_grad_batches", 1))
    if factor > 1:
        sft["batch_size"] = sft["batch_size"] * factor
    return spec


def _extra_keys(cfg: DictConfig, role: str, task: Task) -> list[dict[str, Any]]:
    """Key parts only some configurations have (the others keep their keys): the prompt format for a
    pretrained tokenizer (a trained BPE has no chat template, so auto and none encode alike), the
    teacher a student is cut from (its source, or its spec and seed when built from config), and the
    content of pretrained weights and tokenizers (``source_key``: new weights behind a path rebuild)."""
    from plad.models.build import tokenizer_source
    from plad.models.tokenizer import source_key

    extra = []
    tokenizer = tokenizer_source(cfg.model, role)
    if tokenizer is not None:
        extra.append({"chat_template": task.chat_template})
    cut = role == "student" and cfg.model.student.get("init_from_teacher") is not None
    if cut:
        teacher = OmegaConf.to_container(cfg.model.teacher, resolve=True)
        source = {k: teacher.get(k) for k in ("pretrained", "gguf_file", "dtype", "config")}
        extra.append({"teacher": source, "teacher_seed": None if teacher.get("pretrained") else _seed(cfg, "teacher")})
    weights = cfg.model["teacher" if cut else role]
    contents = {
        "weights": source_key(weights.get("pretrained"), weights.get("gguf_file")),
        "tokenizer": source_key(*tokenizer) if tokenizer is not None else None,
    }
    if any(contents.values()):
        extra.append(contents)
    return extra


def _start(cfg: DictConfig, role: str, task: Task, data: Any, cache: Path) -> tuple[Any, Any]:
    """The model SFT starts from and its tokenizer: pretrained, or built (a student cut from the
    teacher's start starts from ``plad.stages.heal.cut_student``)."""
    from plad.models.build import build_model, obtain_pretrained

    spec = cfg.model[role]
    if spec.pretrained:
        return obtain_pretrained(spec, cache)
    tok = tokenizer(cfg, task, data, cache)
    return build_model(spec, tok, seed=_seed(cfg, role)), tok


def entry(cfg: DictConfig, role: str, task: Task, cache: Path) -> ModelRef:
    """Where the SFT'd ``role`` lives in the cache (computed from the config alone, no training)."""
    spec = cfg.model[role]
    tok_fp = fingerprint(cfg.model.tokenizer, task.fingerprint())
    seed = _seed(cfg, role)
    fp = stage_key(
        "models",
        _keyed_spec(cfg, role),
        tok_fp if not spec.pretrained else None,
        task.fingerprint(),
        seed,
        cfg.sft_selection,
        cfg.task.max_prompt_tokens,
        cfg.task.max_new_tokens,
        *_extra_keys(cfg, role, task),
    )
    path = entry_dir(cache, "models", f"{cfg.model.family}-{role}-{fp}")
    return ModelRef(path, fp, reused=is_complete(path))


def run(cfg: DictConfig, role: str, task: Task, data: Any, cache: Path, run_dir: Path) -> ModelRef:
    """The SFT'd teacher or initial student: from the cache, or built/loaded and fine-tuned here
    with its checkpoint chosen on the validation split (``sft_stats.json`` in the entry says how)."""
    from plad import distributed
    from plad.models.build import count_parameters, pretrain_spec, save_model
    from plad.models.lora import prepare, trainable_parameters
    from plad.models.tokenizer import set_prompt_format
    from plad.stages.heal import StudentKey, cut_student
    from plad.training.trainer import fit_sft

    ref = entry(cfg, role, task, cache)
    ref = ModelRef(ref.path, ref.fingerprint, reused=distributed.broadcast(ref.reused))  # all ranks train, or none
    if ref.reused:
        log.info("%s: reusing cached SFT model %s", role, ref.path)
        return ref
    spec, seed = cfg.model[role], _seed(cfg, role)
    cut = None
    if spec.get("init_from_teacher") is not None:  # its layers chosen, healed (cached): plad.stages.heal
        key = StudentKey(_keyed_spec(cfg, role), _extra_keys(cfg, role, task), seed)
        model, tok, cut = cut_student(
            cfg, task, data, cache, run_dir, key, lambda: _start(cfg, "teacher", task, data, cache)
        )
    else:
        model, tok = _start(cfg, role, task, data, cache)
    train = labeled(data["train"], spec.sft.get("train_examples"), f"model.{role}.sft.train_examples")
    # Saved with the tokenizer: every later stage encodes prompts as this SFT does.
    chat = set_prompt_format(tok, task.chat_template)
    stats: dict[str, Any] = {"role": role, "parameters": count_parameters(model), "seed": seed, "chat_template": chat}
    log.info(
        "%s: %s with %.2fM parameters, SFT on %d labeled examples for up to %d steps",
        role,
        type(model).__name__,
        stats["parameters"] / 1e6,
        len(train),
        spec.sft.max_steps,
    )
    stats["train_examples"] = len(train)
    if cut is not None:
        stats["init_from_teacher"] = cut
    if pretrain_spec(spec) is not None:
        model, stats["pretrain"] = pretrained(cfg, role, task, data, cache, run_dir, model, tok)
    if spec.sft.max_steps > 0:
        # LoRA: only the adapters train; save_model writes the merged model and the adapter alone.
        model = prepare(model, spec.get("lora"), bool(spec.get("gradient_checkpointing", False)), f"model.{role}")
        stats["trainable_parameters"] = trainable_parameters(model)
        model, fit_stats = fit_sft(
            cfg,
            model,
            tok,
            spec.sft,
            train,
            data.get("validation"),
            run_dir,
            role,
            seed=seed,
            quality=validation_quality(task, data.get("validation")),
        )
        stats.update(fit_stats)
        log.info(
            "%s: chose step %s of %s (%s %s)",
            role,
            stats["chosen_step"],
            stats["steps"],
            stats["selection"]["monitor"],
            stats["best_value"],
        )
    if distributed.is_main():  # one distributed fit; rank 0 writes the entry, the others wait for it
        with atomic_dir(ref.path) as tmp:
            save_model(model, tok, tmp)
            (tmp / "sft_stats.json").write_text(json.dumps(stats, indent=2))
    distributed.barrier()
    return ModelRef(ref.path, ref.fingerprint)


def pretrained_entry(cfg: DictConfig, role: str, task: Task, cache: Path) -> Path:
    """Where ``role``'s copy-pretrained start is cached: keyed like its SFT entry without what SFT
    alone uses (its schedule, label budget, LoRA), so the SFT settings of one seed share it."""
    from plad.models.build import pretrain_spec

    spec = {k: v for k, v in _keyed_spec(cfg, role).items() if k not in ("sft", "lora")}
    spec["pretrain"] = OmegaConf.to_container(pretrain_spec(cfg.model[role]), resolve=True)
    tok_fp = fingerprint(cfg.model.tokenizer, task.fingerprint())
    fp = stage_key(
        "models",
        "pretrain",
        spec,
        tok_fp if not cfg.model[role].pretrained else None,
        task.fingerprint(),
        _seed(cfg, role),
        cfg.sft_selection,
        cfg.task.max_prompt_tokens,
        *_extra_keys(cfg, role, task),
    )
    return entry_dir(cache, "models", f"{cfg.model.family}-{role}_pretrained-{fp}")  # not matched by *-student-*


def pretrained(
    cfg: DictConfig, role: str, task: Task, data: Any, cache: Path, run_dir: Path, model: Any, tok: Any
) -> tuple[Any, dict[str, Any]]:
    """``model`` after copy pretraining: from its cache entry, or pretrained here and cached."""
    from plad import distributed
    from plad.models.build import load_saved, pretrain_spec, save_model

    path = pretrained_entry(cfg, role, task, cache)
    if distributed.broadcast(is_complete(path)):
        log.info("%s: reusing its copy-pretrained start %s", role, path)
        return load_saved(path)[0].train(), json.loads((path / "pretrain_stats.json").read_text())
    model, stats = copy_pretrain(
        cfg, model, tok, pretrain_spec(cfg.model[role]), task, data, run_dir, role, _seed(cfg, role)
    )
    if distributed.is_main():
        with atomic_dir(path) as tmp:
            save_model(model, tok, tmp)
            (tmp / "pretrain_stats.json").write_text(json.dumps(stats, indent=2))
    distributed.barrier()
    return model, stats


def validation_quality(task: Task, validation: Any) -> Any:
    """outputs -> the task's mean quality on the validation rows (the val_quality monitor)."""
    if validation is None:
        return None
    rows = [dict(r) for r in validation]
    return lambda outputs: task.metrics(outputs, rows)["quality"]


def labeled(train: Any, n: int | None, field: str) -> Any:
    """The first ``n`` rows of the labeled train split (a label budget), or all of it."""
    if n is None:
        return train
    if n > len(train):
        raise InputError(f"{field}: expected at most the {len(train)} rows of the train split, got {n}")
    return train.select(range(n))


def copy_rows(task: Task, split: Any, template: str) -> Any:
    """Label-free copy examples: each text of ``split`` (the task's input, no reference) as prompt
    ``template`` and as its own target."""
    from datasets import Dataset

    texts = [task.text_of(row) for row in split]
    return Dataset.from_dict({"prompt": [template.replace("{text}", t) for t in texts], "reference": texts})


def copy_pretrain(
    cfg: DictConfig, model: Any, tok: Any, spec: DictConfig, task: Task, data: Any, run_dir: Path, role: str, seed: int
) -> tuple[Any, dict[str, Any]]:
    """Copy pretraining on the unlabeled split's texts, its checkpoint chosen on the validation
    split's texts (their references unused), targets as long as prompts may be."""
    from plad.training.trainer import fit_sft

    train, validation = (copy_rows(task, data[s], spec.template) for s in ("unlabeled", "validation"))
    log.info("%s: copy pretraining on %d unlabeled texts for up to %d steps", role, len(train), spec.max_steps)
    spec = OmegaConf.merge(spec, {"monitor": "val_loss"})  # copying has no task quality
    model, stats = fit_sft(
        cfg,
        model,
        tok,
        spec,
        train,
        validation,
        run_dir,
        f"{role}_pretrain",
        seed=seed,
        max_completion_tokens=cfg.task.max_prompt_tokens,
    )
    return model.train(), {**stats, "texts": len(train)}
