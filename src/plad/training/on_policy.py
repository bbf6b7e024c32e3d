"""On-policy student samples during distillation (GKD's ``lmbda``, on-policy PLaD).

Off-policy distillation trains on sequences sampled once, before training: the pair cache's teacher
samples (y+) and the INITIAL student's samples (y-). On-policy methods (GKD, Agarwal et al. 2024;
DistiLLM's replay; DistiLLM-2) instead let the student learn on what it generates now, so its
training distribution follows its own mistakes. Here a batch of the pair data module is turned
on-policy by replacing its student-side sequence with a fresh sample of the CURRENT student on the
same prompt:

* pairwise losses (ranking, margin, ..., dpkd): y- becomes the current student's sample, y+ stays the
  cached teacher sample (on-policy PLaD);
* single-sequence white-box losses (kd, gkd, skew_kl, taid): the sequence becomes the student's sample
  and the teacher scores it online (GKD with lmbda; lmbda = 1 is fully on-policy).

Which batches: with probability ``lmbda`` (GKD-style), or every ``every``-th optimizer step. Both the
choice and the sampling noise are pure functions of (seed, optimizer step, micro-batch), and the
student's weights at a step are restored by a checkpoint, so a resumed run draws the same samples as
an uninterrupted one: nothing but two counters (logged) needs saving.

Samples come from ``plad.backends.hf_sampling.generate`` on the in-memory student (the HF backend's
sampler: same seeding, EOS and cut-sample handling as the pair stage). A cut sample keeps no EOS.
vLLM cannot sample from weights that change every step without a weight sync, so on-policy runs
need ``generation=hf`` (refused in one line otherwise).
"""

from __future__ import annotations

import hashlib
import time
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from torch import Tensor

from plad.checks import InputError, integer, share
from plad.models.encoding import encode_example, pad_batch
from plad.models.logprobs import IGNORE_INDEX

FIELD = "distill.on_policy"
COLUMNS = ("auto", "rejected", "chosen")


@dataclass(frozen=True)
class OnPolicy:
    """``distill.on_policy``: which batches are resampled from the current student, and how."""

    lmbda: float = 0.0  # share of batches made on-policy (GKD's lmbda); 0 = off
    every: int | None = None  # instead: every K-th optimizer step (step 0, K, 2K, ...)
    column: str = "auto"  # sequence replaced: auto = rejected if the loss reads it, else chosen (white-box)
    seed: int = 0  # the run seed (sampling noise and the lmbda draws derive from it)
    max_new_tokens: int = 64
    max_prompt_tokens: int = 256
    temperature: float = 1.0
    top_p: float = 1.0
    top_k: int = 0

    def __post_init__(self) -> None:
        share(self.lmbda, f"{FIELD}.lmbda")
        integer(self.every, f"{FIELD}.every", null=True)
        if self.column not in COLUMNS:
            raise InputError(f"{FIELD}.column: expected one of {', '.join(COLUMNS)}, got {self.column!r}")
        integer(self.seed, f"{FIELD}.seed", minimum=0)
        integer(self.max_new_tokens, f"{FIELD}.max_new_tokens")
        integer(self.max_prompt_tokens, f"{FIELD}.max_prompt_tokens")
        from plad.backends.base import check_sampling

        check_sampling({"temperature": self.temperature, "top_p": self.top_p, "top_k": self.top_k}, FIELD)

    @classmethod
    def from_config(cls, cfg: Any) -> OnPolicy | None:
        """The setting, or None when it is off (no ``on_policy`` block, lmbda 0 and no ``every``)."""
        if cfg is None:
            return None
        if not hasattr(cfg, "items"):
            raise InputError(f"{FIELD}: expected a mapping of {', '.join(cls.__dataclass_fields__)}, got {cfg!r}")
        unknown = sorted(set(cfg) - set(cls.__dataclass_fields__))
        if unknown:
            raise InputError(f"{FIELD}: unknown keys {unknown}; expected {', '.join(cls.__dataclass_fields__)}")
        setting = cls(**dict(cfg.items()))
        return setting if setting.enabled else None

    @property
    def enabled(self) -> bool:
        return self.every is not None or self.lmbda > 0

    def _draw(self, tag: str, step: int, micro: int) -> int:
        digest = hashlib.sha256(f"{tag}\x00{self.seed}\x00{step}\x00{micro}".encode()).digest()
        return int.from_bytes(digest[:4], "little")

    def active(self, step: int, micro: int = 0) -> bool:
        """Is the batch at (optimizer step, micro-batch within it) made on-policy?"""
        if self.every is not None:
            return step % self.every == 0
        return self._draw("lmbda", step, micro) / 2.0**32 < self.lmbda

    def sample_seed(self, step: int, micro: int = 0) -> int:
        """The seed of this batch's samples: a new draw per step, the same on a resumed run."""
        return self._draw("sample", step, micro)


