"""How a system answers each evaluation prompt (``eval.decoding``).

* ``greedy``: one output per prompt with ``eval.generation`` (greedy unless it says otherwise).
* ``rerank``: sample ``eval.rerank.n`` outputs per prompt (seeded, so reruns agree) and return the
  one with the highest MEAN token log-likelihood under the evaluated model itself. This is where
  calibration pays off directly: a model whose likelihood ranks its own samples by quality picks
  a better one. Candidates are scored by ``plad.models.likelihood``, the one likelihood helper.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from plad.backends.base import Backend, Sampling, sampled
from plad.checks import InputError, integer
from plad.models.likelihood import score_completions
from plad.models.ref import ModelRef

Decoder = Callable[..., tuple[list[str], dict[str, float]]]


@dataclass
class Reranked:
    texts: list[str]  # the chosen output per prompt
    candidates: list[list[str]]  # the n samples per prompt
    scores: list[list[float]]  # their mean log-likelihood under the model
    chosen: list[int]  # index of the chosen candidate (first of equal maxima)
    n_tokens: list[int]  # generated tokens of the chosen output (incl. EOS)
    seconds: float


def rerank(
    backend: Backend,
    ref: ModelRef,
    prompts: Sequence[str],
    *,
    n: int = 8,
    temperature: float = 1.0,
    top_p: float = 1.0,
    top_k: int = 0,
    seed: int = 0,
    max_new_tokens: int = 64,
    max_prompt_tokens: int = 256,
    batch_size: int = 16,
    progress: bool = True,
    desc: str = "rerank",
) -> Reranked:
    """Sample ``n`` outputs per prompt (with ``backend``) and keep the one the model itself finds
    most likely per token (scored by its HF copy)."""
    integer(n, "eval.rerank.n")
    start = time.perf_counter()
    gen = backend.generate(
        ref,
        prompts,
        Sampling(
            n=n,
            max_new_tokens=max_new_tokens,
            temperature=temperature,
            top_p=top_p,
            top_k=top_k,
            seed=seed,
            max_prompt_tokens=max_prompt_tokens,
        ),
        batch_size=batch_size,
        desc=f"generate[{desc}]",
        progress=progress,
    )
    model, tokenizer = backend.scoring_model(ref)
    flat = score_completions(
        model,
        tokenizer,
        [p for p, c in zip(prompts, gen.texts) for _ in c],
        [t for c in sampled(gen) for t in c],
        max_prompt_tokens=max_prompt_tokens,
        finished=[f for fs in gen.finished for f in fs],
        batch_size=batch_size,
        progress=progress,
        desc=f"score[{desc}]",
    ).mean_logp
    scores = [flat[i * n : (i + 1) * n] for i in range(len(prompts))]
    chosen = [int(np.argmax(s)) for s in scores]
    return Reranked(
        texts=[c[j] for c, j in zip(gen.texts, chosen)],
        candidates=gen.texts,
        scores=scores,
        chosen=chosen,
        n_tokens=[c[j] for c, j in zip(gen.n_tokens, chosen)],
        seconds=time.perf_counter() - start,
    )


def decode_greedy(
    backend: Backend, ref: ModelRef, prompts: list[str], cfg: dict[str, Any], progress: bool, name: str
) -> tuple[list[str], dict[str, float]]:
    g = backend.generate(
        ref,
        prompts,
        Sampling(n=1, **(cfg.get("generation") or {})),
        batch_size=int(cfg.get("batch_size", 16)),
        desc=f"generate[{name}]",
        progress=progress,
    )
    return (
        [texts[0] for texts in g.texts],
        {"gen_tokens": float(np.mean([n[0] for n in g.n_tokens])), "gen_seconds": float(g.seconds)},
    )


def decode_rerank(
    backend: Backend, ref: ModelRef, prompts: list[str], cfg: dict[str, Any], progress: bool, name: str
) -> tuple[list[str], dict[str, float]]:
    gen, rr = cfg.get("generation") or {}, cfg.get("rerank") or {}
    r = rerank(
        backend,
        ref,
        prompts,
        n=int(rr.get("n", 8)),
        temperature=float(rr.get("temperature", 1.0)),
        top_p=float(rr.get("top_p", 1.0)),
        top_k=int(rr.get("top_k", 0)),
        seed=int(gen.get("seed", 0)),
        max_new_tokens=int(gen.get("max_new_tokens", 64)),
        max_prompt_tokens=int(gen.get("max_prompt_tokens", 256)),
        batch_size=int(cfg.get("batch_size", 16)),
        progress=progress,
        desc=name,
    )
    return r.texts, {"gen_tokens": float(np.mean(r.n_tokens)), "gen_seconds": float(r.seconds)}


# eval.decoding -> decoder(backend, model ref, prompts, eval cfg, progress, system name)
DECODERS: dict[str, Decoder] = {"greedy": decode_greedy, "rerank": decode_rerank}


def decoding_settings(cfg: dict[str, Any]) -> dict[str, Any]:
    """What the outputs depend on besides the model and prompts: the mode and its settings (also the
    eval output cache key). Greedy outputs do not depend on the seed; sampled ones do."""
    mode = cfg.get("decoding", "greedy")
    if mode not in DECODERS:
        raise InputError(f"eval.decoding: expected one of {list(DECODERS)}, got {mode!r}")
    gen = dict(cfg.get("generation") or {})
    if mode == "greedy" and not gen.get("do_sample"):
        gen.pop("seed", None)
    settings = {"mode": mode, "generation": gen}
    if mode == "rerank":
        rr = dict(cfg.get("rerank") or {})
        n = rr.get("n", 8)
        integer(n, "eval.rerank.n")
        settings["rerank"] = rr
    return settings
