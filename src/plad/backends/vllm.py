"""``generation=vllm``: vLLM's offline engine (``LLM`` + ``SamplingParams``) on GPUs, loading the
saved HF directory of the cached stage. The optional extra ``plad[vllm]``; ``check`` fails in one
line (exit 2, before any stage) without vLLM or without a GPU.

Reproducibility: every prompt gets its own ``SamplingParams`` with a seed derived from (seed,
prompt text, occurrence), as the HF backend keys its noise, so outputs do not depend on how vLLM
batches requests. Prompts are encoded by the model's HF tokenizer exactly as training encodes them
and sent as token ids, so both backends see the same prompt tokens. vLLM's random streams differ
from ours: the two backends draw different (equally distributed) samples for one seed, which is
why the backend is part of the pair and eval cache keys.
"""

from __future__ import annotations

import importlib.util
import json
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from plad.backends.base import Backend, GenerationOutput, Sampling, prompt_keys
from plad.checks import InputError, integer
from plad.models.encoding import encode_prompt
from plad.models.ref import ModelRef

MISSING = 'generation=vllm: expected the optional extra `pip install -e ".[vllm]"` (vllm is not installed)'


class VLLMBackend(Backend):
    name = "vllm"

    def __init__(
        self,
        dtype: str = "auto",
        gpu_memory_utilization: float = 0.85,
        tensor_parallel_size: int = 1,
        max_model_len: int | None = None,
        enforce_eager: bool = False,
    ) -> None:
        if not 0 < gpu_memory_utilization <= 1:
            raise InputError(
                f"generation.gpu_memory_utilization: expected a value in (0, 1], got {gpu_memory_utilization!r}"
            )
        integer(tensor_parallel_size, "generation.tensor_parallel_size")
        self.dtype, self.gpu_memory_utilization = dtype, gpu_memory_utilization
        self.tensor_parallel_size, self.max_model_len, self.enforce_eager = (
            tensor_parallel_size,
            max_model_len,
            enforce_eager,
        )
        self._engine: tuple[str, Any] | None = None  # (model dir, vllm.LLM)

    def key(self) -> dict[str, Any]:
        # dtype changes the numbers; memory and parallelism settings do not change what is sampled.
        return {"backend": self.name, "dtype": self.dtype}

    def check(self, model_cfg: Any = None) -> None:
        if importlib.util.find_spec("vllm") is None:
            raise InputError(MISSING)
        import torch

        if not torch.cuda.is_available():
            raise InputError(
                "generation=vllm: expected a CUDA GPU (vLLM samples on GPUs), got none; "
                "use generation=hf on this machine"
            )
        for role in ("teacher", "student"):
            spec = (model_cfg or {}).get(role) or {}
            if not spec.get("pretrained") and spec.get("config") and _is_encoder_decoder(spec["config"]):
                raise InputError(
                    f"generation=vllm: expected a decoder-only model, got an encoder-decoder "
                    f"model.{role}.config; use generation=hf for this family"
                )

    # ------------------------------------------------------------------ translation (unit-tested)
    def llm_kwargs(self, model_dir: str) -> dict[str, Any]:
        """Arguments of ``vllm.LLM`` for a saved HF directory."""
        kwargs = {
            "model": model_dir,
            "tokenizer": model_dir,
            "dtype": self.dtype,
            "seed": 0,
            "gpu_memory_utilization": self.gpu_memory_utilization,
            "tensor_parallel_size": self.tensor_parallel_size,
            "enforce_eager": self.enforce_eager,
        }
        if self.max_model_len is not None:
            kwargs["max_model_len"] = self.max_model_len
        return kwargs

    @staticmethod
    def sampling_kwargs(sampling: Sampling, seed: int) -> dict[str, Any]:
        """Arguments of ``vllm.SamplingParams`` for one prompt (greedy = temperature 0)."""
        s = sampling
        return {
            "n": s.n,
            "max_tokens": s.max_new_tokens,
            "min_tokens": s.min_new_tokens,
            "seed": seed,
            "temperature": s.temperature if s.do_sample else 0.0,
            "top_p": s.top_p if s.do_sample else 1.0,
            "top_k": s.top_k if s.do_sample and s.top_k > 0 else -1,
            "skip_special_tokens": True,
        }

    # ------------------------------------------------------------------ engine
    def _llm(self, ref: ModelRef) -> Any:
        if ref.path is None:
            raise InputError("generation=vllm: expected a model saved on disk (a cache entry), got an in-memory model")
        model_dir = str(ref.path)
        if self._engine is None or self._engine[0] != model_dir:
            self.release()
            self.check()
            config = json.loads((Path(model_dir) / "config.json").read_text())
            if config.get("is_encoder_decoder"):
                raise InputError(
                    f"generation=vllm: expected a decoder-only model, got encoder-decoder "
                    f"{config.get('model_type')!r}; use generation=hf for this family"
                )
            from vllm import LLM

            self._engine = (model_dir, LLM(**self.llm_kwargs(model_dir)))
        return self._engine[1]

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
        """``batch_size`` is unused: vLLM schedules its own batches."""
        from vllm import SamplingParams

        start = time.perf_counter()
        llm = self._llm(ref)
        tok = llm.get_tokenizer()
        inputs = [{"prompt_token_ids": encode_prompt(tok, p, False, sampling.max_prompt_tokens)} for p in prompts]
        params = [SamplingParams(**self.sampling_kwargs(sampling, k)) for k in prompt_keys(prompts, sampling.seed, 1)]
        results = llm.generate(inputs, params, use_tqdm=progress)
        return outputs_of(results, time.perf_counter() - start)

    def scoring_model(self, ref: ModelRef) -> tuple[Any, Any]:
        """The HF model for log-likelihoods: the engine is released first (it holds most of the GPU)."""
        import torch

        self.release()
        model, tok = ref.load()
        return model.to("cuda" if torch.cuda.is_available() else "cpu"), tok

    def release(self) -> None:
        if self._engine is not None:
            self._engine = None
            self.free_memory()


def _is_encoder_decoder(config_cfg: Any) -> bool:
    from hydra.utils import instantiate

    return bool(getattr(instantiate(config_cfg, _convert_="all"), "is_encoder_decoder", False))


def outputs_of(results: Sequence[Any], seconds: float) -> GenerationOutput:
    """vLLM ``RequestOutput``s (one per prompt, in order) as our ``GenerationOutput``. vLLM keeps
    the EOS id in ``token_ids`` and drops it from ``text``; ``finish_reason`` "stop" = ended by EOS
    (no stop strings are set), whose id is taken off ``token_ids`` as the HF backend does."""
    texts = [[c.text.strip() for c in r.outputs] for r in results]
    counts = [[len(c.token_ids) for c in r.outputs] for r in results]
    finished = [[c.finish_reason == "stop" for c in r.outputs] for r in results]
    ids = [
        [list(c.token_ids)[:-1] if c.finish_reason == "stop" else list(c.token_ids) for c in r.outputs] for r in results
    ]
    return GenerationOutput(texts=texts, n_tokens=counts, seconds=seconds, finished=finished, token_ids=ids)