def replaced_column(setting: OnPolicy, loss_cls: type, teacher_logits: str = "online") -> int:
    """Index (in the loss's ``inputs``) of the sequence on-policy samples replace; refuses, in one
    line, losses for which a student sample cannot stand in for a cached sequence."""
    name = loss_cls.__name__
    if getattr(loss_cls, "needs_teacher", False) and teacher_logits != "online":
        raise InputError(
            f"distill.teacher_logits: {name} on on-policy samples needs the teacher to score each new "
            f"sample; expected online, got {teacher_logits!r}"
        )
    if getattr(loss_cls, "data_source", "pairs") != "pairs":
        raise InputError(f"{FIELD}: {name} trains on the labeled train split; on-policy samples need a pair loss")
    inputs = tuple(loss_cls.inputs)
    if inputs == ("candidates",):
        raise InputError(f"{FIELD}: {name} is listwise; on-policy samples are supported for pairwise losses")
    for needs, what in (("needs_reference", "reference log-likelihoods"), ("needs_quality", "quality scores")):
        if getattr(loss_cls, needs, False):
            raise InputError(f"{FIELD}: {name} reads cached {what}, which a fresh sample does not have")
    column = setting.column
    if column == "auto":
        if "rejected" in inputs:
            column = "rejected"
        elif getattr(loss_cls, "needs_teacher", False) and "chosen" in inputs:
            column = "chosen"  # GKD: the student's sequence, scored by the teacher online
        else:
            raise InputError(
                f"{FIELD}: {name} learns from the teacher's samples only (inputs {inputs}); a student sample "
                "would teach it its own outputs. Use a pairwise or white-box loss"
            )
    if column not in inputs:
        raise InputError(f"{FIELD}.column: expected one of the loss's inputs {inputs}, got {column!r}")
    return inputs.index(column)


def _unpad(batch: dict[str, Tensor], row: int, encoder_decoder: bool) -> dict[str, list[int]]:
    """Row ``row`` of a padded batch back as the lists ``encode_example`` made (either padding side)."""
    keep = batch["attention_mask"][row].bool()
    input_ids = batch["input_ids"][row][keep]
    labels = batch["labels"][row]
    labels = labels[labels != IGNORE_INDEX] if encoder_decoder else labels[keep]
    return {"input_ids": input_ids.tolist(), "labels": labels.tolist()}


def resample(
    model: Any,
    tokenizer: Any,
    batch: dict[str, Any],
    column: int,
    setting: OnPolicy,
    seed: int,
    encoder_decoder: bool,
    padding_side: str = "right",
) -> tuple[dict[str, Any], float, float]:
    """``batch`` with sequence ``column`` of every example replaced by a sample of ``model`` on its
    prompt; returns (batch, generation seconds, share of samples cut at the budget)."""
    from plad.backends import hf_sampling

    prompts: Sequence[str] = batch["prompts"]
    B, K = batch["mask"].shape
    start = time.perf_counter()
    out = hf_sampling.generate(
        model,
        tokenizer,
        prompts,
        max_new_tokens=setting.max_new_tokens,
        do_sample=True,
        temperature=setting.temperature,
        top_p=setting.top_p,
        top_k=setting.top_k,
        batch_size=len(prompts),
        seed=seed,
        max_prompt_tokens=setting.max_prompt_tokens,
        progress=False,
    )
    seconds = time.perf_counter() - start
    feats = []
    for b in range(B):
        for k in range(K):
            if k == column:
                feats.append(
                    encode_example(
                        tokenizer,
                        prompts[b],
                        out.token_ids[b][0],
                        encoder_decoder,
                        setting.max_prompt_tokens,
                        setting.max_new_tokens,
                        eos=out.finished[b][0],
                    )
                )
            else:
                feats.append(_unpad(batch, b * K + k, encoder_decoder))
    pad_id = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else tokenizer.eos_token_id
    new = pad_batch(feats, pad_id, encoder_decoder, padding_side)
    device = batch["input_ids"].device
    cut = 1.0 - sum(f[0] for f in out.finished) / max(B, 1)
    return {**batch, **{k: v.to(device) for k, v in new.items()}}, seconds, cut
