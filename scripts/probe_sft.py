"""How fast does a tiny model learn a task? Plain SFT of one Llama shape, greedy evaluation on the
validation split every N steps (main metric, exact match, degenerate share, validation NLL).

This is the probe behind the embedded default's model sizes and learning rate (README, "Making the
tiny models competent"): it skips Lightning and caching so one shape costs only its training time.
Validation only; the test split is never touched.

    python scripts/probe_sft.py --hidden 64 --layers 2 --heads 4 --lr 1e-2 --steps 6000
"""

from __future__ import annotations

import argparse
import math
import sys
import time
from pathlib import Path

import torch
from omegaconf import OmegaConf

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "src"))
from plad.backends.hf_sampling import generate  # noqa: E402
from plad.data.collate import Collator  # noqa: E402
from plad.evaluation.degenerate import degenerate_share  # noqa: E402
from plad.models.build import build_model, count_parameters  # noqa: E402
from plad.models.logprobs import sequence_logprobs  # noqa: E402
from plad.models.tokenizer import train_tokenizer  # noqa: E402
from plad.tasks.anonymization import AnonymizationTask  # noqa: E402
from plad.tasks.summarization import SummarizationTask  # noqa: E402
from plad.training.optimizer import warmup_decay  # noqa: E402

TASKS = {"anonymization": AnonymizationTask, "summarization": SummarizationTask}
MAX_NEW_TOKENS = {"anonymization": 64, "summarization": 32}  # configs/task/*.yaml


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--task", choices=sorted(TASKS), default="anonymization")
    p.add_argument("--n-train", type=int, default=100_000)
    p.add_argument("--vocab", type=int, default=2048)
    p.add_argument("--hidden", type=int, default=64)
    p.add_argument("--layers", type=int, default=2)
    p.add_argument("--heads", type=int, default=4)
    p.add_argument("--family", choices=("llama", "gpt_neo"), default="llama")
    p.add_argument("--intermediate", type=int, default=0, help="MLP width (default 3 x hidden)")
    p.add_argument("--lr", type=float, default=1e-2)
    p.add_argument("--batch-size", type=int, default=16)
    p.add_argument("--steps", type=int, default=6000)
    p.add_argument("--warmup", type=int, default=100)
    p.add_argument("--eval-every", type=int, default=1000)
    p.add_argument("--n-eval", type=int, default=100)
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--seed", type=int, default=0, help="model init and data order (the data is always seed 0)")
    p.add_argument(
        "--n-labeled",
        type=int,
        default=0,
        help="SFT on the first N train rows only (0: all); the tokenizer still learns from the whole train split",
    )
    p.add_argument("--copy-steps", type=int, default=0, help="label-free copy pretraining steps before SFT")
    p.add_argument("--n-unlabeled", type=int, default=10_000, help="texts for copy pretraining")
    p.add_argument("--copy-lr", type=float, default=1e-2)
    p.add_argument("--copy-batch-size", type=int, default=0, help="default: --batch-size")
    a = p.parse_args()
    torch.set_num_threads(a.threads)
    task = TASKS[a.task](
        seed=0,
        n_train=a.n_train,
        n_unlabeled=max(a.n_unlabeled, 1),
        n_validation=max(a.n_eval, 64),
        n_test=1,
        max_new_tokens=MAX_NEW_TOKENS[a.task],
    )
    data = task.load()
    tok = train_tokenizer(list(data["train"]["prompt"]) + list(data["train"]["reference"]), a.vocab)
    if a.n_labeled:
        data["train"] = data["train"].select(range(a.n_labeled))
    width = a.intermediate or 3 * a.hidden
    config = {
        "_target_": "transformers.LlamaConfig",
        "hidden_size": a.hidden,
        "intermediate_size": width,
        "num_hidden_layers": a.layers,
        "num_attention_heads": a.heads,
        "num_key_value_heads": a.heads,
        "max_position_embeddings": 512,
        "tie_word_embeddings": True,
    }
    if a.family == "gpt_neo":
        config = {
            "_target_": "transformers.GPTNeoConfig",
            "hidden_size": a.hidden,
            "intermediate_size": width,
            "num_layers": a.layers,
            "num_heads": a.heads,
            "attention_types": [[["global"], a.layers]],
            "max_position_embeddings": 512,
            "tie_word_embeddings": True,
        }
    spec = OmegaConf.create({"dtype": "float32", "config": config})
    model = build_model(spec, tok, seed=a.seed)
    print(f"parameters {count_parameters(model) / 1e6:.3f}M", flush=True)
    collate = Collator(tok, False, 128, task.max_new_tokens)  # the task's budgets, as the pipeline's
    val = [dict(r) for r in data["validation"].select(range(a.n_eval))]
    if a.copy_steps:
        texts = [task.text_of(r) for r in data["unlabeled"]]
        rows = [{"prompt": f"Repeat: {t}\nOutput:", "reference": t} for t in texts]
        copy_val = [{"prompt": f"Repeat: {task.text_of(r)}\nOutput:", "reference": task.text_of(r)} for r in val]
        copy_collate = Collator(tok, False, 128, 128)  # whole texts, as stages/sft.copy_pretrain
        fit(
            model,
            tok,
            rows,
            copy_collate,
            a.copy_steps,
            a.copy_lr,
            a,
            lambda step, sec, loss: report_copy(model, tok, copy_val, copy_collate, step, sec, loss),
            batch_size=a.copy_batch_size or a.batch_size,
        )
    fit(
        model,
        tok,
        data["train"],
        collate,
        a.steps,
        a.lr,
        a,
        lambda step, sec, loss: report(model, tok, task, val, collate, step, sec, loss),
    )


