"""Checks of the run's inputs beyond plain config values, each failing with one line naming the field:
the classes a config names, sampling settings, the evaluation block, the black-box teacher file and
the white-box loss rules. ``check_data`` is the one check that needs the loaded splits: the teacher
file must answer exactly the unlabeled prompts."""
from __future__ import annotations

from typing import Any

from hydra.utils import get_class
from omegaconf import DictConfig, ListConfig, OmegaConf

from plad.tasks.base import SPLITS
from plad.checks import InputError

GENERATE_KEYS = {"max_new_tokens", "min_new_tokens", "do_sample", "temperature", "top_p", "top_k", "seed",
                 "max_prompt_tokens"}
SYSTEMS = ("teacher", "student_init", "student")
# Splits a task may add to the four: ood = anonymization's shipped out-of-distribution test set. The
# data stage checks that the loaded task has the split (summarization with eval.split=ood fails there).
EVAL_SPLITS = SPLITS  # a task adds its own (``extra_splits``: anonymization's hand-written "ood")


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


def _number(value: Any, field: str, ok: bool, expected: str) -> None:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not ok:
        raise InputError(f"{field}: expected {expected}, got {value!r}")


def _positive_int(value: Any, field: str, minimum: int = 1) -> None:
    if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
        raise InputError(f"{field}: expected an integer >= {minimum}, got {value!r}")


def check_sampling(node: Any, field: str) -> None:
    """temperature > 0, top_p in (0, 1], top_k >= 0: what ``plad.generation.generate`` accepts."""
    for key, test, expected in (("temperature", lambda v: v > 0, "a number > 0"),
                                ("top_p", lambda v: 0 < v <= 1, "a number in (0, 1]")):
        if key in node:
            v = node[key]
            _number(v, f"{field}.{key}", isinstance(v, (int, float)) and test(v), expected)
    if "top_k" in node:
        _positive_int(node.top_k, f"{field}.top_k", minimum=0)
    if "do_sample" in node and not isinstance(node.do_sample, bool):
        raise InputError(f"{field}.do_sample: expected true or false, got {node.do_sample!r}")


def check_eval(ev: DictConfig, task: Any = None) -> None:
    splits = [*EVAL_SPLITS, *getattr(task, "extra_splits", ())]
    if ev.get("split", "test") not in splits:
        raise InputError(f"eval.split: expected one of {splits}, got {ev.get('split')!r}")
    extra = ev.get("extra_splits") or []
    if not isinstance(extra, (list, ListConfig)) or any(s not in splits or s == ev.get("split", "test") for s in extra):
        raise InputError(f"eval.extra_splits: expected a list of splits among {splits} other than eval.split, "
                         f"got {OmegaConf.to_container(extra) if isinstance(extra, ListConfig) else extra!r}")
    _positive_int(ev.get("batch_size", 16), "eval.batch_size")
    if ev.get("max_examples") is not None:
        _positive_int(ev.max_examples, "eval.max_examples")
    gen = ev.get("generation") or {}
    unknown = sorted(set(gen) - GENERATE_KEYS)
    if unknown:
        raise InputError(f"eval.generation: expected keys among {sorted(GENERATE_KEYS)}, got {unknown}")
    for key in ("max_new_tokens", "max_prompt_tokens"):
        if key in gen:
            _positive_int(gen[key], f"eval.generation.{key}")
    check_sampling(gen, "eval.generation")
    if ev.get("decoding") == "rerank":
        check_sampling(ev.rerank, "eval.rerank")
    cal = ev.get("calibration") or {}
    if cal.get("enabled", False):
        _positive_int(cal.get("n_prompts", 1), "eval.calibration.n_prompts")
        _positive_int(cal.get("k", 8), "eval.calibration.k", minimum=2)  # a ranking needs two candidates
        if cal.get("max_new_tokens") is not None:
            _positive_int(cal.max_new_tokens, "eval.calibration.max_new_tokens")
        check_sampling(cal, "eval.calibration")
        from plad.evaluation.evaluate import check_calibration_systems

        check_calibration_systems(cal.get("systems"))
    if "bootstrap" in ev:
        _positive_int(ev.bootstrap.get("n", 1000), "eval.bootstrap.n")


