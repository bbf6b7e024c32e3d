"""Generation backends (plad.backends): one contract, checked against the HF backend, a fake
backend and the vLLM adapter driving mocked vLLM classes (vLLM itself needs a GPU); the vLLM
adapter's translation of our settings; a backend swapped into the pair stage; and reference
log-probs cached in the trainer's precision."""

from __future__ import annotations

import dataclasses
import random
import sys
import types
from pathlib import Path

import lightning as L
import pytest
import torch
from helpers.pairs import PROMPTS, FakeTask, pairs_cfg, prompt_dataset, save_tiny

from plad.backends.base import Backend, GenerationOutput, Sampling, prompt_keys
from plad.backends.hf import HFBackend
from plad.backends.vllm import MISSING, VLLMBackend, outputs_of
from plad.models.build import load_saved
from plad.models.encoding import encode_prompt
from plad.models.ref import ModelRef
from plad.pairs.build import obtain_pairs

SAMPLING = Sampling(n=3, max_new_tokens=6, temperature=1.3, seed=7, max_prompt_tokens=64)


def _fake_samples(
    prompt_ids: list[int], n: int, seed: int | None, max_tokens: int, eos: int, vocab: int
) -> list[list[int]]:
    """Deterministic in (prompt tokens, seed, sample index), or in the prompt alone when greedy
    (seed None): some samples end with EOS, some hit the budget."""
    samples = []
    for j in range(n):
        rng = random.Random(f"{prompt_ids}-{seed}-{j if seed is not None else 0}")
        length = rng.randint(1, max_tokens + 2)
        ids = [rng.randrange(10, vocab) for _ in range(min(length, max_tokens))]
        samples.append(ids[:-1] + [eos] if length < max_tokens else ids)
    return samples


class FakeBackend(Backend):
    """A backend that is not HF: samples are a pure function of (prompt, seed, index)."""

    name = "fake"

    def scoring_model(self, ref: ModelRef):
        return ref.load()

    def generate(self, ref, prompts, sampling, *, batch_size=16, desc="generate", progress=True):
        _, tok = ref.load()
        texts, counts, finished, token_ids = [], [], [], []
        for p in prompts:
            ids = encode_prompt(tok, p, False, sampling.max_prompt_tokens)
            samples = _fake_samples(
                ids,
                sampling.n,
                sampling.seed if sampling.do_sample else None,
                sampling.max_new_tokens,
                tok.eos_token_id,
                len(tok),
            )
            texts.append([tok.decode(s, skip_special_tokens=True).strip() for s in samples])
            counts.append([len(s) for s in samples])
            finished.append([s[-1] == tok.eos_token_id for s in samples])
            token_ids.append([s[:-1] if s[-1] == tok.eos_token_id else s for s in samples])
        return GenerationOutput(texts, counts, 0.0, finished, token_ids)


def install_fake_vllm(monkeypatch) -> list:
    """``vllm.LLM`` / ``vllm.SamplingParams`` stand-ins that record their arguments and answer like vLLM."""
    from transformers import AutoTokenizer

    engines: list = []

    class SamplingParams:
        def __init__(self, **kw):
            self.kw = kw

    class LLM:
        def __init__(self, **kw):
            self.kw, self.tok, self.calls = kw, AutoTokenizer.from_pretrained(kw["tokenizer"]), []
            engines.append(self)

        def get_tokenizer(self):
            return self.tok

        def generate(self, inputs, params, use_tqdm=True):
            self.calls.append((inputs, params))
            out = []
            for inp, sp in zip(inputs, params):
                k = sp.kw
                samples = _fake_samples(
                    inp["prompt_token_ids"],
                    k["n"],
                    k["seed"] if k["temperature"] > 0 else None,
                    k["max_tokens"],
                    self.tok.eos_token_id,
                    len(self.tok),
                )
                out.append(
                    types.SimpleNamespace(
                        outputs=[
                            types.SimpleNamespace(
                                text=self.tok.decode(s, skip_special_tokens=True),
                                token_ids=s,
                                finish_reason="stop" if s[-1] == self.tok.eos_token_id else "length",
                            )
                            for s in samples
                        ]
                    )
                )
            return out

    monkeypatch.setitem(sys.modules, "vllm", types.SimpleNamespace(LLM=LLM, SamplingParams=SamplingParams))
    monkeypatch.setattr("importlib.util.find_spec", lambda name, *a: object() if name == "vllm" else None)
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    return engines


@pytest.fixture(scope="module")
def saved(tmp_path_factory) -> Path:
    return save_tiny(tmp_path_factory.mktemp("backend") / "model", seed=3)


@pytest.fixture(params=["hf", "fake", "vllm_mocked"])
def backend(request, monkeypatch):
    if request.param == "vllm_mocked":
        install_fake_vllm(monkeypatch)
        monkeypatch.setattr(VLLMBackend, "scoring_model", lambda self, ref: ref.load())
        return VLLMBackend()
    return HFBackend(device="cpu") if request.param == "hf" else FakeBackend()


