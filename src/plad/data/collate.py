"""The collate_fn of the SFT data module: dict rows -> the padded batch layout of
``plad.models.logprobs`` (the tokenising itself lives in ``plad.models.encoding``)."""
from __future__ import annotations

from typing import Any, Sequence

from torch import Tensor

from plad.models.encoding import encode_example, pad_batch


class Collator:
    """Picklable collate_fn: encodes dict rows with ``prompt`` and a completion column, then pads."""

    def __init__(self, tokenizer: Any, encoder_decoder: bool, max_prompt_tokens: int,
                 max_completion_tokens: int, completion_key: str = "reference", padding_side: str = "right"):
        self.tokenizer = tokenizer
        self.encoder_decoder = encoder_decoder
        self.max_prompt_tokens = max_prompt_tokens
        self.max_completion_tokens = max_completion_tokens
        self.completion_key = completion_key
        self.padding_side = padding_side

    def __call__(self, rows: Sequence[dict[str, Any]]) -> dict[str, Tensor]:
        feats = [encode_example(self.tokenizer, r["prompt"], r[self.completion_key], self.encoder_decoder,
                                self.max_prompt_tokens, self.max_completion_tokens) for r in rows]
        return pad_batch(feats, self.tokenizer.pad_token_id, self.encoder_decoder, self.padding_side)
