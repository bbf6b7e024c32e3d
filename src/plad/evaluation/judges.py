"""Pairwise judges: how often the distilled student beats another system on the same prompts.

Every judge answers ``compare(prompts, outputs_a, outputs_b, examples) -> list[float]``: the score
of A against B per prompt, 1 = A wins, 0 = B wins, 0.5 = tie (an LLM judge returns a probability).
Swapping A and B gives ``1 - score`` for every judge, so a win rate never depends on which side a
system was put on. Judges are picked with Hydra (``configs/judge/*.yaml``) and bound to the task by
``evaluate`` because the metric judge needs the task's quality score.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
import torch
from tqdm.auto import tqdm

from plad.checks import InputError
from plad.tasks.base import Task

DEFAULT_LLM_TEMPLATE = (
    "Which response follows the instruction better?\n\n"
    "Instruction:\n{prompt}\n\n"
    "Response A:\n{a}\n\n"
    "Response B:\n{b}\n\n"
    "Answer with one letter, A or B."
)


class Judge:
    """Base class: subclasses implement ``compare``."""

    name: str = "judge"

    def __init__(self, task: Task | None = None) -> None:
        self.task = task

    def bind(self, task: Task) -> Judge:
        """Give the judge the task (for quality scores); returns self for chaining."""
        self.task = task
        return self

    def compare(
        self,
        prompts: Sequence[str],
        outputs_a: Sequence[str],
        outputs_b: Sequence[str],
        examples: Sequence[dict[str, Any]],
    ) -> list[float]:
        raise NotImplementedError


def _check_lengths(prompts: Sequence, outputs_a: Sequence, outputs_b: Sequence, examples: Sequence) -> None:
    n = len(prompts)
    if not len(outputs_a) == len(outputs_b) == len(examples) == n:
        raise InputError(
            f"judge.compare: expected prompts, outputs_a, outputs_b, examples of equal length, "
            f"got {n}, {len(outputs_a)}, {len(outputs_b)}, {len(examples)}"
        )


def _versus(a: float, b: float, tie_eps: float) -> float:
    if abs(a - b) <= tie_eps:
        return 0.5
    return 1.0 if a > b else 0.0


class MetricJudge(Judge):
    """The task's own quality score against the reference decides; equal scores are a tie."""

    name = "metric"

    def __init__(self, task: Task | None = None, tie_eps: float = 1e-9) -> None:
        super().__init__(task)
        self.tie_eps = tie_eps

    def compare(self, prompts, outputs_a, outputs_b, examples) -> list[float]:
        _check_lengths(prompts, outputs_a, outputs_b, examples)
        if self.task is None:
            raise InputError("judge.task: expected a Task (call judge.bind(task)), got None")
        return [
            _versus(self.task.quality(a, ex), self.task.quality(b, ex), self.tie_eps)
            for a, b, ex in zip(outputs_a, outputs_b, examples)
        ]


def _device(device: str | None) -> torch.device:
    return torch.device(device or ("cuda" if torch.cuda.is_available() else "cpu"))


def _dtype(dtype: str | None) -> torch.dtype | None:
    if dtype is None:
        return None
    value = getattr(torch, dtype, None)
    if not isinstance(value, torch.dtype):
        raise InputError(f"judge.dtype: expected a torch dtype name like 'bfloat16', got {dtype!r}")
    return value


class _HFJudge(Judge):
    """Loads a Hugging Face model (hub name or local path) lazily, on the first comparison."""

    auto_class: str = ""

    def __init__(
        self,
        model: str,
        task: Task | None = None,
        batch_size: int = 8,
        max_length: int = 1024,
        use_chat_template: bool | None = None,
        device: str | None = None,
        dtype: str | None = None,
        progress: bool = True,
    ) -> None:
        super().__init__(task)
        if not model:
            raise InputError(f"judge.model: expected a model name or path, got {model!r}")
        self.model_name = str(model)
        self.batch_size = batch_size
        self.max_length = max_length
        self.use_chat_template = use_chat_template
        self.device = _device(device)
        self.dtype = _dtype(dtype)
        self.progress = progress
        self._model = None
        self._tokenizer = None

    def load(self) -> tuple[Any, Any]:
        if self._model is None:
            import transformers

            tok = transformers.AutoTokenizer.from_pretrained(self.model_name)
            model = getattr(transformers, self.auto_class).from_pretrained(self.model_name, dtype=self.dtype)
            if tok.pad_token_id is None:
                tok.pad_token = tok.eos_token
            if getattr(model.config, "pad_token_id", None) is None:
                model.config.pad_token_id = tok.pad_token_id
            self._model, self._tokenizer = model.to(self.device).eval(), tok
        return self._model, self._tokenizer

    def _chat(self, tok: Any) -> bool:
        has = bool(getattr(tok, "chat_template", None))
        if self.use_chat_template and not has:
            raise InputError(f"judge.use_chat_template: {self.model_name} has no chat template, got True")
        return has if self.use_chat_template is None else bool(self.use_chat_template)

    def _batches(self, n: int, desc: str):
        starts = range(0, n, self.batch_size)
        return tqdm(starts, desc=desc, disable=not self.progress or len(starts) <= 1, leave=False)


