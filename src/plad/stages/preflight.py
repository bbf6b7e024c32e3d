"""The one preflight: every check of a run's inputs that must fail before any expensive stage, with
one line naming the field (``plad.checks.InputError``). ``preflight`` runs them in order:

1. plain values (``check_config``): sizes, rates and seeds by type and sign, the stage list;
2. every object the config names (task, loss, scorer, judge) imports and builds;
3. each package's own settings, checked by the package (``plad.pairs.build.check_pairs``, the
   backend, the model family, the trainer, SFT selection) and the evaluation block (``check_eval``);
4. the protocol's rules: an oracle loss needs the oracle switch, a white-box loss needs the teacher
   model (``check_white_box``), prompts and completions fit the models' positions.

The checks that need the loaded splits live with the stage that loads them (``plad.stages.data``)."""

from __future__ import annotations

from dataclasses import fields
from pathlib import Path
from typing import Any

from hydra.utils import get_class
from omegaconf import DictConfig, ListConfig, OmegaConf

from plad.backends.base import Sampling, check_sampling
from plad.checks import InputError, integer, number
from plad.distributed import check_trainer
from plad.stages import plan
from plad.stages.pairs import prompt_split
from plad.tasks.base import SPLITS, Task, post_edit_of

# Plain values every run has. Objects built with ``instantiate`` (task, loss, judge) check their own.
POSITIVE_INTS = [
    "distill.batch_size",
    "distill.val_check_interval",
    "distill.max_nonfinite",
    "task.max_prompt_tokens",
    "task.max_new_tokens",
]
NON_NEGATIVE_INTS = ["distill.max_steps", "distill.warmup_steps", "distill.val_size", "base_seed", "seed"]
POSITIVE_FLOATS = ["distill.lr"]
NON_NEGATIVE_FLOATS = ["distill.weight_decay"]
# eval.generation holds the settings of one sample per prompt: Sampling's fields but ``n``.
EVAL_GENERATE_KEYS = {f.name for f in fields(Sampling)} - {"n"}


def preflight(cfg: DictConfig) -> tuple[Task, type]:
    """Validate ``cfg``; returns the task object and the loss class."""
    from plad.backends import make_backend
    from plad.evaluation.decoding import decoding_settings
    from plad.losses.base import CalibrationLoss
    from plad.models.build import validate_family
    from plad.models.precision import canonical_precision
    from plad.pairs.build import check_pairs
    from plad.pairs.quality import check_scorer
    from plad.pairs.teacher_file import check_teacher_file
    from plad.training.modules import build_loss
    from plad.training.teacher_topk import check_teacher_logits
    from plad.training.trainer import check_monitor, check_sft_selection

    check_config(cfg)
    check_trainer(cfg.trainer)
    canonical_precision(cfg.trainer.get("precision"))
    task = build(cfg.task, "task")
    check_task_lrs(task)
    loss_cls = import_target(cfg.loss, "loss", CalibrationLoss)
    build_loss(cfg.loss)
    if loss_cls.needs_oracle_references and not oracle_references(cfg):
        raise InputError(
            f"pairs.oracle_references: {loss_cls.__name__} trains on the references of the unlabeled "
            "prompts (an oracle); expected true, got false"
        )
    check_pairs(cfg.pairs)
    check_pair_split(prompt_split(cfg), task)
    if cfg.pairs.get("teacher_outputs"):  # the teacher file's format, before rules that mention it
        check_teacher_file(cfg.pairs.teacher_outputs)
    if cfg.pairs.get("scorer") is not None:
        import_target(cfg.pairs.scorer, "pairs.scorer")
    check_scorer(cfg.pairs)
    validate_family(cfg.model)
    check_positions(cfg)
    check_lora(cfg)  # distill.reference against the student's lora
    make_backend(cfg.get("generation")).check(cfg.model)  # vLLM missing or no GPU: one line, now
    check_white_box(cfg, loss_cls)
    post_edit_of(task, cfg.model.teacher.get("post_edit"))
    check_teacher_logits(cfg.distill.get("teacher_logits", "online"), cfg.distill.get("topk", 20))
    check_on_policy(cfg, loss_cls)
    check_sft_selection(cfg.sft_selection)
    for role in ("teacher", "student"):  # a role's own checkpoint choice and label budget
        sft = cfg.model[role].get("sft") or {}
        if sft.get("monitor") is not None:
            check_monitor(sft.monitor, f"model.{role}.sft.monitor")
        budget = sft.get("train_examples")
        if budget is not None and cfg.task.get("source") is None and budget > cfg.task.n_train:
            raise InputError(
                f"model.{role}.sft.train_examples: expected at most task.n_train ({cfg.task.n_train}), got {budget}"
            )
    check_eval(cfg.eval, task)
    decoding_settings(OmegaConf.to_container(cfg.eval, resolve=True))
    if cfg.get("judge") is not None:
        import_target(cfg.judge, "judge")
    return task, loss_cls


