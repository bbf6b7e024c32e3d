"""LoRA through PEFT and gradient checkpointing: what a training stage does to a model before
fitting it, and how a LoRA model is saved so that the rest of the pipeline sees plain weights.

``model.<role>.lora`` = ``{r, alpha, dropout, target_modules}``; ``r: null`` is full fine-tuning,
``target_modules: null`` PEFT's default for the model type (llama and gpt_neo: q_proj, v_proj; t5:
q, v). A LoRA model trains its adapters only. It is saved as the merged plain model (transformers
and ``load_saved`` read it, so caches, pairs and evaluation never need PEFT) plus the adapter alone
under ``<dir>/adapter`` (``PeftModel.from_pretrained(base, "<dir>/adapter")``; its base is the model
before this training stage: the SFT'd student for a distilled one, ``base_model_name_or_path``).
"""

from __future__ import annotations

import copy
import os
import sys
from collections.abc import Mapping
from typing import Any

import torch
from omegaconf import DictConfig

from plad.checks import InputError, integer, is_number
from plad.jsonable import plain
from plad.models.logprobs import is_encoder_decoder

LORA_KEYS = ("r", "alpha", "dropout", "target_modules")
LORA_DEFAULTS: dict[str, Any] = {"r": None, "alpha": 16, "dropout": 0.0, "target_modules": None}
# distill.reference: where DPO/IPO reference log-likelihoods come from.
REFERENCES = ("cached", "adapters_off")
ADAPTER_DIR = "adapter"


def lora_settings(spec: Mapping | None) -> dict[str, Any] | None:
    """The spec with defaults filled in, or None when LoRA is off (no spec, or ``r: null``)."""
    spec = plain(spec)
    if spec is None or spec.get("r") is None:
        return None
    return {**LORA_DEFAULTS, **spec}


def validate_lora(spec: Any, field: str) -> None:
    """One line naming the field for a bad value (``field`` e.g. "model.student.lora")."""
    spec = plain(spec)
    if spec is None:
        return
    if not isinstance(spec, Mapping):
        raise InputError(
            f"{field}: expected a mapping with keys {list(LORA_KEYS)} (r: null = full fine-tuning), got {spec!r}"
        )
    unknown = sorted(set(spec) - set(LORA_KEYS))
    if unknown:
        raise InputError(f"{field}: expected keys among {list(LORA_KEYS)}, got unknown {unknown}")
    s = {**LORA_DEFAULTS, **spec}
    r, alpha, dropout, targets = s["r"], s["alpha"], s["dropout"], s["target_modules"]
    integer(r, f"{field}.r", null=True)  # null: full fine-tuning
    if not is_number(alpha) or alpha <= 0:
        raise InputError(f"{field}.alpha: expected a positive number, got {alpha!r}")
    if not is_number(dropout) or not 0 <= dropout < 1:
        raise InputError(f"{field}.dropout: expected a number in [0, 1), got {dropout!r}")
    ok_list = isinstance(targets, list) and targets and all(isinstance(t, str) and t for t in targets)
    if targets is not None and not (isinstance(targets, str) and targets) and not ok_list:
        raise InputError(
            f"{field}.target_modules: expected null (PEFT's default for the model type), a module "
            f"name or a non-empty list of names, got {targets!r}"
        )


def validate_training_spec(spec: DictConfig, field: str) -> None:
    """``lora`` and ``gradient_checkpointing`` of a model spec (``field`` e.g. "model.student"),
    and, for a LoRA model whose config is known here, that PEFT finds its target modules."""
    validate_lora(spec.get("lora"), f"{field}.lora")
    gc = spec.get("gradient_checkpointing", False)
    if not isinstance(gc, bool):
        raise InputError(f"{field}.gradient_checkpointing: expected true or false, got {gc!r}")
    settings = lora_settings(spec.get("lora"))
    config = _model_config(spec) if settings else None
    if config is not None:
        from transformers import AutoModelForCausalLM, AutoModelForSeq2SeqLM

        auto = AutoModelForSeq2SeqLM if getattr(config, "is_encoder_decoder", False) else AutoModelForCausalLM
        with torch.device("meta"):  # no memory, no init: only module names matter
            wrap(auto.from_config(config), settings, f"{field}.lora")


def _model_config(spec: DictConfig) -> Any:
    """The transformers config of a spec when it is known without downloads (built from config, or
    a local dir); None otherwise (hub names and GGUF files are checked when the model is wrapped)."""
    from hydra.utils import instantiate
    from transformers import AutoConfig

    from plad.models.tokenizer import resolve_pretrained

    if not spec.get("pretrained"):
        return instantiate(spec.config, _convert_="all") if spec.get("config") else None
    path = resolve_pretrained(str(spec.pretrained))
    if spec.get("gguf_file") or not os.path.isfile(os.path.join(path, "config.json")):
        return None
    return AutoConfig.from_pretrained(path)


