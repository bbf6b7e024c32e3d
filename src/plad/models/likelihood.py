"""Log-likelihood of given completions under a model: the one helper behind the pairs' reference
log-probs, the label-free teacher-likelihood quality score, calibration and rerank decoding.
(``plad.models.logprobs`` computes it for one batch in a forward pass; this batches and encodes.)

Completions are encoded exactly as in training (``plad.models.encoding``), batched by length, and
scored with ``sequence_logprobs``. A sampled completion is given as its generated token ids, a
reference as text. A sample cut at the generation budget is scored without an EOS
(``finished=False``): it never generated one.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import torch
from tqdm.auto import tqdm

from plad.checks import InputError
from plad.models.encoding import Completion, encode_example, pad_batch
from plad.models.logprobs import is_encoder_decoder, sequence_logprobs


@dataclass
class CompletionScores:
    sum_logp: list[float]  # summed log p(completion | prompt), per completion
    n_tokens: list[int]  # scored tokens (completion + EOS when it has one)

    @property
    def mean_logp(self) -> list[float]:
        return [s / max(n, 1) for s, n in zip(self.sum_logp, self.n_tokens)]


def score_completions(
    model: Any,
    tokenizer: Any,
    prompts: Sequence[str],
    completions: Sequence[Completion],
    *,
    max_prompt_tokens: int,
    max_completion_tokens: int | None = None,
    finished: Sequence[bool] | None = None,
    batch_size: int = 16,
    progress: bool = True,
    desc: str = "score",
) -> CompletionScores:
    """Score every (prompt, completion): a text is tokenised, token ids are scored as they are.
    ``max_completion_tokens=None`` scores the whole completion; ``finished[i]=False`` leaves out the
    EOS."""
    if len(prompts) != len(completions) or (finished is not None and len(finished) != len(prompts)):
        raise InputError(
            f"score_completions: expected as many prompts as completions (and finished flags), "
            f"got {len(prompts)}, {len(completions)}, {None if finished is None else len(finished)}"
        )
    enc_dec = is_encoder_decoder(model)
    flags = finished if finished is not None else [True] * len(prompts)
    feats = [
        encode_example(tokenizer, p, c, enc_dec, max_prompt_tokens, max_completion_tokens, eos=bool(f))
        for p, c, f in zip(prompts, completions, flags)
    ]
    order = sorted(range(len(feats)), key=lambda i: -len(feats[i]["input_ids"]) - len(feats[i]["labels"]))
    pad = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else tokenizer.eos_token_id
    device = next(model.parameters()).device
    sums, counts = [0.0] * len(feats), [0] * len(feats)
    was_training = model.training
    model.eval()
    starts = range(0, len(order), batch_size)
    try:
        for start in tqdm(starts, desc=desc, disable=not progress or len(starts) <= 1, leave=False):
            idx = order[start : start + batch_size]
            batch = {k: v.to(device) for k, v in pad_batch([feats[i] for i in idx], pad, enc_dec).items()}
            with torch.inference_mode():
                out = sequence_logprobs(model, **batch)
            for i, s, n in zip(idx, out.sum_logp.tolist(), out.n_tokens.tolist()):
                sums[i], counts[i] = s, int(n)
    finally:
        model.train(was_training)
    return CompletionScores(sums, counts)
