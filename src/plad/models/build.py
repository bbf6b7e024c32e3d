"""Model families: build from config, load pretrained (hub, local dir, GGUF), save and reload.

A family YAML (``configs/model/*.yaml``) holds ``tokenizer``, ``teacher`` and ``student`` specs.
A spec either names real weights (``pretrained`` [+ ``gguf_file``]) or carries a transformers
config (``config`` with ``_target_``) to build a randomly initialised model. Every model this
module returns is a plain float model that ``save_pretrained`` can write and the matching
``AutoModelFor*.from_pretrained`` can read back, so the pipeline caches all of them the same way.
"""

from __future__ import annotations

import copy
import json
import os
import re
from pathlib import Path
from typing import Any

import torch
from hydra.utils import instantiate
from omegaconf import DictConfig
from transformers import (
    AutoConfig,
    AutoModelForCausalLM,
    AutoModelForSeq2SeqLM,
    AutoTokenizer,
    PretrainedConfig,
    PreTrainedModel,
)
from transformers.initialization import no_init_weights

from plad.cache import atomic_dir, entry_dir, is_complete, stage_key
from plad.checks import InputError, integer, number
from plad.models.lora import ADAPTER_DIR, is_lora, merged, save_adapter, validate_training_spec
from plad.models.student_init import init_spec, validate_init_spec
from plad.models.tokenizer import (  # noqa: F401
    MIN_VOCAB,
    ensure_pad,
    load_tokenizer,
    obtain_tokenizer,
    resolve_pretrained,
    source_key,
    train_tokenizer,
)

DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}
HUB_NAME = re.compile(r"^[A-Za-z0-9][\w.-]*/[\w.-]+$")  # "org/name"
TOKENIZER_FILES = {"tokenizer.json", "tokenizer_config.json", "vocab.json", "spiece.model", "tokenizer.model"}
WEIGHT_SUFFIXES = (".safetensors", ".bin", ".safetensors.index.json", ".bin.index.json")


# ----------------------------------------------------------------------------- validation


def _looks_local(p: str) -> bool:
    """True when ``p`` can only mean a path on disk (hub names look like "org/name")."""
    if p.startswith(("/", "./", "../", "~")) or os.path.isabs(p):
        return True
    return os.sep in p and not HUB_NAME.match(p)


def _check_pretrained(spec: DictConfig, field: str, weights: bool = True) -> None:
    pretrained, gguf_file = spec.get("pretrained"), spec.get("gguf_file")
    if gguf_file and not pretrained:
        raise InputError(
            f"{field}.gguf_file: expected `pretrained` (a dir or hub repo holding it), got pretrained=null"
        )
    if not pretrained:
        return
    path = resolve_pretrained(str(pretrained), field=f"{field}.pretrained")
    is_local = str(pretrained).startswith("pkg://") or _looks_local(str(pretrained))
    if is_local and not os.path.exists(path):
        raise InputError(f"{field}.pretrained: path does not exist: {pretrained}")
    if gguf_file and os.path.isdir(path) and not os.path.isfile(os.path.join(path, gguf_file)):
        raise InputError(f"{field}.gguf_file: file does not exist in {pretrained}: {gguf_file}")
    if os.path.isdir(path) and not gguf_file:
        _check_local_dir(path, f"{field}.pretrained", str(pretrained), weights=weights)


def _check_local_dir(path: str, field: str, name: str, weights: bool) -> None:
    """A local checkpoint dir must hold a tokenizer (and config + weights for a model) that fit together;
    otherwise loading fails (or indexes past the embedding) only after the data and SFT stages."""
    files = set(os.listdir(path))
    if not files & TOKENIZER_FILES:
        raise InputError(f"{field}: expected a tokenizer ({', '.join(sorted(TOKENIZER_FILES))}) in {name}, got none")
    if not weights:
        return
    if "config.json" not in files:
        raise InputError(f"{field}: expected a model directory with config.json, got none in {name}")
    if not any(f.endswith(WEIGHT_SUFFIXES) for f in files):
        raise InputError(f"{field}: expected weights (*.safetensors or *.bin) in {name}, got none")
    try:
        vocab_size = json.loads(Path(path, "config.json").read_text()).get("vocab_size")
        n_tokens = len(AutoTokenizer.from_pretrained(path))
    except (OSError, ValueError) as e:
        raise InputError(
            f"{field}: expected a readable config.json and tokenizer in {name}, "
            f"got {type(e).__name__}: {str(e).splitlines()[0] if str(e) else ''}"
        ) from e
    if isinstance(vocab_size, int) and n_tokens > vocab_size:
        raise InputError(
            f"{field}: expected a tokenizer of at most {vocab_size} tokens (the model's vocab_size), "
            f"got {n_tokens} tokens in {name}"
        )


