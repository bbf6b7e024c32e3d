"""The collate_fn of the SFT data module: dict rows -> the padded batch layout of
``plad.models.logprobs`` (the tokenising itself lives in ``plad.models.encoding``)."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from torch import Tensor

from plad.models.encoding import encode_example, pad_batch


class Collator:
    """Picklable collate_fn: encodes dict rows with ``prompt`` and ``reference``, then right-pads."""

    def __init__(self, tokenizer: Any, encoder_decoder: bool, max_prompt_tokens: int, max_completion_tokens: int):
        self.tokenizer = tokenizer
        self.encoder_decoder = encoder_decoder
        self.max_prompt_tokens = max_prompt_tokens
        self.max_completion_tokens = max_completion_tokens

    def __call__(self, rows: Sequence[dict[str, Any]]) -> dict[str, Tensor]:
        feats = [
            encode_example(
                self.tokenizer,
                r["prompt"],
                r["reference"],
                self.encoder_decoder,
                self.max_prompt_tokens,
                self.max_completion_tokens,
            )
            for r in rows
        ]
        return pad_batch(feats, self.tokenizer.pad_token_id, self.encoder_decoder)
