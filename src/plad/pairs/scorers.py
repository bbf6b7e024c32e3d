"""Quality scorers for sampled outputs (``pairs.scorer``), chosen by Hydra ``_target_``.

Scores feed ``chosen_score``/``rejected_score`` (quality-aware losses) and the optional
``filter_by_score``. A scorer's ``fingerprint`` enters the pair-cache key, so changing the task's
metric or the reward model rebuilds the pairs.
"""
from __future__ import annotations

from pathlib import Path
from typing import Any, Sequence

from tqdm.auto import tqdm

from plad.cache import file_hash, fingerprint


class Scorer:
    """Maps (outputs, prompt-split rows) to one float per output, higher is better."""

    def fingerprint(self, task: Any) -> str:
        raise NotImplementedError

    def __call__(self, outputs: Sequence[str], examples: Sequence[dict[str, Any]], task: Any) -> list[float]:
        raise NotImplementedError

    def close(self) -> None:
        """Free whatever the scorer loaded (a reward model); it reloads on the next call."""


class TaskMetricScorer(Scorer):
    """The task's own per-example quality in [0, 1] (e.g. PII-free ROUGE for anonymization)."""

    def fingerprint(self, task: Any) -> str:
        return fingerprint("task_metric", task.fingerprint())

    def __call__(self, outputs: Sequence[str], examples: Sequence[dict[str, Any]], task: Any) -> list[float]:
        return [float(task.quality(o, ex)) for o, ex in zip(outputs, examples)]


def _path_signature(name_or_path: str) -> Any:
    """Content of small files + sizes of large ones for a local model dir (weights are not re-hashed)."""
    root = Path(name_or_path)
    if not root.exists():
        return name_or_path
    files = [root] if root.is_file() else sorted(p for p in root.rglob("*") if p.is_file())
    return [(str(p.relative_to(root if root.is_dir() else root.parent)),
             file_hash(p) if p.stat().st_size < (1 << 20) else p.stat().st_size) for p in files]


class RewardModelScorer(Scorer):
    """An HF sequence-classification reward model: logit of the single label, else of class 1."""

    def __init__(self, name_or_path: str, batch_size: int = 16, max_length: int = 512,
                 device: str | None = None) -> None:
        if batch_size < 1:
            raise ValueError(f"pairs.scorer.batch_size: expected an int >= 1, got {batch_size}")
        self.name_or_path = str(name_or_path)
        self.batch_size = batch_size
        self.max_length = max_length
        self.device = device
        self._model: Any = None
        self._tokenizer: Any = None

    def fingerprint(self, task: Any) -> str:
        return fingerprint("reward_model", self.max_length, _path_signature(self.name_or_path))

    def _load(self) -> None:
        import torch
        from transformers import AutoModelForSequenceClassification, AutoTokenizer

        device = self.device or ("cuda" if torch.cuda.is_available() else "cpu")
        tok = AutoTokenizer.from_pretrained(self.name_or_path)
        if tok.pad_token_id is None:
            tok.pad_token = tok.eos_token
        model = AutoModelForSequenceClassification.from_pretrained(self.name_or_path).to(device).eval()
        if model.config.pad_token_id is None:
            model.config.pad_token_id = tok.pad_token_id
        self._model, self._tokenizer = model, tok

    def __call__(self, outputs: Sequence[str], examples: Sequence[dict[str, Any]], task: Any) -> list[float]:
        import torch

        if self._model is None:
            self._load()
        prompts = [ex["prompt"] for ex in examples]
        order = sorted(range(len(outputs)), key=lambda i: -len(prompts[i]) - len(outputs[i]))
        scores = [0.0] * len(outputs)
        column = 0 if self._model.config.num_labels == 1 else 1
        device = next(self._model.parameters()).device
        for start in tqdm(range(0, len(order), self.batch_size), desc="reward model",
                          disable=len(order) <= self.batch_size):
            idx = order[start:start + self.batch_size]
            enc = self._tokenizer([prompts[i] for i in idx], [outputs[i] for i in idx], truncation=True,
                                  max_length=self.max_length, padding=True, return_tensors="pt").to(device)
            with torch.inference_mode():
                logits = self._model(**enc).logits.float()
            for i, s in zip(idx, logits[:, column].tolist()):
                scores[i] = s
        return scores

    def close(self) -> None:
        self._model = self._tokenizer = None