def check_pair_split(split: Any, task: Task) -> None:
    """``pairs.split`` names one of the task's splits of prompts used without labels: the pairs must
    never be built on an evaluation split (validation, test, ood, ...)."""
    if split not in task.pair_splits:
        raise InputError(
            f"pairs.split: expected one of {list(task.pair_splits)} (prompts used without labels; "
            f"an evaluation split never feeds training), got {split!r}"
        )


def check_task_lrs(task: Task) -> None:
    """Every key of ``task.lrs`` names a loss config or is ``default`` (a misspelled one would silently
    not apply): the loss group of the running Hydra app, else the project's configs/loss."""
    from hydra.core.global_hydra import GlobalHydra

    if not task.lrs:
        return
    if GlobalHydra.instance().is_initialized():
        known = set(GlobalHydra.instance().config_loader().get_group_options("loss"))
    else:
        from plad.resolvers import config_dir

        known = {p.stem for p in (Path(config_dir()) / "loss").glob("*.yaml")}
    unknown = sorted(set(task.lrs) - known - {"default"})
    if unknown:
        raise InputError(f"task.lrs: expected names of configs/loss/*.yaml or 'default', got unknown {unknown}")


def _get(cfg: DictConfig, dotted: str) -> Any:
    node = cfg
    for part in dotted.split("."):
        if part not in node:
            raise InputError(f"{dotted}: missing from the config")
        node = node[part]
    return node


def check_config(cfg: DictConfig) -> None:
    """The plain values above, the stage list, and the checkpoint ``ckpt_path`` names: cheap, first."""
    for key in POSITIVE_INTS + NON_NEGATIVE_INTS:
        integer(_get(cfg, key), key, minimum=1 if key in POSITIVE_INTS else 0)
    for key in POSITIVE_FLOATS + NON_NEGATIVE_FLOATS:
        number(_get(cfg, key), key, positive=key in POSITIVE_FLOATS)
    plan.check_stages(list(cfg.stages))  # inputs of stages left out are checked against the cache later
    if cfg.ckpt_path not in (None, "last"):
        from plad.training.resume import resolve_ckpt_path

        resolve_ckpt_path(cfg)  # a missing checkpoint file or run directory fails here, in one line


def import_target(node: Any, field: str, base: type | None = None) -> type:
    """The class ``node._target_`` names; a typo fails here, not as a traceback from ``instantiate``."""
    target = node.get("_target_") if node is not None else None
    try:
        cls = get_class(str(target))
    except Exception as e:  # noqa: BLE001  (ImportError, AttributeError, ValueError alike)
        raise InputError(f"{field}._target_: expected an importable class, got {target!r}") from e
    if base is not None and not (isinstance(cls, type) and issubclass(cls, base)):
        raise InputError(f"{field}._target_: expected a subclass of {base.__name__}, got {target!r}")
    return cls


def build(node: DictConfig, field: str) -> Any:
    """``instantiate(node)``, with an unknown or missing argument named in one line (a ValueError the
    object raises itself passes through unchanged)."""
    from hydra.errors import InstantiationException
    from hydra.utils import instantiate

    cls = import_target(node, field)
    try:
        return instantiate(node)
    except InstantiationException as e:
        if isinstance(e.__cause__, TypeError):
            raise InputError(f"{field}: expected the arguments of {cls.__name__}, got {e.__cause__}") from e
        raise


def check_eval(ev: DictConfig, task: Task | None = None) -> None:
    """The evaluation block (``eval``): its splits among the task's, sizes, and sampling settings."""
    splits = [*SPLITS, *(task.extra_splits if task is not None else ())]  # anonymization adds ood
    if ev.get("split", "test") not in splits:
        raise InputError(f"eval.split: expected one of {splits}, got {ev.get('split')!r}")
    extra = ev.get("extra_splits") or []
    if not isinstance(extra, (list, ListConfig)) or any(s not in splits or s == ev.get("split", "test") for s in extra):
        raise InputError(
            f"eval.extra_splits: expected a list of splits among {splits} other than eval.split, "
            f"got {OmegaConf.to_container(extra) if isinstance(extra, ListConfig) else extra!r}"
        )
    integer(ev.get("batch_size", 16), "eval.batch_size")
    if ev.get("max_examples") is not None:
        integer(ev.max_examples, "eval.max_examples")
    gen = ev.get("generation") or {}
    unknown = sorted(set(gen) - EVAL_GENERATE_KEYS)
    if unknown:
        raise InputError(f"eval.generation: expected keys among {sorted(EVAL_GENERATE_KEYS)}, got {unknown}")
    for key in ("max_new_tokens", "max_prompt_tokens"):
        if key in gen:
            integer(gen[key], f"eval.generation.{key}")
    check_sampling(gen, "eval.generation")
    if ev.get("decoding") == "rerank":
        check_sampling(ev.rerank, "eval.rerank")
    cal = ev.get("calibration") or {}
    if cal.get("enabled", False):
        integer(cal.get("n_prompts", 1), "eval.calibration.n_prompts")
        integer(cal.get("k", 8), "eval.calibration.k", minimum=2)  # a ranking needs two candidates
        if cal.get("max_new_tokens") is not None:
            integer(cal.max_new_tokens, "eval.calibration.max_new_tokens")
        check_sampling(cal, "eval.calibration")
        from plad.evaluation.calibration import check_calibration_systems

        check_calibration_systems(cal.get("systems"))
    if "bootstrap" in ev:
        integer(ev.bootstrap.get("n", 1000), "eval.bootstrap.n")


