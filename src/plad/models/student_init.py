"""Students initialised from their teacher, as DistilBERT was: the teacher's architecture with a
subset of its decoder layers, every kept weight copied (embeddings, final norm, LM head, and layer
``idx[i]`` of the teacher as layer ``i``). The student shares the teacher's tokenizer and starts
from what the teacher knows instead of a random init that a few hundred CPU steps cannot fix.

Spec: ``model.student.init_from_teacher: {layers: k}`` keeps k of the teacher's n layers, evenly
spaced with the first and last included (``kept_layers``); ``null`` builds the student as before.
"""

from __future__ import annotations

import copy
import re
from collections.abc import Mapping, Sequence
from typing import Any

import torch
from omegaconf import DictConfig
from transformers import PreTrainedModel
from transformers.initialization import no_init_weights

from plad.checks import InputError, integer

FIELD = "init_from_teacher"
PER_LAYER_LISTS = ("layer_types", "attention_layers")  # config lists with one entry per layer


def init_spec(spec: DictConfig | Mapping[str, Any]) -> Any:
    return spec.get(FIELD)


def _teacher_layers(teacher_spec: DictConfig | Mapping[str, Any]) -> int | None:
    """The teacher's layer count when its config is in the YAML (a pretrained one is read at build)."""
    config = teacher_spec.get("config") or {}
    if teacher_spec.get("pretrained"):
        return None
    n = config.get("num_hidden_layers", config.get("num_layers"))
    return n if isinstance(n, int) else None


def validate_init_spec(spec: DictConfig, teacher_spec: DictConfig, field: str = "model.student") -> None:
    """``{field}.init_from_teacher``: null or ``{layers: k}`` with 1 <= k <= the teacher's layers."""
    init = init_spec(spec)
    if init is None:
        return
    if not isinstance(init, Mapping) or set(init) != {"layers"}:
        raise InputError(f"{field}.{FIELD}: expected null or {{layers: <positive integer>}}, got {init!r}")
    layers = init["layers"]
    integer(layers, f"{field}.{FIELD}.layers")
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


def student_from_teacher(teacher: PreTrainedModel, spec: DictConfig | Mapping[str, Any]) -> PreTrainedModel:
    """The student ``spec.init_from_teacher`` describes, cut from ``teacher``."""
    keep = kept_layers(teacher.config.num_hidden_layers, init_spec(spec)["layers"])
    return drop_layers(teacher, keep)