def test_every_backend_keeps_the_contract(backend: Backend, saved: Path):
    ref, (_, tok) = ModelRef(saved, "fp"), load_saved(saved)
    prompts = PROMPTS[:6]
    with backend:
        out = backend.generate(ref, prompts, SAMPLING, batch_size=2, progress=False)
        assert [len(t) for t in out.texts] == [3] * 6 and [len(c) for c in out.n_tokens] == [3] * 6  # n per prompt
        again = backend.generate(ref, prompts, SAMPLING, batch_size=4, progress=False)
        assert again.texts == out.texts and again.n_tokens == out.n_tokens  # seeded: a rerun (any batch) repeats
        backwards = backend.generate(ref, prompts[::-1], SAMPLING, batch_size=2, progress=False)
        assert backwards.texts == out.texts[::-1]  # outputs follow the prompts, not the batching
        other = backend.generate(ref, prompts, dataclasses.replace(SAMPLING, seed=8), progress=False)
        assert other.texts != out.texts
        greedy = backend.generate(ref, prompts, Sampling(n=2, max_new_tokens=6, do_sample=False), progress=False)
        assert all(a == b for a, b in greedy.texts)  # greedy: every sample of a prompt is the same
    flat = [(t, n, f) for ts, ns, fs in zip(out.texts, out.n_tokens, out.finished) for t, n, f in zip(ts, ns, fs)]
    assert {f for _, _, f in flat} == {True, False}  # both stop kinds are exercised below
    for text, n, done in flat:
        assert 1 <= n <= SAMPLING.max_new_tokens and tok.eos_token not in text
        assert done or n == SAMPLING.max_new_tokens  # not finished = cut at the budget
    assert out.total_tokens == sum(n for _, n, _ in flat)


def test_vllm_translation_of_our_settings():
    b = VLLMBackend(dtype="bfloat16", gpu_memory_utilization=0.5, tensor_parallel_size=2)
    assert b.llm_kwargs("/m") == {
        "model": "/m",
        "tokenizer": "/m",
        "dtype": "bfloat16",
        "seed": 0,
        "gpu_memory_utilization": 0.5,
        "tensor_parallel_size": 2,
        "enforce_eager": False,
    }
    assert VLLMBackend(max_model_len=512).llm_kwargs("/m")["max_model_len"] == 512
    kw = VLLMBackend.sampling_kwargs(
        Sampling(n=4, max_new_tokens=9, temperature=0.7, top_p=0.9, top_k=0, min_new_tokens=2), seed=11
    )
    assert kw == {
        "n": 4,
        "max_tokens": 9,
        "min_tokens": 2,
        "seed": 11,
        "temperature": 0.7,
        "top_p": 0.9,
        "top_k": -1,
        "skip_special_tokens": True,
    }  # vLLM's "off" for top_k is -1
    assert VLLMBackend.sampling_kwargs(Sampling(top_k=5), 0)["top_k"] == 5
    greedy = VLLMBackend.sampling_kwargs(Sampling(do_sample=False, temperature=0.7, top_k=5), 0)
    assert (greedy["temperature"], greedy["top_p"], greedy["top_k"]) == (0.0, 1.0, -1)  # vLLM's greedy
    assert b.key() != HFBackend().key() and b.key() != VLLMBackend(dtype="auto").key()
    assert b.key() == VLLMBackend(dtype="bfloat16", gpu_memory_utilization=0.9).key()  # memory does not change samples
    with pytest.raises(ValueError, match="generation.gpu_memory_utilization"):
        VLLMBackend(gpu_memory_utilization=1.5)
    result = types.SimpleNamespace(
        outputs=[
            types.SimpleNamespace(text=" a b", token_ids=[5, 6, 2], finish_reason="stop"),
            types.SimpleNamespace(text="c", token_ids=[7, 8], finish_reason="length"),
        ]
    )
    out = outputs_of([result], 1.0)
    assert out.texts == [["a b", "c"]] and out.n_tokens == [[3, 2]] and out.finished == [[True, False]]


