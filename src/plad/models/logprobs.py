"""Per-sequence log-likelihood of a completion given a prompt.

This is the only place that knows label shifting, padding side and EOS handling. Every loss,
SFT, pair scoring and calibration consumes its output. Batches use one layout for every family
(``plad.models.encoding`` builds it):

* decoder-only: ``input_ids``/``attention_mask`` hold prompt + completion (left or right padded);
  ``labels`` equals ``input_ids`` on completion tokens (EOS included) and -100 elsewhere.
* encoder-decoder: ``input_ids``/``attention_mask`` hold the prompt; ``labels`` hold the
  completion (EOS included) padded with -100.

Which tokens count is decided by ``labels != -100`` and never by comparing with ``pad_token_id``,
so a completion's EOS is scored even when pad == eos.
"""

from __future__ import annotations

from typing import NamedTuple

import torch
import torch.nn.functional as F
from torch import Tensor

IGNORE_INDEX = -100


class SequenceLogProbs(NamedTuple):
    sum_logp: Tensor  # [B] summed log-probability of the completion tokens
    n_tokens: Tensor  # [B] number of completion tokens
    logits: Tensor | None = None  # [B, L, V] logits aligned with ``labels`` (only if asked)
    labels: Tensor | None = None  # [B, L] targets aligned with ``logits``

    @property
    def mean_logp(self) -> Tensor:
        return self.sum_logp / self.n_tokens.clamp(min=1)


def is_encoder_decoder(model: torch.nn.Module) -> bool:
    return bool(getattr(getattr(model, "config", None), "is_encoder_decoder", False))


def sequence_logprobs(
    model: torch.nn.Module,
    input_ids: Tensor,
    attention_mask: Tensor,
    labels: Tensor,
    return_logits: bool = False,
) -> SequenceLogProbs:
    """Summed completion log-probability and token count per example, in one forward pass."""
    if is_encoder_decoder(model):
        decoder_input_ids = model.prepare_decoder_input_ids_from_labels(labels=labels)
        logits = model(
            input_ids=input_ids, attention_mask=attention_mask, decoder_input_ids=decoder_input_ids, use_cache=False
        ).logits
        targets = labels
    else:
        # Positions follow the attention mask so left padding gives the same result as none.
        position_ids = (attention_mask.long().cumsum(-1) - 1).clamp(min=0)
        # Only positions that predict a completion token need logits: start at the first one.
        keep = _first_label_position(labels)
        logits = model(
            input_ids=input_ids,
            attention_mask=attention_mask,
            position_ids=position_ids,
            use_cache=False,
            logits_to_keep=input_ids.shape[1] - keep + 1,
        ).logits
        logits = logits[:, :-1]
        targets = labels[:, keep:]
    token_logp = -F.cross_entropy(
        logits.float().flatten(0, 1), targets.flatten(), ignore_index=IGNORE_INDEX, reduction="none"
    ).view(targets.shape)
    mask = targets != IGNORE_INDEX
    return SequenceLogProbs(
        sum_logp=(token_logp * mask).sum(-1),
        n_tokens=mask.sum(-1),
        logits=logits if return_logits else None,
        labels=targets if return_logits else None,
    )


def _first_label_position(labels: Tensor) -> int:
    """Index of the earliest completion token in the batch (>= 1: the first token is never predicted)."""
    has = (labels != IGNORE_INDEX).any(0)
    first = int(has.float().argmax()) if bool(has.any()) else labels.shape[1] - 1
    return max(first, 1)
