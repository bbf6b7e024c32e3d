"""The interface every generation backend satisfies, and what a call asks of it.

Stages hand a backend ``ModelRef``s (a saved directory + fingerprint), never loaded models: each
backend loads what it needs (HF weights in this process, or a vLLM engine). Contract, tested for
every backend (tests/test_backends.py): outputs come in prompt order, ``n`` per prompt; the same
seed gives the same outputs on a rerun; a sample stops at EOS, which is stripped from the text and
counted in ``n_tokens``; ``finished`` says whether it ended with EOS (False: cut at the budget).
"""

from __future__ import annotations

import hashlib
from abc import ABC, abstractmethod
from collections import Counter
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from plad.checks import InputError, integer, is_number, number
from plad.models.ref import ModelRef

__all__ = ["Backend", "GenerationOutput", "Sampling", "check_sampling", "prompt_keys", "sampled"]


@dataclass(frozen=True)
class Sampling:
    """What samples depend on besides the model, the prompts and the backend (plad.backends)."""

    n: int = 1  # samples per prompt
    max_new_tokens: int = 64
    do_sample: bool = True  # False: greedy
    temperature: float = 1.0
    top_p: float = 1.0
    top_k: int = 0  # 0 = off
    seed: int = 0
    max_prompt_tokens: int = 256  # prompts are truncated from the left, as in training
    min_new_tokens: int = 0

    def __post_init__(self) -> None:
        integer(self.n, "generate.n")
        integer(self.max_new_tokens, "generate.max_new_tokens")
        if not 0 <= self.min_new_tokens <= self.max_new_tokens:
            raise InputError(
                f"generate.min_new_tokens: expected 0 <= min_new_tokens <= max_new_tokens, got {self.min_new_tokens!r}"
            )
        check_sampling(vars(self), "generate")


def check_sampling(settings: Mapping[str, Any], field: str) -> None:
    """temperature > 0, top_p in (0, 1], top_k >= 0 (0 = off), do_sample true or false: what every
    backend accepts. Checks the keys ``settings`` has, so a config block (``pairs.teacher``,
    ``eval.generation``) is checked at preflight with the rules ``Sampling`` applies when built."""
    if "temperature" in settings:
        number(settings["temperature"], f"{field}.temperature", positive=True)
    if "top_p" in settings and not (is_number(settings["top_p"]) and 0 < settings["top_p"] <= 1):
        raise InputError(f"{field}.top_p: expected a number in (0, 1], got {settings['top_p']!r}")
    if "top_k" in settings:
        integer(settings["top_k"], f"{field}.top_k", minimum=0)
    if "do_sample" in settings and not isinstance(settings["do_sample"], bool):
        raise InputError(f"{field}.do_sample: expected true or false, got {settings['do_sample']!r}")


def prompt_keys(prompts: Sequence[str], seed: int, num_return_sequences: int) -> list[int]:
    """One 32-bit key per (prompt, sample), from which each backend seeds that sample (HF: its
    Gumbel noise; vLLM: its per-request seed), so outputs do not depend on batching or process
    count. Repeated prompts count occurrences to stay distinct."""
    seen: Counter[str] = Counter()
    keys = []
    for p in prompts:
        occurrence = seen[p]
        seen[p] += 1
        for j in range(num_return_sequences):
            digest = hashlib.sha256(f"{seed}\x00{occurrence}\x00{j}\x00{p}".encode()).digest()
            keys.append(int.from_bytes(digest[:4], "little"))
    return keys


@dataclass
class GenerationOutput:
    """Samples as text (for reading, metrics and text-only consumers) and as the token ids that were
    generated: what any likelihood of a sample must score. A decoded text does not always re-encode
    to the same ids (BPE merges differ, special tokens are stripped), and a cut sample never ended."""

    texts: list[list[str]]  # per prompt, num_return_sequences samples (special tokens stripped)
    n_tokens: list[list[int]]  # generated token counts (incl. EOS if produced)
    seconds: float
    finished: list[list[bool]] | None = None  # ended with EOS (False: cut at max_new_tokens)
    token_ids: list[list[list[int]]] | None = None  # generated ids without the EOS (``finished`` says if one followed)

    @property
    def total_tokens(self) -> int:
        return sum(sum(n) for n in self.n_tokens)


def sampled(out: GenerationOutput, backend: str = "the generation backend") -> list[list[list[int]]]:
    """The generated token ids of every sample: what a likelihood of the samples must score (their
    texts need not re-encode to them). A backend that returns none cannot serve such a consumer."""
    if out.token_ids is None:
        raise InputError(
            f"generation: expected {backend} to return the samples' token ids "
            "(GenerationOutput.token_ids), got texts only"
        )
    return out.token_ids


class Backend(ABC):
    """Draws samples from saved models. Use as a context manager (or call ``release``) so the
    model it holds is freed before the next stage needs the memory."""

    name: str = ""

    def key(self) -> dict[str, Any]:
        """Everything besides ``Sampling`` the outputs depend on: part of the pair and eval cache
        keys, so two backends (or two settings of one) never share an entry."""
        return {"backend": self.name}

    def check(self, model_cfg: Any = None) -> None:  # noqa: B027 (optional hook: nothing to check by default)
        """Fail in one line, before any expensive stage, when this backend cannot run here (or
        cannot run the model family ``model_cfg``, a ``configs/model/*.yaml``)."""

    @abstractmethod
    def generate(
        self,
        ref: ModelRef,
        prompts: Sequence[str],
        sampling: Sampling,
        *,
        batch_size: int = 16,
        desc: str = "generate",
        progress: bool = True,
    ) -> GenerationOutput:
        """``sampling.n`` samples per prompt, in prompt order."""

    @abstractmethod
    def scoring_model(self, ref: ModelRef) -> tuple[Any, Any]:
        """The HF (model, tokenizer) of ``ref`` for log-likelihoods (reference log-probs, rerank,
        calibration), which every backend computes with ``plad.models.likelihood``."""

    def release(self) -> None:  # noqa: B027 (optional hook)
        """Free the model or engine this backend holds."""

    @staticmethod
    def free_memory() -> None:
        """After the last reference to a model is dropped: collect it, and return the GPU's cached
        blocks, so the next model (or vLLM's pre-allocation) fits."""
        import gc

        import torch

        gc.collect()
        if torch.cuda.is_available():
            torch.cuda.empty_cache()

    def __enter__(self) -> Backend:
        return self

    def __exit__(self, *exc: Any) -> None:
        self.release()