def check_pairs(pairs: DictConfig) -> None:
    """Sizes and sampling of the pair stage, and the black-box teacher file's own format."""
    for key in ("n_teacher", "n_student", "shard_size", "batch_size"):
        _positive_int(pairs[key], f"pairs.{key}")
    for role in ("teacher", "student"):
        check_sampling(pairs[role], f"pairs.{role}")
    from plad.pairs.rows import CUT_SAMPLES_DEFAULT, check_cut_samples

    check_cut_samples(pairs.get("cut_samples", CUT_SAMPLES_DEFAULT))
    if pairs.get("teacher_outputs"):
        from plad.pairs.teacher_file import check_teacher_file

        check_teacher_file(pairs.teacher_outputs)


def check_white_box(cfg: DictConfig, loss_cls: type) -> None:
    """A loss that reads the teacher's logits (kd) needs the teacher model itself, sharing the
    student's tokenizer; both are known from the config, long before distillation would find out."""
    if not getattr(loss_cls, "needs_teacher", False):
        return
    if cfg.pairs.get("teacher_outputs"):
        raise InputError(f"pairs.teacher_outputs: {loss_cls.__name__} reads the teacher model's token "
                         "distributions (white-box), which a file of texts lacks; expected null, "
                         f"got {cfg.pairs.teacher_outputs!r}")
    from plad.models.build import tokenizer_source

    teacher, student = tokenizer_source(cfg.model, "teacher"), tokenizer_source(cfg.model, "student")
    if teacher == student:
        return
    if teacher is None or student is None:  # a trained BPE never equals a pretrained vocabulary
        field = "model.tokenizer.pretrained" if student is None else "model.teacher.pretrained"
        raise InputError(f"{field}: {loss_cls.__name__} needs teacher and student to share a tokenizer; "
                         f"expected one source, got teacher: {_source(teacher)}, student: {_source(student)}")
    from plad.models.tokenizer import load_tokenizer

    try:
        same = load_tokenizer(*teacher).get_vocab() == load_tokenizer(*student).get_vocab()
    except OSError:  # e.g. a hub name not in the local cache: the SFT stage reports it
        return
    if not same:
        raise InputError(f"model.student.pretrained: {loss_cls.__name__} needs teacher and student to share a "
                         f"tokenizer; expected the vocabulary of {teacher[0]!r}, got a different one in {student[0]!r}")


def _source(source: tuple[str, str | None] | None) -> str:
    if source is None:
        return "a BPE trained on the task"
    return repr(source[0]) + (f" ({source[1]})" if source[1] else "")


def check_data(cfg: DictConfig, data: Any) -> None:
    """Checks that need the loaded splits (cheap; run before they are cached and before SFT)."""
    from plad.models.build import pretrain_spec

    for role in ("teacher", "student"):  # a label budget the train split can meet
        budget = (cfg.model[role].get("sft") or {}).get("train_examples")
        if budget is not None and budget > len(data["train"]):
            raise InputError(f"model.{role}.sft.train_examples: expected at most the {len(data['train'])} rows "
                             f"of the train split, got {budget}")
    readers = [f"model.{r}.pretrain" for r in ("teacher", "student") if pretrain_spec(cfg.model[r]) is not None]
    readers += ["pairs"] if "pairs" in cfg.stages else []
    if readers and len(data["unlabeled"]) == 0:
        raise InputError(f"task.n_unlabeled: expected unlabeled prompts ({' and '.join(readers)} read them), "
                         "got an empty unlabeled split")
    path = cfg.pairs.get("teacher_outputs")
    if path and "pairs" in cfg.stages:
        from plad.pairs.teacher_file import read_teacher_outputs

        unlabeled = data["unlabeled"]
        read_teacher_outputs(path, [str(i) for i in unlabeled["id"]], list(unlabeled["prompt"]))
