"""Students initialised from their teacher, as DistilBERT was: the teacher's architecture with a
subset of its decoder layers, every kept weight copied (embeddings, final norm, LM head, and layer
``idx[i]`` of the teacher as layer ``i``). The student shares the teacher's tokenizer and starts
from what the teacher knows instead of a random init that a few hundred CPU steps cannot fix.

Spec: ``model.student.init_from_teacher: {layers: k, select: even | block_influence}`` keeps k of
the teacher's n layers; ``null`` builds the student as before. ``even`` (the default) spaces them
evenly (``kept_layers``); ``block_influence`` keeps the layers that change their input the most on
task text (ShortGPT's Block Influence, Men et al. 2024: ``block_influence``, ``influential_layers``).
Both keep the first and the last layer. ``model.student.heal`` (``heal_spec``) distills the
teacher's logits into the cut before SFT (``plad.training.heal``, the stage in ``plad.stages.heal``).
"""

from __future__ import annotations

import copy
import re
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

import torch
from omegaconf import DictConfig
from transformers import PreTrainedModel
from transformers.initialization import no_init_weights

from plad.checks import InputError, integer, number

FIELD = "init_from_teacher"
PER_LAYER_LISTS = ("layer_types", "attention_layers")  # config lists with one entry per layer
SELECTORS = ("even", "block_influence")
HEAL_FIELD = "heal"
HEAL_KEYS = ("max_steps", "batch_size", "lr", "warmup_steps", "weight_decay", "temperature", "source")
HEAL_SOURCES = ("unlabeled", "prompts", "train")  # plad.stages.heal.heal_texts says what each holds


def init_spec(spec: DictConfig | Mapping[str, Any]) -> Any:
    return spec.get(FIELD)


def selector(init: Mapping[str, Any]) -> str:
    return init.get("select") or "even"


def heal_spec(spec: DictConfig | Mapping[str, Any]) -> Any:
    """The student's heal settings, or None when it is off (null, or max_steps 0)."""
    heal = spec.get(HEAL_FIELD)
    return heal if heal is not None and heal.get("max_steps", 0) != 0 else None


def _teacher_layers(teacher_spec: DictConfig | Mapping[str, Any]) -> int | None:
    """The teacher's layer count when its config is in the YAML (a pretrained one is read at build)."""
    config = teacher_spec.get("config") or {}
    if teacher_spec.get("pretrained"):
        return None
    n = config.get("num_hidden_layers", config.get("num_layers"))
    return n if isinstance(n, int) else None


def validate_heal_spec(spec: DictConfig, teacher_spec: DictConfig, field: str = "model.student") -> None:
    """``{field}.heal``: null or a mapping with max_steps and keys among HEAL_KEYS, on a student cut
    from its teacher (healing distills the teacher it was cut from; the teacher has none)."""
    teacher_field = f"{field.rsplit('.', 1)[0]}.teacher" if "." in field else "teacher"
    if teacher_spec.get(HEAL_FIELD) is not None:
        raise InputError(
            f"{teacher_field}.{HEAL_FIELD}: expected null (a student option), got {teacher_spec.get(HEAL_FIELD)!r}"
        )
    heal = spec.get(HEAL_FIELD)
    if heal is None:
        return
    if not isinstance(heal, Mapping) or "max_steps" not in heal or not set(heal) <= set(HEAL_KEYS):
        got = sorted(heal) if isinstance(heal, Mapping) else heal
        raise InputError(
            f"{field}.{HEAL_FIELD}: expected null or max_steps and keys among {list(HEAL_KEYS)}, got {got!r}"
        )
    integer(heal["max_steps"], f"{field}.{HEAL_FIELD}.max_steps", minimum=0)
    if heal["max_steps"] == 0:
        return  # off, like pretrain's max_steps 0
    if init_spec(spec) is None:
        raise InputError(f"{field}.{HEAL_FIELD}: expected null without {FIELD} (it heals a cut student), got {heal!r}")
    for key, check in [
        ("batch_size", integer),
        ("lr", lambda v, f: number(v, f, positive=True)),
        ("warmup_steps", lambda v, f: integer(v, f, minimum=0)),
        ("weight_decay", number),
        ("temperature", lambda v, f: number(v, f, positive=True)),
    ]:
        if key in heal:
            check(heal[key], f"{field}.{HEAL_FIELD}.{key}")
    if heal.get("source", "unlabeled") not in HEAL_SOURCES:
        raise InputError(
            f"{field}.{HEAL_FIELD}.source: expected one of {list(HEAL_SOURCES)}, got {heal.get('source')!r}"
        )