def check_positions(cfg: DictConfig) -> None:
    """A prompt and its completion must fit the positions each model was built for: past them a
    model with learned positions crashes mid-SFT and one with rotary positions runs outside its
    trained range. Copy pretraining's completions are whole prompts."""
    from plad.models.build import max_positions, pretrain_spec

    prompt, new = cfg.task.max_prompt_tokens, cfg.task.max_new_tokens
    for role in ("teacher", "student"):
        limit = max_positions(cfg.model, role)
        completion = max(new, prompt) if pretrain_spec(cfg.model[role]) is not None else new
        if limit is not None and prompt + completion > limit:
            what = (
                f"task.max_prompt_tokens + task.max_new_tokens ({prompt} + {new})"
                if completion == new
                else f"2 x task.max_prompt_tokens ({prompt} + {prompt}, model.{role}.pretrain copies whole prompts)"
            )
            raise InputError(
                f"task.max_prompt_tokens: expected {what} <= {limit}, the positions of "
                f"model.{role}, got {prompt + completion}"
            )


def check_lora(cfg: DictConfig) -> None:
    """``distill.reference: adapters_off`` needs a LoRA student."""
    from plad.models.lora import validate_reference

    validate_reference(cfg.distill.get("reference", "cached"), cfg.model.student.get("lora"))


def check_on_policy(cfg: DictConfig, loss_cls: type) -> None:
    """``distill.on_policy``: valid values, a loss a fresh student sample can feed, and a backend
    that samples the in-memory student (plad.training.on_policy says why)."""
    from plad.training.on_policy import FIELD, OnPolicy, replaced_column

    setting = OnPolicy.from_config(cfg.distill.get("on_policy"))
    if setting is None:
        return
    replaced_column(setting, loss_cls, cfg.distill.get("teacher_logits", "online"))
    backend = (cfg.get("generation") or {}).get("_target_", "plad.backends.hf.HFBackend")
    if backend != "plad.backends.hf.HFBackend":
        raise InputError(
            f"{FIELD}: samples the student being trained in this process; expected generation=hf, got {backend}"
        )


def check_white_box(cfg: DictConfig, loss_cls: type) -> None:
    """A loss that reads the teacher's logits (kd) needs the teacher model itself, sharing the
    student's tokenizer; both are known from the config, long before distillation would find out."""
    if not getattr(loss_cls, "needs_teacher", False):
        return
    if cfg.pairs.get("teacher_outputs"):
        raise InputError(
            f"pairs.teacher_outputs: {loss_cls.__name__} reads the teacher model's token "
            "distributions (white-box), which a file of texts lacks; expected null, "
            f"got {cfg.pairs.teacher_outputs!r}"
        )
    if cfg.model.teacher.get("post_edit") is not None:
        raise InputError(
            f"model.teacher.post_edit: {loss_cls.__name__} reads the teacher model's token "
            "distributions (white-box), which an edit of its texts does not change; expected null, "
            f"got {cfg.model.teacher.post_edit!r}"
        )
    from plad.models.build import tokenizer_source

    teacher, student = tokenizer_source(cfg.model, "teacher"), tokenizer_source(cfg.model, "student")
    if teacher == student:
        return
    if teacher is None or student is None:  # a trained BPE never equals a pretrained vocabulary
        field = "model.tokenizer.pretrained" if student is None else "model.teacher.pretrained"
        raise InputError(
            f"{field}: {loss_cls.__name__} needs teacher and student to share a tokenizer; "
            f"expected one source, got teacher: {_source(teacher)}, student: {_source(student)}"
        )
    from plad.models.tokenizer import load_tokenizer

    try:
        same = load_tokenizer(*teacher).get_vocab() == load_tokenizer(*student).get_vocab()
    except OSError:  # e.g. a hub name not in the local cache: the SFT stage reports it
        return
    if not same:
        raise InputError(
            f"model.student.pretrained: {loss_cls.__name__} needs teacher and student to share a "
            f"tokenizer; expected the vocabulary of {teacher[0]!r}, got a different one in {student[0]!r}"
        )


def _source(source: tuple[str, str | None] | None) -> str:
    if source is None:
        return "a BPE trained on the task"
    return repr(source[0]) + (f" ({source[1]})" if source[1] else "")


def oracle_references(cfg: DictConfig) -> bool:
    """Whether the run explicitly lets references of the unlabeled prompts into the pair stage."""
    return bool(cfg.pairs.get("oracle_references", False))


def is_oracle_run(cfg: DictConfig, loss_cls: type) -> bool:
    """An oracle run sees labels PLaD never sees; reports must mark it."""
    return oracle_references(cfg) or bool(loss_cls.needs_oracle_references)
