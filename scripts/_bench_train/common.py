"""Set-up shared by every process of the training benchmark: the configs both trainers take their
settings from, the tokenizer + untrained student + text pairs, and the step timer."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[2]


def configs() -> dict[str, Any]:
    from omegaconf import OmegaConf

    task = OmegaConf.load(ROOT / "configs" / "task" / "anonymization.yaml")
    loss = OmegaConf.to_container(OmegaConf.load(ROOT / "configs" / "loss" / "dpo.yaml"))
    distill = OmegaConf.load(ROOT / "configs" / "distill" / "default.yaml")
    trainer = OmegaConf.to_container(OmegaConf.load(ROOT / "configs" / "trainer" / "cpu.yaml"))
    # Optimizer, schedule and gradient clipping of both training stages (plad.training.optimizer).
    optim = OmegaConf.to_container(OmegaConf.load(ROOT / "configs" / "optim" / "adamw.yaml"))
    return {
        "max_prompt_tokens": int(task.max_prompt_tokens),
        "max_completion_tokens": int(task.max_new_tokens),
        "loss": loss,
        "lr": float(loss["lr"]),
        "warmup_steps": int(distill.warmup_steps),
        "weight_decay": float(distill.weight_decay),
        "trainer": trainer,
        "optim": optim,
        "gradient_clip_val": float(optim["gradient_clip_val"]),
    }


def prepare(work: Path, n_pairs: int, n_train: int) -> str:
    """Tokenizer + untrained default student in work/student; text pairs in work/pairs_text."""
    import datasets
    import transformers
    from datasets import Dataset
    from omegaconf import OmegaConf

    from plad.models.build import build_model, count_parameters, save_model
    from plad.models.tokenizer import train_tokenizer
    from plad.tasks.anonymization import AnonymizationTask

    datasets.disable_progress_bars()
    transformers.utils.logging.disable_progress_bar()
    c = configs()
    data = AnonymizationTask(seed=0, n_train=n_train, n_unlabeled=2 * n_pairs, n_validation=1, n_test=1).load()
    tok = train_tokenizer(list(data["train"]["prompt"]) + list(data["train"]["reference"]), vocab_size=1024)
    spec = OmegaConf.load(ROOT / "configs" / "model" / "llama.yaml")
    student = build_model(spec.student, tok, seed=1).eval()
    save_model(student, tok, work / "student")

    def n_tokens(text: str) -> int:
        return len(tok(text, add_special_tokens=False)["input_ids"])

    # Keep pairs nothing gets truncated in (prompt + BOS <= 128, completion + EOS <= 64): TRL only has a
    # total max_length, so truncation would otherwise make the two trainers see different sequences.
    rows = [
        r
        for r in data["unlabeled"]
        if n_tokens(r["prompt"]) < c["max_prompt_tokens"]
        and max(n_tokens(r["reference"]), n_tokens(r["text"])) < c["max_completion_tokens"]
    ][:n_pairs]
    if len(rows) < n_pairs:
        raise SystemExit(f"only {len(rows)} of {2 * n_pairs} prompts fit the length limits, need {n_pairs}")
    Dataset.from_dict(
        {
            "id": [r["id"] for r in rows],
            "prompt": [r["prompt"] for r in rows],
            "chosen": [r["reference"] for r in rows],
            "rejected": [r["text"] for r in rows],
        }
    ).save_to_disk(str(work / "pairs_text"))
    return f"student {count_parameters(student) / 1e6:.2f}M params, vocab {len(tok)}"


class StepTimer:
    """Wall time from the end of optimizer step ``warmup`` to the end of step ``last``."""

    def __init__(self, warmup: int, last: int) -> None:
        self.warmup, self.last = warmup, last
        self.t0 = self.t1 = None

    def step_end(self, global_step: int) -> None:
        if global_step == self.warmup:
            self.t0 = time.perf_counter()
        if global_step == self.last:
            self.t1 = time.perf_counter()

    @property
    def seconds(self) -> float:
        return self.t1 - self.t0
