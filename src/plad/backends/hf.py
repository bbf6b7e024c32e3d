"""``generation=hf`` (the default): HF ``generate`` in this process (``plad.backends.hf_sampling``:
batched, length-bucketed, sampling noise keyed by (seed, prompt, sample) so outputs do not depend on
batch size, order or process count). Holds one loaded model at a time and shares it with scoring."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from plad.backends.base import Backend, GenerationOutput, Sampling
from plad.checks import InputError
from plad.models.ref import ModelRef


class HFBackend(Backend):
    name = "hf"

    def __init__(self, device: str = "auto") -> None:
        if device != "auto":  # torch imported where needed: a warm pair cache needs the key, not torch
            import torch

            try:
                torch.device(device)
            except RuntimeError as e:
                raise InputError(f"generation.device: expected auto, cpu, cuda or cuda:<i>, got {device!r}") from e
        self.device = device
        self._held: tuple[ModelRef, Any, Any] | None = None  # (ref, model, tokenizer)

    def _device(self) -> Any:
        import torch

        if self.device == "auto":
            return torch.device("cuda" if torch.cuda.is_available() else "cpu")
        return torch.device(self.device)

    def check(self, model_cfg: Any = None) -> None:
        import torch

        if self._device().type == "cuda" and not torch.cuda.is_available():
            raise InputError(f"generation.device: expected a visible CUDA GPU for {self.device!r}, got none")

    def scoring_model(self, ref: ModelRef) -> tuple[Any, Any]:
        """The model (on this backend's device) and tokenizer; the same objects sampling uses."""
        held = self._held[0] if self._held is not None else None
        same = held is ref or (
            held is not None and held.loader is None and ref.loader is None and held.path == ref.path
        )
        if not same:
            self.release()
            model, tok = ref.load()
            self._held = (ref, model.to(self._device()), tok)
        return self._held[1], self._held[2]

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
        from plad.backends import hf_sampling

        model, tok = self.scoring_model(ref)
        s = sampling
        # Looked up on the module, so tests can spy on plad.backends.hf_sampling.generate.
        return hf_sampling.generate(
            model,
            tok,
            prompts,
            max_new_tokens=s.max_new_tokens,
            do_sample=s.do_sample,
            temperature=s.temperature,
            top_p=s.top_p,
            top_k=s.top_k,
            num_return_sequences=s.n,
            batch_size=batch_size,
            seed=s.seed,
            max_prompt_tokens=s.max_prompt_tokens,
            desc=desc,
            progress=progress,
            min_new_tokens=s.min_new_tokens,
        )

    def release(self) -> None:
        if self._held is not None:
            self._held = None
            self.free_memory()