def validate_model_spec(spec: DictConfig, field: str) -> None:
    """Fail fast, naming the field, before any data loading or training (``field`` e.g. "model.teacher")."""
    _check_pretrained(spec, field)
    if not spec.get("pretrained") and not init_spec(spec) and not (spec.get("config") and spec.config.get("_target_")):
        raise InputError(
            f"{field}.config: expected a transformers config with _target_ when pretrained and "
            f"init_from_teacher are null, got {spec.get('config')!r}"
        )
    dtype = spec.get("dtype", "float32")
    if dtype not in DTYPES:
        raise InputError(f"{field}.dtype: expected one of {sorted(DTYPES)}, got {dtype!r}")
    pre = spec.get("pretrain")
    if pre is not None and not isinstance(pre, (dict, DictConfig)):
        raise InputError(f"{field}.pretrain: expected null or a mapping with max_steps, got {pre!r}")
    for part, schedule in (("sft", spec.get("sft") or {}), ("pretrain", pre or {})):
        for key, check in [
            ("max_steps", lambda v, f: integer(v, f, minimum=0)),
            ("batch_size", integer),
            ("lr", lambda v, f: number(v, f, positive=True)),
            ("warmup_steps", lambda v, f: integer(v, f, minimum=0)),
            ("weight_decay", number),
        ]:
            if key in schedule:
                check(schedule[key], f"{field}.{part}.{key}")
    integer((spec.get("sft") or {}).get("train_examples"), f"{field}.sft.train_examples", null=True)
    if pre is not None:
        unknown = sorted(set(pre) - set(PRETRAIN_KEYS))
        if unknown or "max_steps" not in pre:
            raise InputError(
                f"{field}.pretrain: expected max_steps and keys among {list(PRETRAIN_KEYS)}, got {sorted(pre)}"
            )
        template = pre.get("template", COPY_TEMPLATE)
        if not isinstance(template, str) or "{text}" not in template:
            raise InputError(f"{field}.pretrain.template: expected a string containing '{{text}}', got {template!r}")
    validate_training_spec(spec, field)


def max_positions(cfg_model: DictConfig, role: str) -> int | None:
    """How many positions ``role`` was built or trained for (None: unbounded, as T5's relative ones,
    or not known without loading the weights, as a GGUF file's): from its config, the config.json of
    a local pretrained dir, or the teacher it is cut from."""
    spec = cfg_model[role]
    if init_spec(spec) is not None:
        return max_positions(cfg_model, "teacher")
    if spec.get("pretrained"):
        if spec.get("gguf_file"):
            return None
        config = Path(str(resolve_pretrained(spec.pretrained))) / "config.json"
        values = json.loads(config.read_text()) if config.is_file() else {}
    else:
        values = dict(spec.get("config") or {})
    n = values.get("max_position_embeddings", values.get("n_positions"))
    return n if isinstance(n, int) and not isinstance(n, bool) else None


PRETRAIN_KEYS = ("max_steps", "batch_size", "lr", "warmup_steps", "weight_decay", "template")
COPY_TEMPLATE = "Repeat: {text}\nOutput:"


def pretrain_spec(spec: DictConfig) -> DictConfig | None:
    """A role's copy pretraining schedule with sft's batch size, lr, warmup and weight decay where it
    sets none (so ``debug=fast`` can shrink it to a few steps on any family), or None when off
    (null, or max_steps 0)."""
    from omegaconf import OmegaConf

    pre = spec.get("pretrain")
    if pre is None or pre.get("max_steps", 0) == 0:
        return None
    sft = spec.get("sft") or {}
    filled = {k: sft[k] for k in PRETRAIN_KEYS if k in sft} | {"template": COPY_TEMPLATE}
    return OmegaConf.create(
        filled | OmegaConf.to_container(pre, resolve=True)
    )  # lora + gradient_checkpointing (PEFT finds the target modules)


def validate_tokenizer_spec(spec: DictConfig, field: str = "model.tokenizer") -> None:
    _check_pretrained(spec, field, weights=False)
    vocab_size = spec.get("vocab_size")
    if not spec.get("pretrained") and (
        not isinstance(vocab_size, int) or isinstance(vocab_size, bool) or vocab_size < MIN_VOCAB
    ):
        raise InputError(
            f"{field}.vocab_size: expected an integer >= {MIN_VOCAB} when pretrained is null, got {vocab_size!r}"
        )


def validate_family(cfg_model: DictConfig, field: str = "model") -> None:
    """Validate a whole family YAML: tokenizer, teacher and student."""
    validate_tokenizer_spec(cfg_model.tokenizer, f"{field}.tokenizer")
    for role in ("teacher", "student"):
        validate_model_spec(cfg_model[role], f"{field}.{role}")
    if init_spec(cfg_model.teacher) is not None:
        raise InputError(
            f"{field}.teacher.init_from_teacher: expected null (a student option), got {init_spec(cfg_model.teacher)!r}"
        )
    validate_init_spec(cfg_model.student, cfg_model.teacher, f"{field}.student")


def tokenizer_source(cfg_model: DictConfig, role: str) -> tuple[str, str | None] | None:
    """Where a role's tokenizer comes from: its own ``pretrained`` (+ gguf_file), the family's
    pretrained tokenizer, or None for the BPE trained on the task (models built from config).
    A student initialised from the teacher uses the teacher's."""
    spec = cfg_model[role]
    if init_spec(spec) is not None:
        return tokenizer_source(cfg_model, "teacher")
    if spec.get("pretrained"):
        return str(spec.pretrained), spec.get("gguf_file")
    tok = cfg_model.tokenizer
    return (str(tok.pretrained), tok.get("gguf_file")) if tok.get("pretrained") else None


