"""The interface every generation backend satisfies, and what a call asks of it.

Stages hand a backend ``ModelRef``s (a saved directory + fingerprint), never loaded models: each
backend loads what it needs (HF weights in this process, or a vLLM engine). Contract, tested for
every backend (tests/test_backends.py): outputs come in prompt order, ``n`` per prompt; the same
seed gives the same outputs on a rerun; a sample stops at EOS, which is stripped from the text and
counted in ``n_tokens``; ``finished`` says whether it ended with EOS (False: cut at the budget).
"""
from __future__ import annotations

from abc import ABC, abstractmethod
from typing import Any, Sequence

from plad.generation import GenerationOutput, Sampling
from plad.models.ref import ModelRef

__all__ = ["Backend", "GenerationOutput", "Sampling"]


class Backend(ABC):
    """Draws samples from saved models. Use as a context manager (or call ``release``) so the
    model it holds is freed before the next stage needs the memory."""
    name: str = ""

    def key(self) -> dict[str, Any]:
        """Everything besides ``Sampling`` the outputs depend on: part of the pair and eval cache
        keys, so two backends (or two settings of one) never share an entry."""
        return {"backend": self.name}

    def check(self, model_cfg: Any = None) -> None:
        """Fail in one line, before any expensive stage, when this backend cannot run here (or
        cannot run the model family ``model_cfg``, a ``configs/model/*.yaml``)."""

    @abstractmethod
    def generate(self, ref: ModelRef, prompts: Sequence[str], sampling: Sampling, *, batch_size: int = 16,
                 desc: str = "generate", progress: bool = True) -> GenerationOutput:
        """``sampling.n`` samples per prompt, in prompt order."""

    @abstractmethod
    def scoring_model(self, ref: ModelRef) -> tuple[Any, Any]:
        """The HF (model, tokenizer) of ``ref`` for log-likelihoods (reference log-probs, rerank,
        calibration), which every backend computes with ``plad.models.scoring``."""

    def release(self) -> None:
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

    def __enter__(self) -> "Backend":
        return self

    def __exit__(self, *exc: Any) -> None:
        self.release()
