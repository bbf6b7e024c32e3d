"""scripts/memory_estimate.py counts what PyTorch and PEFT count, shards states the way ZeRO does,
and configs/experiment/real_scale.yaml composes to the GPU run the README describes."""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path

import pytest
import torch
from hydra import compose, initialize_config_dir
from transformers import AutoModelForCausalLM, LlamaConfig

ROOT = Path(__file__).resolve().parents[1]
_spec = importlib.util.spec_from_file_location("memory_estimate", ROOT / "scripts" / "memory_estimate.py")
me = sys.modules["memory_estimate"] = importlib.util.module_from_spec(_spec)  # dataclasses look it up
_spec.loader.exec_module(me)

ALL_PROJ = me.ALL_PROJ.split(",")


def _tiny(tie: bool) -> LlamaConfig:
    return LlamaConfig(
        hidden_size=32,
        intermediate_size=48,
        num_hidden_layers=2,
        num_attention_heads=4,
        num_key_value_heads=2,
        vocab_size=100,
        tie_word_embeddings=tie,
    )


@pytest.mark.parametrize("tie", [True, False])
def test_parameter_count_on_meta_equals_the_real_model(tie):
    real = AutoModelForCausalLM.from_config(_tiny(tie))
    assert me.count_params(me.meta_model(_tiny(tie))) == sum(p.numel() for p in real.parameters())


@pytest.mark.parametrize("targets", [ALL_PROJ, ["q_proj", "v_proj"]])
def test_lora_count_equals_peft(targets):
    from peft import LoraConfig, get_peft_model

    peft_model = get_peft_model(
        AutoModelForCausalLM.from_config(_tiny(False)), LoraConfig(r=4, target_modules=targets, task_type="CAUSAL_LM")
    )
    trainable, total = peft_model.get_nb_trainable_parameters()
    meta = me.meta_model(_tiny(False))
    assert me.lora_params(meta, 4, targets) == trainable
    assert me.count_params(meta) == total - trainable  # LoRA's frozen base is the whole model


def test_lora_targets_matching_nothing_fail_in_one_line():
    with pytest.raises(ValueError, match=r"^--lora-targets: .*none matched"):
        me.lora_params(me.meta_model(_tiny(True)), 4, ["c_attn"])


@pytest.mark.parametrize("counts", [me.Counts(trainable=1000, frozen=0), me.Counts(trainable=10, frozen=1000)])
def test_zero_stages_shard_their_states(counts):
    t, f = counts.trainable, counts.frozen
    single = me.per_gpu_bytes(counts, 0, 1)
    assert single == 16 * t + 2 * f
    assert all(me.per_gpu_bytes(counts, s, 1) == single for s in range(4))  # nothing to shard over
    assert me.per_gpu_bytes(counts, 0, 8) == single  # DDP replicates everything
    assert me.per_gpu_bytes(counts, 1, 8) == 2 * (t + f) + 2 * t + 12 * t / 8
    assert me.per_gpu_bytes(counts, 2, 8) == 2 * (t + f) + 14 * t / 8
    assert me.per_gpu_bytes(counts, 3, 8) == pytest.approx(single / 8)
    assert me.per_gpu_bytes(counts, 3, 8, teacher=500) == pytest.approx(single / 8 + 1000)  # a full copy per GPU


def test_table_has_a_row_per_method_and_stage():
    out = me.main(["--preset", "smollm2-135m", "--stages", "0", "3", "--gpus", "1", "8", "--lora-r", "8"])
    assert "smollm2-135m: 134,515,008 parameters" in out  # SmolLM2-135M's published count
    rows = [line for line in out.splitlines() if line.startswith("| smollm2-135m")]
    assert [r.split(" | ")[1] + "/" + r.split(" | ")[3] for r in rows] == [
        "full/ZeRO-0 (DDP)",
        "full/ZeRO-3 / FSDP",
        "LoRA r=8/ZeRO-0 (DDP)",
        "LoRA r=8/ZeRO-3 / FSDP",
    ]
    assert out.splitlines()[-6].startswith("| model | method | trainable params | ZeRO stage | 1 GPU | 8 GPUs |")
    full_1, full_8 = (float(c) for c in rows[0].rstrip(" |").split(" | ")[-2:])
    assert full_1 == full_8 == round(16 * 134_515_008 / 2**30, 2)


def test_bad_preset_fails_in_one_line():
    with pytest.raises(ValueError, match=r"^--preset: expected one of .*got 'nope'"):
        me.main(["--preset", "nope"])


def _compose(*overrides: str):
    with initialize_config_dir(config_dir=str(ROOT / "configs"), version_base="1.3"):
        return compose("train", overrides=list(overrides))


def test_real_scale_composes_to_a_bf16_fsdp_lora_run():
    cfg = _compose("experiment=real_scale")
    assert cfg.trainer.accelerator == "gpu" and cfg.trainer.precision == "bf16-mixed"
    assert cfg.trainer.strategy._target_ == "plad.distributed.fsdp_strategy"
    assert cfg.trainer.strategy.sharding_strategy == "FULL_SHARD" and "LlamaDecoderLayer" in cfg.trainer.strategy.wrap
    assert cfg.generation._target_ == "plad.backends.vllm.VLLMBackend"
    teacher, student = cfg.model.teacher, cfg.model.student
    assert (teacher.pretrained, student.pretrained) == (
        "meta-llama/Llama-3.1-8B-Instruct",
        "meta-llama/Llama-3.2-1B-Instruct",
    )
    assert teacher.dtype == student.dtype == "bfloat16" and student.gradient_checkpointing is True
    assert dict(student.lora) == {"r": 16, "alpha": 32, "dropout": 0.05, "target_modules": None}
    from plad.models.build import validate_family
    from plad.models.lora import validate_training_spec

    validate_family(cfg.model)
    validate_training_spec(student, "model.student")
    # the estimate reads the same student: Llama-3.2-1B's published 1.24B parameters
    assert "1,235,814,400 parameters" in me.main(["--hydra", "experiment=real_scale", "--stages", "3", "--gpus", "8"])


def test_hydra_student_built_from_config_uses_the_family_tokenizer_size():
    cfg = _compose("model=llama")
    expected = LlamaConfig(
        **{k: v for k, v in cfg.model.student.config.items() if k != "_target_"},
        vocab_size=cfg.model.tokenizer.vocab_size,
    )
    with torch.device("meta"):
        n = sum(p.numel() for p in AutoModelForCausalLM.from_config(expected).parameters())
    assert f"{n:,} parameters" in me.main(["--hydra", "model=llama", "--lora-r", "0", "--stages", "0", "--gpus", "1"])


def test_hydra_student_cut_from_the_teacher_has_the_kept_layers_only():
    # model=smollm2: 16 of SmolLM2-135M's 30 layers; 84,953,664 parameters, counted on the real cut
    # student in tests/test_smollm2.py.
    out = me.main(["--hydra", "model=smollm2", "--lora-r", "0", "--stages", "0", "--gpus", "1"])
    assert "84,953,664 parameters" in out
