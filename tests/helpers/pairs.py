"""Tiny tokenizer, models and prompts shared by the generation / pairs / pair-data tests.

Everything is built locally (no hub): a byte-level BPE tokenizer trained on a few sentences and
randomly initialised Llama / T5 models with hidden size 32.
"""

from __future__ import annotations

from pathlib import Path

import torch
from datasets import Dataset

SPECIALS = ["<pad>", "<s>", "</s>", "<unk>"]
CORPUS = [
    "Rewrite the text without personal data: John Smith lives at 12 Oak Street.",
    "Anonymize: call Mary Jones on 555-0100 or write to mary@example.com today.",
    "Summarize the message: the meeting moved to Friday at noon in room 4.",
    "Translate to plain words: the invoice number 4471 is due next Monday.",
] * 4

PROMPTS = [
    "Anonymize: Alice Brown lives in Paris.",
    "Anonymize: call Bob on 555-0199.",
    "Summarize: the meeting moved to Friday.",
    "Rewrite: John paid invoice 4471.",
    "Anonymize: write to carol@example.com now please.",
    "Summarize: room 4 at noon.",
    "Rewrite the text without personal data: Dave Green, 3 Elm Road, London, phone 555-0123.",
    "Anonymize: Erin.",
]


def train_tokenizer(vocab_size: int = 320, corpus: list[str] | None = None):
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    tok = Tokenizer(models.BPE(unk_token="<unk>"))
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size,
        special_tokens=SPECIALS,
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    tok.train_from_iterator(corpus or CORPUS, trainer)
    return PreTrainedTokenizerFast(
        tokenizer_object=tok, pad_token="<pad>", bos_token="<s>", eos_token="</s>", unk_token="<unk>"
    )


def tiny_llama(tokenizer, seed: int = 0, hidden: int = 32, layers: int = 2):
    from transformers import LlamaConfig, LlamaForCausalLM

    torch.manual_seed(seed)
    cfg = LlamaConfig(
        vocab_size=len(tokenizer),
        hidden_size=hidden,
        intermediate_size=2 * hidden,
        num_hidden_layers=layers,
        num_attention_heads=4,
        num_key_value_heads=2,
        max_position_embeddings=512,
        bos_token_id=tokenizer.bos_token_id,
        eos_token_id=tokenizer.eos_token_id,
        pad_token_id=tokenizer.pad_token_id,
    )
    return LlamaForCausalLM(cfg).eval()


def tiny_t5(tokenizer, seed: int = 0):
    from transformers import T5Config, T5ForConditionalGeneration

    torch.manual_seed(seed)
    cfg = T5Config(
        vocab_size=len(tokenizer),
        d_model=32,
        d_kv=8,
        d_ff=64,
        num_layers=2,
        num_heads=4,
        decoder_start_token_id=tokenizer.pad_token_id,
        pad_token_id=tokenizer.pad_token_id,
        eos_token_id=tokenizer.eos_token_id,
    )
    return T5ForConditionalGeneration(cfg).eval()


def prompt_dataset(n: int = 8, with_reference: bool = True) -> Dataset:
    rows = {"id": [f"p{i}" for i in range(n)], "prompt": [PROMPTS[i % len(PROMPTS)] + f" #{i}" for i in range(n)]}
    if with_reference:
        rows["reference"] = [f"reference text {i}" for i in range(n)]
    return Dataset.from_dict(rows)


def save_tiny(dirpath: Path, seed: int = 0, hidden: int = 32) -> Path:
    """A tokenizer + Llama saved as one HF directory (what subprocess tests load)."""
    tok = train_tokenizer()
    model = tiny_llama(tok, seed=seed, hidden=hidden)
    model.save_pretrained(dirpath)
    tok.save_pretrained(dirpath)
    return dirpath


def load_tiny(dirpath: Path):
    from transformers import AutoModelForCausalLM, AutoTokenizer

    return AutoModelForCausalLM.from_pretrained(dirpath).eval(), AutoTokenizer.from_pretrained(dirpath)


# --------------------------------------------------------------------------- pair building helpers
CONFIG = Path(__file__).resolve().parents[2] / "configs" / "pairs" / "default.yaml"


def pairs_cfg(**overrides):
    """configs/pairs/default.yaml (without its Hydra defaults list) with test-sized overrides."""
    from omegaconf import OmegaConf

    cfg = OmegaConf.load(CONFIG)
    cfg.pop("defaults", None)
    return OmegaConf.merge(cfg, {"shard_size": 2, "batch_size": 4, "poll_s": 0.05, "wait_timeout_s": 120}, overrides)


def saved_pair_set(root: Path, n_prompts: int) -> tuple[Path, Path, Path]:
    """(student dir, teacher dir, pair set path): tiny saved Llamas (seeds 0 and 1) and their pairs on
    ``n_prompts`` prompts (prompt <= 32 tokens, completions <= 8), cached under ``root/cache``."""
    from plad.models.ref import ModelRef
    from plad.pairs.build import obtain_pairs

    student, teacher = save_tiny(root / "student", seed=0), save_tiny(root / "teacher", seed=1)
    ps = obtain_pairs(
        pairs_cfg(),
        prompt_dataset(n_prompts),
        FakeTask(),
        ModelRef(teacher, "t"),
        ModelRef(student, "s"),
        root / "cache",
        32,
        8,
        seed=0,
    )
    return student, teacher, ps.path


class FakeTask:
    """Quality 1.0 for outputs containing 'good', else 0.0."""

    def fingerprint(self) -> str:
        return "fake-task"

    def quality(self, prediction: str, example: dict) -> float:
        return 1.0 if "good" in prediction else 0.0


def spy(real, calls: list, student_sleep: float = 0.0):
    """Wrap a generate function to record (role, prompts) of every call; optionally stall every
    student call after the first (so a test can kill the process between shards)."""
    import time

    def wrapper(model, tokenizer, prompts, **kw):
        role = kw.get("desc", "").split()[0]
        if student_sleep and role == "student" and any(r == role for r, _ in calls):
            time.sleep(student_sleep)
        calls.append((role, list(prompts)))
        return real(model, tokenizer, prompts, **kw)

    return wrapper


def worker(spec_json: str) -> None:
    """Subprocess entry point: build pairs with saved tiny models; write rows and generate calls."""
    import json

    from plad.models.ref import ModelRef
    from plad.pairs.build import obtain_pairs

    spec = json.loads(spec_json)
    import plad.backends.hf_sampling as g

    calls: list = []
    g.generate = spy(g.generate, calls, spec.get("sleep", 0.0))
    ps = obtain_pairs(
        pairs_cfg(**spec["cfg"]),
        prompt_dataset(spec["n"]),
        FakeTask(),
        ModelRef(None, "teacher", loader=lambda: load_tiny(Path(spec["teacher"]))),
        ModelRef(None, "student", loader=lambda: load_tiny(Path(spec["student"]))),
        Path(spec["root"]),
        64,
        6,
        0,
    )
    Path(spec["out"]).write_text(json.dumps({"pairwise": ps.pairwise.to_list(), "calls": calls}))
