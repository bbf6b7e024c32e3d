"""Quality scores of sampled outputs (``pairs.scorer``, ``configs/pairs/scorer/``), chosen by Hydra
``_target_``: how good a sample is, one float each, as opposed to how likely a model finds it
(``plad.models.likelihood``) or which of two outputs a judge prefers (``plad.evaluation.judges``).
Label-free by default (the teacher's likelihood, a reward model); the task metric is an oracle.

Scores feed ``chosen_score``/``rejected_score`` (quality-aware losses) and the optional
``filter_by_score``. A scorer's ``fingerprint`` enters the pair-cache key, so changing the task's
metric or the reward model rebuilds the pairs; it names the scorer by a fixed string, never by its
module path, so moving a class keeps existing caches.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

from tqdm.auto import tqdm

from plad.cache import file_hash, fingerprint
from plad.checks import InputError, integer
from plad.tasks.base import Task


class Scorer:
    """Maps (outputs, prompt-split rows) to one float per output, higher is better."""

    reads_references = False  # True: an oracle (needs pairs.oracle_references=true)
    needs_teacher_model = False  # True: needs a white-box teacher (not pairs.teacher_outputs)

    def bind(
        self, load_teacher: Any, teacher_fp: str, max_prompt_tokens: int, max_completion_tokens: int, batch_size: int
    ) -> None:
        """What the pair stage knows about the teacher and the token budgets; most scorers ignore it."""

    def fingerprint(self, task: Task) -> str:
        raise NotImplementedError

    def __call__(self, outputs: Sequence[str], examples: Sequence[dict[str, Any]], task: Task) -> list[float]:
        raise NotImplementedError

    def close(self) -> None:
        """Free whatever the scorer loaded (a reward model); it reloads on the next call."""


class TaskMetricScorer(Scorer):
    """The task's own per-example quality in [0, 1] against the reference: an oracle."""

    reads_references = True

    def fingerprint(self, task: Task) -> str:
        return fingerprint("task_metric", task.fingerprint())

    def __call__(self, outputs: Sequence[str], examples: Sequence[dict[str, Any]], task: Task) -> list[float]:
        return [float(task.quality(o, ex)) for o, ex in zip(outputs, examples)]


class TeacherLikelihoodScorer(Scorer):
    """The teacher's mean token log-likelihood of each sample (EOS included), label-free: how much
    the teacher itself would have said it. Loaded lazily, only when a shard needs scores."""

    needs_teacher_model = True

    def __init__(self) -> None:
        self._load: Any = None
        self._teacher_fp = ""
        self._budget: tuple[int, int, int] = (0, 0, 1)
        self._model: Any = None

    def bind(
        self, load_teacher: Any, teacher_fp: str, max_prompt_tokens: int, max_completion_tokens: int, batch_size: int
    ) -> None:
        self._load, self._teacher_fp = load_teacher, teacher_fp
        self._budget = (max_prompt_tokens, max_completion_tokens, batch_size)

    def fingerprint(self, task: Task) -> str:
        return fingerprint("teacher_loglik", self._teacher_fp, self._budget[:2])

    def __call__(self, outputs: Sequence[str], examples: Sequence[dict[str, Any]], task: Task) -> list[float]:
        from plad.models.likelihood import score_completions

        if self._load is None:
            raise InputError("pairs.scorer: teacher_loglik needs the teacher model (call bind first)")
        if self._model is None:
            self._model = self._load()
        model, tok = self._model
        max_prompt, max_completion, batch_size = self._budget
        prompts = [ex["prompt"] for ex in examples]
        return score_completions(
            model,
            tok,
            prompts,
            list(outputs),
            max_prompt_tokens=max_prompt,
            max_completion_tokens=max_completion,
            batch_size=batch_size,
            progress=False,
        ).mean_logp

    def close(self) -> None:
        self._model = None


def check_scorer(cfg_pairs: Any) -> None:
    """The protocol's rules for ``pairs.scorer``, checked before any expensive stage."""
    from hydra.utils import get_class

    target = (cfg_pairs.get("scorer") or {}).get("_target_")
    if not target:
        return
    cls = get_class(target)
    if getattr(cls, "reads_references", False) and not cfg_pairs.get("oracle_references", False):
        raise InputError(
            f"pairs.scorer: {cls.__name__} reads the references of the unlabeled prompts (an oracle); "
            "expected pairs.oracle_references=true, or a label-free scorer (teacher_loglik, reward_model)"
        )
    if getattr(cls, "needs_teacher_model", False) and cfg_pairs.get("teacher_outputs"):
        raise InputError(
            f"pairs.scorer: {cls.__name__} needs the teacher model, but pairs.teacher_outputs gives "
            "only its text; expected pairs/scorer=null or pairs/scorer=reward_model"
        )


def _path_signature(name_or_path: str) -> Any:
    """Content of small files + sizes of large ones for a local model dir (weights are not re-hashed)."""
    root = Path(name_or_path)
    if not root.exists():
        return name_or_path
    files = [root] if root.is_file() else sorted(p for p in root.rglob("*") if p.is_file())
    return [
        (
            str(p.relative_to(root if root.is_dir() else root.parent)),
            file_hash(p) if p.stat().st_size < (1 << 20) else p.stat().st_size,
        )
        for p in files
    ]


class RewardModelScorer(Scorer):
    """An HF sequence-classification reward model: logit of the single label, else of class 1."""

    def __init__(
        self, name_or_path: str, batch_size: int = 16, max_length: int = 512, device: str | None = None
    ) -> None:
        integer(batch_size, "pairs.scorer.batch_size")
        self.name_or_path = str(name_or_path)
        self.batch_size = batch_size
        self.max_length = max_length
        self.device = device
        self._model: Any = None
        self._tokenizer: Any = None

    def fingerprint(self, task: Task) -> str:
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

    def __call__(self, outputs: Sequence[str], examples: Sequence[dict[str, Any]], task: Task) -> list[float]:
        import torch

        if self._model is None:
            self._load()
        prompts = [ex["prompt"] for ex in examples]
        order = sorted(range(len(outputs)), key=lambda i: -len(prompts[i]) - len(outputs[i]))
        scores = [0.0] * len(outputs)
        column = 0 if self._model.config.num_labels == 1 else 1
        device = next(self._model.parameters()).device
        for start in tqdm(
            range(0, len(order), self.batch_size), desc="reward model", disable=len(order) <= self.batch_size
        ):
            idx = order[start : start + self.batch_size]
            enc = self._tokenizer(
                [prompts[i] for i in idx],
                [outputs[i] for i in idx],
                truncation=True,
                max_length=self.max_length,
                padding=True,
                return_tensors="pt",
            ).to(device)
            with torch.inference_mode():
                logits = self._model(**enc).logits.float()
            for i, s in zip(idx, logits[:, column].tolist()):
                scores[i] = s
        return scores

    def close(self) -> None:
        self._model = self._tokenizer = None