def test_vllm_adapter_sends_training_prompt_tokens_one_seed_per_prompt_and_reuses_its_engine(
    monkeypatch, saved, tmp_path
):
    engines = install_fake_vllm(monkeypatch)
    _, tok = load_saved(saved)
    prompts = [PROMPTS[6] * 3, PROMPTS[0]]  # the first is longer than max_prompt_tokens: cut as in training
    b = VLLMBackend(dtype="float32")
    s = Sampling(n=2, max_new_tokens=5, seed=4, max_prompt_tokens=16)
    b.generate(ModelRef(saved, "fp"), prompts, s, progress=False)
    b.generate(ModelRef(saved, "fp"), prompts, s, progress=False)
    assert len(engines) == 1 and engines[0].kw["model"] == str(saved) and engines[0].kw["dtype"] == "float32"
    inputs, params = engines[0].calls[0]
    assert [i["prompt_token_ids"] for i in inputs] == [encode_prompt(tok, p, False, 16) for p in prompts]
    assert len(inputs[0]["prompt_token_ids"]) == 16
    assert [p.kw["seed"] for p in params] == prompt_keys(prompts, 4, 1)
    other = save_tiny(tmp_path / "other", seed=4)
    b.generate(ModelRef(other, "fp2"), prompts, s, progress=False)
    assert len(engines) == 2 and b._engine[0] == str(other)  # one engine at a time: the old one was released
    b.release()
    assert b._engine is None
    with pytest.raises(ValueError, match="in-memory"):
        b.generate(ModelRef.in_memory(*load_saved(saved)), prompts, s, progress=False)


def test_vllm_check_names_what_is_missing(monkeypatch):
    from omegaconf import OmegaConf

    monkeypatch.setattr("importlib.util.find_spec", lambda name, *a: None)
    with pytest.raises(ValueError) as e:
        VLLMBackend().check()
    assert str(e.value) == MISSING and "[vllm]" in MISSING
    monkeypatch.setattr("importlib.util.find_spec", lambda name, *a: object())
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    with pytest.raises(ValueError, match="generation=vllm: expected a CUDA GPU"):
        VLLMBackend().check()
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    configs = Path(__file__).resolve().parents[1] / "configs" / "model"
    VLLMBackend().check(OmegaConf.load(configs / "llama.yaml"))
    with pytest.raises(ValueError, match="encoder-decoder model.teacher.config"):
        VLLMBackend().check(OmegaConf.load(configs / "t5.yaml"))


def test_a_swapped_backend_builds_the_pairs_under_its_own_cache_entry(saved, tmp_path, monkeypatch):
    import plad.backends.hf_sampling

    monkeypatch.setattr(plad.backends.hf_sampling, "generate", lambda *a, **k: pytest.fail("HF generate called"))
    teacher, student = ModelRef(saved, "t"), ModelRef(saved, "s")
    fake = obtain_pairs(
        pairs_cfg(), prompt_dataset(4), FakeTask(), teacher, student, tmp_path, 64, 6, 0, backend=FakeBackend()
    )
    expected = FakeBackend().generate(
        student,
        list(prompt_dataset(4)["prompt"]),
        Sampling(n=4, max_new_tokens=6, seed=fake_seed(0, "student")),
        progress=False,
    )
    rejected = {row["rejected"] for row in fake.pairwise}
    assert rejected <= {t for ts in expected.texts for t in ts} and fake.stats["backend"] == {"backend": "fake"}
    monkeypatch.undo()
    hf = obtain_pairs(pairs_cfg(), prompt_dataset(4), FakeTask(), teacher, student, tmp_path, 64, 6, 0)
    assert hf.path != fake.path and not hf.reused  # two backends never share an entry


def fake_seed(seed: int, role: str) -> int:
    from plad.pairs.shards import _role_seed

    return _role_seed(seed, role)


def test_reference_logprobs_are_cached_in_the_training_precision(saved, tmp_path):
    """Under trainer.precision=bf16-mixed, DPO's implicit reward at the first training step is ~0
    (stated tolerance 1e-5; measured 5e-7) with references cached in that precision, and carries
    bf16's systematic offset with fp32 references (measured 6e-4 on this tiny model)."""
    from plad.data.pair_datamodule import PairDataModule
    from plad.training.modules import DistillModule

    rewards = {}
    for precision in ("bf16-mixed", "32-true"):
        ps = obtain_pairs(
            pairs_cfg(n_student=1),
            prompt_dataset(8),
            FakeTask(),
            ModelRef(saved, "t"),
            ModelRef(saved, "s"),
            tmp_path / precision,
            64,
            6,
            0,
            precision=precision,
        )
        assert ps.stats["precision"] == precision
        L.seed_everything(0, verbose=False)
        module = DistillModule(str(saved), {"_target_": "plad.losses.dpo.DPOLoss", "beta": 1.0}, lr=0.0, max_steps=1)
        dm = PairDataModule(
            ps.path,
            module.tokenizer,
            False,
            inputs=module.loss_fn.inputs,
            batch_size=8,
            max_prompt_tokens=64,
            max_completion_tokens=6,
            val_size=0,
            seed=0,
        )
        trainer = L.Trainer(
            max_steps=1,
            precision="bf16-mixed",
            accelerator="cpu",
            logger=False,
            enable_progress_bar=False,
            enable_model_summary=False,
            enable_checkpointing=False,
            limit_val_batches=0,
        )
        trainer.fit(module, dm)
        rewards[precision] = max(
            abs(trainer.callback_metrics[f"train/reward_{k}"].item()) for k in ("chosen", "rejected")
        )
    assert rewards["bf16-mixed"] < 1e-5 and rewards["32-true"] > 1e-4