def validate_init_spec(spec: DictConfig, teacher_spec: DictConfig, field: str = "model.student") -> None:
    """``{field}.init_from_teacher``: null or ``{layers: k, select: even | block_influence}`` with
    1 <= k <= the teacher's layers; and ``{field}.heal`` (``validate_heal_spec``)."""
    validate_heal_spec(spec, teacher_spec, field)
    init = init_spec(spec)
    if init is None:
        return
    if not isinstance(init, Mapping) or "layers" not in init or not set(init) <= {"layers", "select"}:
        raise InputError(
            f"{field}.{FIELD}: expected null or {{layers: <positive integer>, select: {' | '.join(SELECTORS)}}}, "
            f"got {init!r}"
        )
    layers = init["layers"]
    integer(layers, f"{field}.{FIELD}.layers")
    if init.get("select") is not None and init["select"] not in SELECTORS:
        raise InputError(f"{field}.{FIELD}.select: expected one of {list(SELECTORS)}, got {init['select']!r}")
    if spec.get("pretrained"):
        raise InputError(
            f"{field}.pretrained: expected null with {FIELD} (the weights come from the teacher), "
            f"got {spec.pretrained!r}"
        )
    n = _teacher_layers(teacher_spec)
    if n is not None and layers > n:
        raise InputError(f"{field}.{FIELD}.layers: expected at most {n} (the teacher's layers), got {layers}")


def kept_layers(n_layers: int, k: int, field: str = f"model.student.{FIELD}.layers") -> list[int]:
    """``k`` of ``n_layers`` indices, evenly spaced, first and last kept (k == n keeps them all)."""
    if isinstance(k, bool) or not isinstance(k, int) or not 1 <= k <= n_layers:
        raise InputError(f"{field}: expected an integer in [1, {n_layers}] (the teacher's layers), got {k!r}")
    if k == 1:
        return [0]
    return [round(i * (n_layers - 1) / (k - 1)) for i in range(k)]


def influential_layers(influence: Sequence[float], k: int, field: str = f"model.student.{FIELD}.layers") -> list[int]:
    """The first and last layer, and the ``k - 2`` others with the largest Block Influence, in their
    original order (ties: the earlier layer). The ends are kept whatever their score: the first
    writes the embeddings into the residual stream every later layer reads, the last writes what
    the final norm and the LM head read (ShortGPT finds both among the most influential anyway),
    and ``even`` keeps them too, so the two selectors differ only in the middle layers they keep."""
    n = len(influence)
    kept_layers(n, k, field)  # the same range check
    if k <= 2:
        return kept_layers(n, k, field)
    middle = sorted(range(1, n - 1), key=lambda i: (-influence[i], i))[: k - 2]
    return sorted([0, n - 1, *middle])


@torch.no_grad()
def block_influence(model: PreTrainedModel, batches: Iterable[Mapping[str, torch.Tensor]]) -> list[float]:
    """ShortGPT's Block Influence of each decoder layer: ``1 - mean cos(h_in, h_out)`` over the real
    (unpadded) tokens of ``batches`` (``input_ids`` + ``attention_mask``), where ``h_in`` and
    ``h_out`` are the hidden states entering and leaving the layer. A layer that barely changes its
    input (a near-identity map of the residual stream) scores near 0 and is the cheapest to drop."""
    layers = _layers(model)
    sums = torch.zeros(len(layers), dtype=torch.float64)
    count = 0
    mask: torch.Tensor | None = None

    def hook(i: int):
        def record(module: Any, args: tuple, kwargs: dict, output: Any) -> None:
            h_in = args[0] if args else kwargs["hidden_states"]
            h_out = output[0] if isinstance(output, tuple) else output
            cos = torch.nn.functional.cosine_similarity(h_in.double(), h_out.double(), dim=-1)
            sums[i] += cos[mask].sum().cpu()

        return record

    handles = [layer.register_forward_hook(hook(i), with_kwargs=True) for i, layer in enumerate(layers)]
    was_training = model.training
    try:
        model.eval()
        for batch in batches:
            mask = batch["attention_mask"].bool()
            model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"])
            count += int(mask.sum())
    finally:
        for h in handles:
            h.remove()
        model.train(was_training)
    if count == 0:
        raise InputError(f"model.student.{FIELD}.select: block_influence needs at least one token of text, got none")
    return [float(1.0 - s / count) for s in sums]


