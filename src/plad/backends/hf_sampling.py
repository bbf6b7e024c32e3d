"""How the HF backend (``generation=hf``, ``plad.backends.hf``) samples: batched HF ``generate`` on a
causal or encoder-decoder LM loaded in this process.

Prompts are bucketed by token length (longest first) so a batch carries little padding, then the
original order is restored. Sampling uses the Gumbel-max trick with noise that is a pure function
of (seed, prompt text, sample index, step, token): a prompt gets the same samples whatever batch
size, bucketing order, device or earlier calls, which makes sharded and multi-process pair
building reproduce a single-process run exactly.
"""

from __future__ import annotations

import copy
import time
from collections.abc import Sequence
from typing import Any

import torch
from torch import Tensor
from tqdm.auto import tqdm
from transformers import LogitsProcessor, LogitsProcessorList
from transformers.generation.logits_process import TemperatureLogitsWarper, TopKLogitsWarper, TopPLogitsWarper

from plad.backends.base import GenerationOutput, Sampling, prompt_keys
from plad.checks import integer
from plad.models.encoding import encode_prompt, pad_batch
from plad.models.logprobs import is_encoder_decoder

_M32 = 0xFFFFFFFF


def _mix32(x: Tensor) -> Tensor:
    """lowbias32 integer hash on int64 tensors holding 32-bit values (constants < 2^31: no overflow)."""
    x = x ^ (x >> 16)
    x = (x * 0x7FEB352D) & _M32
    x = x ^ (x >> 15)
    x = (x * 0x5BD1E995) & _M32
    return x ^ (x >> 16)


class GumbelSampler(LogitsProcessor):
    """Adds Gumbel noise keyed by (row key, step, token); argmax then samples softmax(scores).

    Used with greedy decoding after the temperature/top-k/top-p warpers, so filtered tokens (-inf)
    are never drawn. One instance per ``generate`` call: ``step`` counts from its first call.
    """

    def __init__(self, row_keys: Tensor) -> None:
        self.row_keys = row_keys.long() & _M32
        self.start: int | None = None
        self.token_hash: Tensor | None = None

    def noise(self, step: int, vocab: int, device: torch.device) -> Tensor:
        if self.token_hash is None or self.token_hash.numel() != vocab or self.token_hash.device != device:
            self.token_hash = _mix32(_mix32((torch.arange(vocab, device=device) * 0x9E3779B1) & _M32))
        keys = self.row_keys.to(device)
        step_hash = _mix32(torch.tensor((step * 0x3C6EF372 + 0x2545F491) & _M32, device=device))
        h = _mix32(_mix32(keys ^ step_hash)[:, None] ^ self.token_hash[None, :])
        u = (h.double() + 0.5) / 2.0**32
        return -torch.log(-torch.log(u))

    def __call__(self, input_ids: torch.LongTensor, scores: torch.FloatTensor) -> torch.FloatTensor:
        if self.start is None:
            self.start = input_ids.shape[-1]
        step = input_ids.shape[-1] - self.start
        return scores + self.noise(step, scores.shape[-1], scores.device).to(scores.dtype)


def _generation_config(model: Any, tokenizer: Any, max_new_tokens: int, min_new_tokens: int) -> Any:
    """The model's config with greedy search (sampling comes from our processors)."""
    gc = copy.deepcopy(model.generation_config)
    eos = gc.eos_token_id if gc.eos_token_id is not None else tokenizer.eos_token_id
    pad = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else tokenizer.eos_token_id
    # Sampling knobs at HF's neutral defaults: None would be refilled from the model's own config.
    gc.update(
        do_sample=False,
        num_beams=1,
        temperature=1.0,
        top_p=1.0,
        top_k=50,
        min_p=None,
        typical_p=1.0,
        max_new_tokens=max_new_tokens,
        min_new_tokens=min_new_tokens or None,
        max_length=None,
        eos_token_id=eos,
        pad_token_id=pad,
        num_return_sequences=1,
        return_dict_in_generate=False,
    )
    return gc