def validate_reference(
    reference: Any, lora: Any, field: str = "distill.reference", lora_field: str = "model.student.lora.r"
) -> None:
    """``adapters_off`` reads the reference from the student with its adapters disabled, so it needs LoRA."""
    if reference not in REFERENCES:
        raise InputError(f"{field}: expected one of {list(REFERENCES)}, got {reference!r}")
    if reference == "adapters_off" and lora_settings(lora) is None:
        raise InputError(f"{field}: 'adapters_off' needs a LoRA student ({lora_field}), got r=null (use 'cached')")


def wrap(model: torch.nn.Module, spec: Mapping, field: str = "lora") -> Any:
    """``model`` as a PEFT LoRA model; only the adapters require gradients afterwards."""
    from peft import LoraConfig, TaskType, get_peft_model

    s = lora_settings(spec)
    if s is None:
        raise InputError(f"{field}.r: expected a positive integer to wrap a model with LoRA, got null")
    config = LoraConfig(
        r=s["r"],
        lora_alpha=s["alpha"],
        lora_dropout=s["dropout"],
        target_modules=s["target_modules"],
        task_type=TaskType.SEQ_2_SEQ_LM if is_encoder_decoder(model) else TaskType.CAUSAL_LM,
    )
    try:
        return get_peft_model(model, config)
    except ValueError as e:  # unknown model type without target_modules, or names that match nothing
        reason = str(e).splitlines()[0] if str(e) else type(e).__name__
        model_type = getattr(getattr(model, "config", None), "model_type", type(model).__name__)
        raise InputError(
            f"{field}.target_modules: expected module names of a {model_type!r} model (null: PEFT's "
            f"default, where PEFT has one), got {s['target_modules']!r}: {reason}"
        ) from None


def enable_gradient_checkpointing(model: torch.nn.Module, field: str = "gradient_checkpointing") -> None:
    """Recompute activations in the backward pass (non-reentrant: no input that requires grad needed,
    and the same losses and gradients; transformers also makes inputs require grad for PEFT)."""
    kwargs = {"use_reentrant": False}
    try:
        if hasattr(model, "activation_checkpointing_enable"):  # transformers >= 5.x (the old name warns)
            model.activation_checkpointing_enable(activation_checkpointing_kwargs=kwargs)
        else:
            model.gradient_checkpointing_enable(gradient_checkpointing_kwargs=kwargs)
    except ValueError as e:
        raise InputError(
            f"{field}: expected a model that supports it, got {type(model).__name__}: {str(e).splitlines()[0]}"
        ) from None


def prepare(
    model: torch.nn.Module, lora: Mapping | None, gradient_checkpointing: bool = False, field: str = "model.student"
) -> Any:
    """The model a training stage fits: checkpointing on when asked, then wrapped with LoRA when
    ``lora.r`` is set (the PeftModel is returned; its base model is changed in place)."""
    if gradient_checkpointing:
        enable_gradient_checkpointing(model, f"{field}.gradient_checkpointing")
    settings = lora_settings(lora)
    return wrap(model, settings, f"{field}.lora") if settings else model


def is_lora(model: Any) -> bool:
    """A PEFT model (without importing PEFT: a model cannot be one unless PEFT is loaded)."""
    peft = sys.modules.get("peft")
    return peft is not None and isinstance(model, peft.PeftModel)


def merged(model: Any) -> Any:
    """A plain transformers model with the adapters folded in; ``model`` itself is left as it was
    (merged on a copy), so training can go on."""
    return copy.deepcopy(model).merge_and_unload() if is_lora(model) else model


def fresh_copy(model: Any) -> Any:
    """An untrained model of the same architecture (and the same adapters, for a PEFT model),
    ready for ``load_state_dict``: how the sharded strategies' gathered full state becomes a
    model again (FSDP/DeepSpeed changed ``model`` itself by wrapping it)."""
    if not is_lora(model):
        return type(model)(model.config)
    from peft import get_peft_model

    base = model.get_base_model()
    return get_peft_model(type(base)(base.config), copy.deepcopy(model.peft_config["default"]))


def save_adapter(model: Any, path: str | os.PathLike) -> None:
    """The adapter alone (``adapter_config.json`` + ``adapter_model.safetensors``), for PEFT."""
    model.save_pretrained(str(path))


def trainable_parameters(model: torch.nn.Module) -> int:
    return sum(p.numel() for p in model.parameters() if p.requires_grad)