class RewardModelJudge(_HFJudge):
    """A sequence-classification reward model scores (prompt, output); the higher reward wins."""

    name = "reward_model"
    auto_class = "AutoModelForSequenceClassification"

    def __init__(self, model: str, label_index: int = -1, tie_eps: float = 0.0, **kwargs: Any) -> None:
        super().__init__(model, **kwargs)
        self.label_index = label_index
        self.tie_eps = tie_eps

    @torch.inference_mode()
    def rewards(self, prompts: Sequence[str], outputs: Sequence[str]) -> list[float]:
        model, tok = self.load()
        tok.padding_side = "right"
        chat = self._chat(tok)
        out: list[float] = []
        for i in self._batches(len(prompts), f"reward[{self.model_name}]"):
            p, o = list(prompts[i : i + self.batch_size]), list(outputs[i : i + self.batch_size])
            if chat:
                chats = [
                    [{"role": "user", "content": pp}, {"role": "assistant", "content": oo}] for pp, oo in zip(p, o)
                ]
                texts = [tok.apply_chat_template(c, tokenize=False) for c in chats]
                enc = tok(
                    texts,
                    add_special_tokens=False,
                    padding=True,
                    truncation=True,
                    max_length=self.max_length,
                    return_tensors="pt",
                )
            else:
                enc = tok(p, o, padding=True, truncation=True, max_length=self.max_length, return_tensors="pt")
            logits = model(**{k: v.to(self.device) for k, v in enc.items()}).logits.float()
            out.extend(logits[:, self.label_index].tolist())
        return out

    def compare(self, prompts, outputs_a, outputs_b, examples) -> list[float]:
        _check_lengths(prompts, outputs_a, outputs_b, examples)
        ra = self.rewards(prompts, outputs_a)
        rb = self.rewards(prompts, outputs_b)
        return [_versus(a, b, self.tie_eps) for a, b in zip(ra, rb)]


class LLMJudge(_HFJudge):
    """Asks a causal LM which response is better and reads P("A") vs P("B") from the next token.

    Each pair is asked in both orders and the two probabilities of A winning are averaged, which
    cancels the judge's position bias and makes ``compare(a, b) = 1 - compare(b, a)``.
    """

    name = "llm"
    auto_class = "AutoModelForCausalLM"

    def __init__(
        self,
        model: str,
        template: str = DEFAULT_LLM_TEMPLATE,
        choices: Sequence[str] = ("A", "B"),
        answer_prefix: str = "\nAnswer:",
        max_chars: int = 4000,
        **kwargs: Any,
    ) -> None:
        super().__init__(model, **kwargs)
        for key in ("{prompt}", "{a}", "{b}"):
            if key not in template:
                raise InputError(f"judge.template: expected a template containing {key}, got {template!r}")
        if len(choices) != 2 or choices[0] == choices[1]:
            raise InputError(f"judge.choices: expected two different strings, got {list(choices)}")
        self.template = template
        self.choices = tuple(choices)
        self.answer_prefix = answer_prefix
        self.max_chars = max_chars

    def _text(self, tok: Any, prompt: str, a: str, b: str, chat: bool) -> str:
        m = self.max_chars
        body = self.template.format(prompt=prompt[-m:], a=a[:m], b=b[:m])
        if chat:
            return tok.apply_chat_template(
                [{"role": "user", "content": body}], tokenize=False, add_generation_prompt=True
            )
        return body + self.answer_prefix

    def _choice_ids(self, tok: Any) -> list[int]:
        ids = [tok.encode(c, add_special_tokens=False) for c in self.choices]
        if any(len(i) != 1 for i in ids) or ids[0] == ids[1]:
            raise InputError(
                f"judge.choices: expected two strings that are one distinct token each, "
                f"got {list(self.choices)} -> {ids}"
            )
        return [i[0] for i in ids]

    @torch.inference_mode()
    def prob_first(self, texts: Sequence[str]) -> list[float]:
        """P(first choice | text) renormalised over the two choice tokens."""
        model, tok = self.load()
        tok.padding_side = tok.truncation_side = "left"  # the answer cue at the end must survive
        ids = torch.tensor(self._choice_ids(tok), device=self.device)
        out: list[float] = []
        for i in self._batches(len(texts), f"judge[{self.model_name}]"):
            enc = tok(
                list(texts[i : i + self.batch_size]),
                add_special_tokens=False,
                padding=True,
                truncation=True,
                max_length=self.max_length,
                return_tensors="pt",
            ).to(self.device)
            # Positions follow the mask so a left-padded row scores as if it were alone.
            positions = (enc["attention_mask"].cumsum(-1) - 1).clamp(min=0)
            logits = model(**enc, position_ids=positions, use_cache=False, logits_to_keep=1).logits[:, -1]
            out.extend(torch.softmax(logits.float()[:, ids], -1)[:, 0].tolist())
        return out

    def compare(self, prompts, outputs_a, outputs_b, examples) -> list[float]:
        _check_lengths(prompts, outputs_a, outputs_b, examples)
        _, tok = self.load()
        chat = self._chat(tok)
        texts = [self._text(tok, p, a, b, chat) for p, a, b in zip(prompts, outputs_a, outputs_b)]
        texts += [self._text(tok, p, b, a, chat) for p, a, b in zip(prompts, outputs_a, outputs_b)]
        p = self.prob_first(texts)
        n = len(prompts)
        return [(p[i] + 1.0 - p[n + i]) / 2 for i in range(n)]


def win_rate(scores: Sequence[float], n_boot: int = 1000, seed: int = 0, alpha: float = 0.05) -> dict[str, float]:
    """Mean score with a percentile-bootstrap (1 - alpha) interval over prompts."""
    s = np.asarray(scores, dtype=float)
    if s.size == 0:
        return {"rate": float("nan"), "low": float("nan"), "high": float("nan"), "n": 0}
    if n_boot < 1:
        raise InputError(f"bootstrap.n: expected a positive number of resamples, got {n_boot}")
    rng = np.random.default_rng(seed)
    means = s[rng.integers(0, s.size, size=(n_boot, s.size))].mean(1)
    low, high = np.quantile(means, [alpha / 2, 1 - alpha / 2])
    return {"rate": float(s.mean()), "low": float(low), "high": float(high), "n": int(s.size)}
