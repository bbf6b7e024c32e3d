"""Generation backends (``configs/generation/``): how samples are drawn for the pairs and the
evaluation. ``hf`` (default) samples with HF ``generate`` in this process; ``vllm`` with vLLM's
offline engine on GPUs. Both satisfy ``plad.backends.base.Backend``."""

from __future__ import annotations

from typing import Any

from plad.backends.base import Backend


def make_backend(generation_cfg: Any | None) -> Backend:
    """The configured backend (``cfg.generation``, a ``configs/generation/*.yaml``); HF when None."""
    from hydra.utils import instantiate

    from plad.backends.hf import HFBackend

    return instantiate(generation_cfg) if generation_cfg is not None else HFBackend()