def _layer_stack(model: PreTrainedModel) -> str:
    """State-dict prefix of the decoder's layer list (``model.layers``, ``transformer.h``, ...)."""
    n = model.config.num_hidden_layers
    stacks = [
        name
        for name, module in model.named_modules()
        if isinstance(module, torch.nn.ModuleList) and len(module) == n and name.split(".")[-1] in ("layers", "h")
    ]
    if getattr(model.config, "is_encoder_decoder", False) or len(stacks) != 1:
        raise InputError(
            f"model.student.{FIELD}: expected a decoder-only teacher with one layer stack, got {type(model).__name__}"
        )
    return stacks[0]


def _layers(model: PreTrainedModel) -> torch.nn.ModuleList:
    return model.get_submodule(_layer_stack(model))


def drop_layers(model: PreTrainedModel, keep: Sequence[int]) -> PreTrainedModel:
    """A new model of ``model``'s class with only layers ``keep`` (in that order); all other weights copied."""
    prefix, n = _layer_stack(model), model.config.num_hidden_layers
    config = copy.deepcopy(model.config)
    config.num_hidden_layers = len(keep)
    for name in PER_LAYER_LISTS:
        value = getattr(config, name, None)
        if isinstance(value, list) and len(value) == n:
            setattr(config, name, [value[j] for j in keep])
    pattern = re.compile(rf"^{re.escape(prefix)}\.(\d+)\.(.+)$")
    new_index = {j: i for i, j in enumerate(keep)}
    state = {}
    for key, value in model.state_dict().items():
        match = pattern.match(key)
        if match is None:
            state[key] = value
        elif int(match[1]) in new_index:
            state[f"{prefix}.{new_index[int(match[1])]}.{match[2]}"] = value
    with no_init_weights():  # every weight is overwritten right away
        student = type(model)(config)
    student.load_state_dict(state, strict=True)
    student.tie_weights()
    student.generation_config = copy.deepcopy(model.generation_config)
    return student.to(model.dtype).eval()


def cut_from_teacher(
    teacher: PreTrainedModel,
    spec: DictConfig | Mapping[str, Any],
    batches: Iterable[Mapping[str, torch.Tensor]] | None = None,
) -> tuple[PreTrainedModel, dict[str, Any]]:
    """The student ``spec.init_from_teacher`` describes, cut from ``teacher``, and how it was chosen
    (``select``, ``kept_layers`` and, for block_influence, every layer's score). ``batches``: the
    texts block_influence measures on (unused by even)."""
    init = init_spec(spec)
    n, k, select = teacher.config.num_hidden_layers, init["layers"], selector(init)
    info: dict[str, Any] = {"select": select, "teacher_layers": n}
    if select == "block_influence":
        if batches is None:
            raise InputError(f"model.student.{FIELD}.select: block_influence needs texts to measure on, got none")
        info["block_influence"] = block_influence(teacher, batches)
        keep = influential_layers(info["block_influence"], k)
    else:
        keep = kept_layers(n, k)
    info["kept_layers"] = keep
    return drop_layers(teacher, keep), info


def student_from_teacher(
    teacher: PreTrainedModel,
    spec: DictConfig | Mapping[str, Any],
    batches: Iterable[Mapping[str, torch.Tensor]] | None = None,
) -> PreTrainedModel:
    """The student ``spec.init_from_teacher`` describes, cut from ``teacher``."""
    return cut_from_teacher(teacher, spec, batches)[0]


def heal_settings(spec: DictConfig) -> DictConfig | None:
    """The student's heal schedule with sft's batch size, lr, warmup and weight decay where it sets
    none (so ``debug=fast`` shrinks it with SFT), temperature 1 and the unlabeled texts by default;
    None when healing is off. What the healed entry is keyed by."""
    from omegaconf import OmegaConf

    heal = heal_spec(spec)
    if heal is None:
        return None
    sft = spec.get("sft") or {}
    filled = {k: sft[k] for k in ("batch_size", "lr", "warmup_steps", "weight_decay") if k in sft}
    filled |= {"temperature": 1.0, "source": "unlabeled"}
    return OmegaConf.create(filled | OmegaConf.to_container(OmegaConf.create(heal), resolve=True))
