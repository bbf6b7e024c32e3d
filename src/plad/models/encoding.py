"""Tokenising (prompt, completion) examples into the batch layout of ``plad.models.logprobs``, for
training batches, generation prompts and scoring alike.

Prompt and completion are tokenised separately and concatenated, so the prompt/completion
boundary is exact for every tokenizer. The completion always ends with EOS (unless truncated),
and labels mark it, so a student learns to stop even when pad == eos.

Instruct models expect their chat format: a tokenizer flagged with ``CHAT_TEMPLATE_FLAG`` (set by
``plad.models.tokenizer.set_prompt_format``, saved in its tokenizer_config.json) has every prompt
wrapped as one user turn by its chat template, here and only here, so SFT, sampling, scoring and
evaluation see the same tokens. Its EOS must then be the end-of-turn token (SmolLM2: <|im_end|>).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch
from torch import Tensor

from plad.checks import InputError
from plad.models.logprobs import IGNORE_INDEX

CHAT_TEMPLATE_FLAG = "plad_chat_template"  # tokenizer init kwarg: wrap prompts with its chat template
CHAT_TEMPLATE_OPTIONS = ("auto", "none")  # task.chat_template: auto = when the tokenizer has one
_SLOT = "\x00plad-user-content\x00"  # stands for the user content when splitting a rendered template


def check_chat_template(value: Any) -> str:
    if value not in CHAT_TEMPLATE_OPTIONS:
        raise InputError(f"task.chat_template: expected one of {', '.join(CHAT_TEMPLATE_OPTIONS)}, got {value!r}")
    return value


def uses_chat_template(tokenizer: Any) -> bool:
    return bool((getattr(tokenizer, "init_kwargs", None) or {}).get(CHAT_TEMPLATE_FLAG, False))


def _user_turn(tokenizer: Any, content: str) -> str:
    return tokenizer.apply_chat_template(
        [{"role": "user", "content": content}], add_generation_prompt=True, tokenize=False
    )


def _ids(tokenizer: Any, text: str) -> list[int]:
    return tokenizer(text, add_special_tokens=False)["input_ids"]


def _chat_prompt(tokenizer: Any, prompt: str, max_prompt_tokens: int) -> list[int]:
    """apply_chat_template's tokens; past the budget, the template's head and tail are kept whole
    and the user content loses its beginning (as a plain prompt does)."""
    ids = _ids(tokenizer, _user_turn(tokenizer, prompt))
    if len(ids) <= max_prompt_tokens:
        return ids
    parts = _user_turn(tokenizer, _SLOT).split(_SLOT)
    if len(parts) != 2:
        raise InputError(
            f"tokenizer.chat_template: expected the user content once in the rendered turn, "
            f"got it {len(parts) - 1} times"
        )
    head, tail = _ids(tokenizer, parts[0]), _ids(tokenizer, parts[1])
    budget = max_prompt_tokens - len(head) - len(tail)
    if budget < 1:
        raise InputError(
            f"task.max_prompt_tokens: expected more than {len(head) + len(tail)} (the chat "
            f"template's own tokens), got {max_prompt_tokens}"
        )
    content = _ids(tokenizer, prompt)
    return head + content[max(len(content) - budget, 0) :] + tail


def encode_prompt(tokenizer: Any, prompt: str, encoder_decoder: bool, max_prompt_tokens: int) -> list[int]:
    """The prompt's token ids, at most ``max_prompt_tokens``: every call site (training batches,
    generation, vLLM, scoring) encodes prompts here, so they always agree."""
    if uses_chat_template(tokenizer):
        if not encoder_decoder:
            return _chat_prompt(tokenizer, prompt, max_prompt_tokens)
        prompt = _user_turn(tokenizer, prompt)
    ids = tokenizer(prompt, add_special_tokens=False)["input_ids"]
    if encoder_decoder:
        return ids[: max(max_prompt_tokens - 1, 0)] + [tokenizer.eos_token_id]
    bos = [tokenizer.bos_token_id] if tokenizer.bos_token_id is not None else []
    # Keep the prompt's end (next to the completion); a plain ids[-k:] would keep everything at k == 0.
    return bos + ids[max(len(ids) - (max_prompt_tokens - len(bos)), 0) :]


Completion = str | Sequence[int]  # a text (a reference: tokenised here) or generated token ids (as is)


def encode_example(
    tokenizer: Any,
    prompt: str,
    completion: Completion,
    encoder_decoder: bool,
    max_prompt_tokens: int,
    max_completion_tokens: int | None,
    eos: bool = True,
) -> dict[str, list[int]]:
    """One example as ``input_ids`` + ``labels`` (lists; padding happens in ``pad_batch``).

    A sampled completion is passed as the token ids the model generated (without its EOS): a
    decoded text need not re-encode to them, and the likelihood of a sample is that of what was
    sampled. ``eos=False`` for a sample that was cut at the generation budget: it never produced an
    EOS, and scoring one it did not generate would misstate its likelihood (and teach the model not
    to stop). ``max_completion_tokens=None`` keeps the whole completion."""
    prompt_ids = encode_prompt(tokenizer, prompt, encoder_decoder, max_prompt_tokens)
    completion_ids = (
        tokenizer(completion, add_special_tokens=False)["input_ids"]
        if isinstance(completion, str)
        else [int(t) for t in completion]
    )
    completion_ids = (completion_ids + [tokenizer.eos_token_id] * eos)[:max_completion_tokens]
    if encoder_decoder:
        return {"input_ids": prompt_ids, "labels": completion_ids}
    return {"input_ids": prompt_ids + completion_ids, "labels": [IGNORE_INDEX] * len(prompt_ids) + completion_ids}


def _pad(seqs: Sequence[Sequence[int]], value: int, side: str) -> Tensor:
    width = max(len(s) for s in seqs)
    out = torch.full((len(seqs), width), value, dtype=torch.long)
    for i, s in enumerate(seqs):
        if len(s):
            if side == "left":
                out[i, width - len(s) :] = torch.as_tensor(s)
            else:
                out[i, : len(s)] = torch.as_tensor(s)
    return out


def pad_batch(
    features: Sequence[dict[str, Sequence[int]]], pad_token_id: int, encoder_decoder: bool, padding_side: str = "right"
) -> dict[str, Tensor]:
    """Pad encoded examples to the longest one. Decoder-only inputs may be left or right padded;
    encoder-decoder labels are always right padded (they are decoder targets)."""
    ids = [f["input_ids"] for f in features]
    batch = {
        "input_ids": _pad(ids, pad_token_id, padding_side),
        "attention_mask": _pad([[1] * len(s) for s in ids], 0, padding_side),
    }
    label_side = "right" if encoder_decoder else padding_side
    batch["labels"] = _pad([f["labels"] for f in features], IGNORE_INDEX, label_side)
    return batch


def target_counts(batch: dict[str, Tensor], encoder_decoder: bool) -> Tensor:
    """[examples, target tokens of each example's first sequence] of a collated batch: what a loss
    averages over (per-example terms; the NLL on y+ or the reference). Decoder-only position 0 is
    never a target (``plad.models.logprobs`` predicts from the previous token)."""
    labels = batch["labels"] if encoder_decoder else batch["labels"][:, 1:]
    k = batch["mask"].shape[1] if "mask" in batch else 1
    first = labels.view(-1, k, labels.shape[-1])[:, 0]
    return torch.tensor([first.shape[0], int((first != IGNORE_INDEX).sum())], dtype=torch.float32)