def generate(
    model: Any,
    tokenizer: Any,
    prompts: Sequence[str],
    *,
    max_new_tokens: int = 64,
    do_sample: bool = True,
    temperature: float = 1.0,
    top_p: float = 1.0,
    top_k: int = 0,
    num_return_sequences: int = 1,
    batch_size: int = 16,
    seed: int = 0,
    max_prompt_tokens: int = 256,
    desc: str = "generate",
    progress: bool = True,
    min_new_tokens: int = 0,
) -> GenerationOutput:
    """Sample ``num_return_sequences`` completions per prompt; results are in prompt order."""
    Sampling(
        num_return_sequences,
        max_new_tokens,
        do_sample,
        temperature,
        top_p,
        top_k,
        seed,
        max_prompt_tokens,
        min_new_tokens,
    )  # checks the values
    integer(batch_size, "generate.batch_size")
    start_time = time.perf_counter()
    n, r = len(prompts), num_return_sequences
    enc_dec = is_encoder_decoder(model)
    encoded = [encode_prompt(tokenizer, p, enc_dec, max_prompt_tokens) for p in prompts]
    keys = prompt_keys(prompts, seed, r)
    order = sorted(range(n), key=lambda i: -len(encoded[i]))  # stable: ties keep prompt order
    gc = _generation_config(model, tokenizer, max_new_tokens, min_new_tokens)
    eos_ids = set(gc.eos_token_id if isinstance(gc.eos_token_id, list) else [gc.eos_token_id])
    device = next(model.parameters()).device
    texts: list[list[str]] = [[] for _ in range(n)]
    counts: list[list[int]] = [[] for _ in range(n)]
    finished: list[list[bool]] = [[] for _ in range(n)]
    token_ids: list[list[list[int]]] = [[] for _ in range(n)]
    n_generated = 0
    bar = tqdm(total=n, desc=desc, unit="prompt", disable=not progress, dynamic_ncols=True)
    was_training = model.training
    model.eval()
    try:
        for start in range(0, n, batch_size):
            idx = order[start : start + batch_size]
            batch = pad_batch(
                [{"input_ids": encoded[i], "labels": []} for i in idx],
                gc.pad_token_id,
                enc_dec,
                padding_side="right" if enc_dec else "left",
            )
            input_ids = batch["input_ids"].repeat_interleave(r, 0).to(device)
            attention_mask = batch["attention_mask"].repeat_interleave(r, 0).to(device)
            processors = LogitsProcessorList()
            if do_sample:
                if temperature != 1.0:
                    processors.append(TemperatureLogitsWarper(temperature))
                if top_k > 0:
                    processors.append(TopKLogitsWarper(top_k))
                if top_p < 1.0:
                    processors.append(TopPLogitsWarper(top_p))
                processors.append(GumbelSampler(torch.tensor([keys[i * r + j] for i in idx for j in range(r)])))
            with torch.inference_mode():
                out = model.generate(
                    input_ids=input_ids,
                    attention_mask=attention_mask,
                    generation_config=gc,
                    logits_processor=processors,
                )
            new = (out[:, 1:] if enc_dec else out[:, input_ids.shape[1] :]).tolist()
            for row, ids in enumerate(new):
                stop = next((t + 1 for t, tok in enumerate(ids) if tok in eos_ids), len(ids))
                ended = any(tok in eos_ids for tok in ids[:stop])
                i = idx[row // r]
                texts[i].append(tokenizer.decode(ids[:stop], skip_special_tokens=True).strip())
                counts[i].append(stop)
                finished[i].append(ended)
                token_ids[i].append(ids[: stop - 1] if ended else ids[:stop])
                n_generated += stop
            bar.update(len(idx))
            bar.set_postfix(tok_s=f"{n_generated / max(time.perf_counter() - start_time, 1e-9):.0f}")
    finally:
        bar.close()
        model.train(was_training)
    return GenerationOutput(
        texts=texts, n_tokens=counts, seconds=time.perf_counter() - start_time, finished=finished, token_ids=token_ids
    )