# ----------------------------------------------------------------------------- building / loading


def _auto_class(config: PretrainedConfig) -> type:
    return AutoModelForSeq2SeqLM if getattr(config, "is_encoder_decoder", False) else AutoModelForCausalLM


def count_parameters(model: torch.nn.Module) -> int:
    """Unique parameters (tied embeddings counted once)."""
    return sum(p.numel() for p in model.parameters())


def build_model(spec: DictConfig, tokenizer: Any, seed: int) -> PreTrainedModel:
    """A randomly initialised model from ``spec.config``, sized to ``tokenizer``; same seed, same weights."""
    config = instantiate(
        spec.config,
        _convert_="all",
        vocab_size=len(tokenizer),
        pad_token_id=tokenizer.pad_token_id,
        bos_token_id=tokenizer.bos_token_id,
        eos_token_id=tokenizer.eos_token_id,
    )
    if config.is_encoder_decoder:
        config.decoder_start_token_id = tokenizer.pad_token_id  # T5 convention: decoding starts at pad
    with torch.random.fork_rng(devices=[]):  # seeded without disturbing the caller's RNG stream
        torch.manual_seed(seed)
        model = _auto_class(config).from_config(config, dtype=DTYPES[spec.get("dtype", "float32")])
    return model


def _dequantized_copy(model: PreTrainedModel) -> PreTrainedModel:
    """The same weights in a plain model: a GGUF-loaded model keeps its quantizer, which refuses to save."""
    config = copy.deepcopy(model.config)
    if hasattr(config, "quantization_config"):
        delattr(config, "quantization_config")
    with no_init_weights():  # weights are overwritten right away; random init of 100M+ params is slow
        plain = type(model)(config)
    plain.load_state_dict(model.state_dict())
    plain.tie_weights()
    plain.generation_config = copy.deepcopy(model.generation_config)
    return plain.to(model.dtype).eval()


def load_pretrained(spec: DictConfig) -> tuple[PreTrainedModel, Any]:
    """Real weights from a hub name, a local dir or ``pkg://...``, optionally a GGUF file in it."""
    path = resolve_pretrained(str(spec.pretrained))
    gguf_file = spec.get("gguf_file")
    kwargs = {"gguf_file": gguf_file} if gguf_file else {}
    dtype = DTYPES[spec.get("dtype", "float32")]
    # GGUF checkpoints are decoder-only in practice; skipping AutoConfig avoids a second ~5 s parse.
    auto = AutoModelForCausalLM if gguf_file else _auto_class(AutoConfig.from_pretrained(path))
    model = auto.from_pretrained(path, dtype=dtype, **kwargs)
    if getattr(model, "hf_quantizer", None) is not None:
        model = _dequantized_copy(model)
    return model, load_tokenizer(str(spec.pretrained), gguf_file)


def obtain_pretrained(spec: DictConfig, cache_root: str | os.PathLike) -> tuple[PreTrainedModel, Any]:
    """``load_pretrained``, with a GGUF checkpoint's dequantised copy cached: parsing SmolLM2-135M's
    GGUF takes ~30 s on CPU, reading the copy back under a second (the teacher's SFT and a student
    initialised from the teacher both load it). Keyed by the config strings, not the machine path."""
    if not spec.get("gguf_file"):
        return load_pretrained(spec)
    dtype = spec.get("dtype", "float32")
    fp = stage_key(
        "models", "gguf", str(spec.pretrained), spec.gguf_file, dtype, source_key(spec.pretrained, spec.gguf_file)
    )
    final = entry_dir(cache_root, "models", f"gguf-{fp}")
    if not is_complete(final):
        model, tok = load_pretrained(spec)
        with atomic_dir(final) as tmp:
            save_model(model, tok, tmp)
        return model, tok
    model = AutoModelForCausalLM.from_pretrained(str(final), dtype=DTYPES[dtype])
    return model.eval(), ensure_pad(AutoTokenizer.from_pretrained(str(final)))


def save_model(model: PreTrainedModel, tokenizer: Any, path: str | os.PathLike) -> None:
    """safetensors weights + config + tokenizer, readable by ``load_saved`` and plain transformers.
    A LoRA (PEFT) model is saved merged, and its adapter alone under ``<path>/adapter``."""
    Path(path).mkdir(parents=True, exist_ok=True)
    if is_lora(model):
        save_adapter(model, Path(path) / ADAPTER_DIR)
        model = merged(model)
    model.save_pretrained(str(path))
    tokenizer.save_pretrained(str(path))


def load_saved(path: str | os.PathLike) -> tuple[PreTrainedModel, Any]:
    config = AutoConfig.from_pretrained(str(path))
    model = _auto_class(config).from_pretrained(str(path))
    return model, ensure_pad(AutoTokenizer.from_pretrained(str(path)))