def fit(model, tok, rows, collate, steps: int, lr: float, a, on_eval, batch_size: int = 0) -> None:
    batch_size = batch_size or a.batch_size
    opt = torch.optim.AdamW(model.parameters(), lr=lr, betas=(0.9, 0.95), weight_decay=0.0)
    sched = torch.optim.lr_scheduler.LambdaLR(opt, warmup_decay(a.warmup, steps))  # the template's schedule
    order = torch.Generator().manual_seed(a.seed)
    start, step, running = time.perf_counter(), 0, float("nan")
    while step < steps:
        perm = torch.randperm(len(rows), generator=order).tolist()
        for i in range(0, len(perm) - batch_size + 1, batch_size):
            out = sequence_logprobs(model, **collate([rows[j] for j in perm[i : i + batch_size]]))
            loss = -out.sum_logp.sum() / out.n_tokens.sum()
            opt.zero_grad()
            loss.backward()
            torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
            opt.step()
            sched.step()
            running = loss.item() if math.isnan(running) else 0.98 * running + 0.02 * loss.item()
            step += 1
            if step % a.eval_every == 0 or step == steps:
                on_eval(step, time.perf_counter() - start, running)
            if step >= steps:
                break


def report_copy(model, tok, val, collate, step: int, seconds: float, train_loss: float) -> None:
    """Copy pretraining: exact copies of validation texts under greedy decoding, and the NLL."""
    model.eval()
    out = generate(
        model,
        tok,
        [r["prompt"] for r in val],
        max_new_tokens=128,
        do_sample=False,
        batch_size=32,
        progress=False,
        max_prompt_tokens=128,
    )
    exact = sum(t[0].strip() == r["reference"].strip() for t, r in zip(out.texts, val)) / len(val)
    with torch.no_grad():
        v = sequence_logprobs(model, **collate(val[:64]))
    print(
        f"copy step {step} ({seconds:.0f}s) train_loss {train_loss:.3f} exact_copy {exact:.3f} "
        f"val_nll {float(-v.sum_logp.sum() / v.n_tokens.sum()):.3f}",
        flush=True,
    )
    model.train()


def report(model, tok, task, val, collate, step: int, seconds: float, train_loss: float) -> None:
    model.eval()
    out = generate(
        model,
        tok,
        [r["prompt"] for r in val],
        max_new_tokens=task.max_new_tokens,
        do_sample=False,
        batch_size=32,
        progress=False,
        max_prompt_tokens=128,
    )
    preds = [t[0] for t in out.texts]
    m = task.metrics(preds, val)
    with torch.no_grad():
        v = sequence_logprobs(model, **collate(val[:64]))
    row = {
        task.main_metric: m[task.main_metric],
        **{k: m[k] for k in ("exact_match", "leak_rate", "keep_rate") if k in m},
        "degenerate": degenerate_share(preds),
        "val_nll": float(-v.sum_logp.sum() / v.n_tokens.sum()),
    }
    print(
        f"step {step} ({seconds:.0f}s) train_loss {train_loss:.3f} " + " ".join(f"{k} {x:.3f}" for k, x in row.items()),
        flush=True,
    )
    model.train()


if __name__ == "__main__":
    main()
