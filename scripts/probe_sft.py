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
from plad.data.collate import Collator  # noqa: E402
from plad.evaluation.degenerate import degenerate_share  # noqa: E402
from plad.generation import generate  # noqa: E402
from plad.models.build import build_model, count_parameters  # noqa: E402
from plad.models.logprobs import sequence_logprobs  # noqa: E402
from plad.models.tokenizer import train_tokenizer  # noqa: E402
from plad.optim import warmup_decay  # noqa: E402
from plad.tasks.anonymization import AnonymizationTask  # noqa: E402
from plad.tasks.summarization import SummarizationTask  # noqa: E402

TASKS = {"anonymization": AnonymizationTask, "summarization": SummarizationTask}


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
    a = p.parse_args()
    torch.set_num_threads(a.threads)
    task = TASKS[a.task](seed=0, n_train=a.n_train, n_unlabeled=1, n_validation=max(a.n_eval, 64), n_test=1)
    data = task.load()
    tok = train_tokenizer(list(data["train"]["prompt"]) + list(data["train"]["reference"]), a.vocab)
    width = a.intermediate or 3 * a.hidden
    config = {"_target_": "transformers.LlamaConfig", "hidden_size": a.hidden, "intermediate_size": width,
              "num_hidden_layers": a.layers, "num_attention_heads": a.heads, "num_key_value_heads": a.heads,
              "max_position_embeddings": 512, "tie_word_embeddings": True}
    if a.family == "gpt_neo":
        config = {"_target_": "transformers.GPTNeoConfig", "hidden_size": a.hidden, "intermediate_size": width,
                  "num_layers": a.layers, "num_heads": a.heads, "attention_types": [[["global"], a.layers]],
                  "max_position_embeddings": 512, "tie_word_embeddings": True}
    spec = OmegaConf.create({"dtype": "float32", "config": config})
    model = build_model(spec, tok, seed=a.seed)
    print(f"parameters {count_parameters(model) / 1e6:.3f}M", flush=True)
    collate = Collator(tok, False, 128, 64)
    opt = torch.optim.AdamW(model.parameters(), lr=a.lr, betas=(0.9, 0.95), weight_decay=0.0)

    sched = torch.optim.lr_scheduler.LambdaLR(opt, warmup_decay(a.warmup, a.steps))  # the template's schedule
    val = [dict(r) for r in data["validation"].select(range(a.n_eval))]
    order = torch.Generator().manual_seed(a.seed)
    start, step, running = time.perf_counter(), 0, float("nan")
    while step < a.steps:
        perm = torch.randperm(len(data["train"]), generator=order).tolist()
        for i in range(0, len(perm) - a.batch_size + 1, a.batch_size):
            out = sequence_logprobs(model, **collate([data["train"][j] for j in perm[i:i + a.batch_size]]))
            loss = -out.sum_logp.sum() / out.n_tokens.sum()
            opt.zero_grad()
            loss.backward()
            torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
            opt.step()
            sched.step()
            running = loss.item() if math.isnan(running) else 0.98 * running + 0.02 * loss.item()
            step += 1
            if step % a.eval_every == 0 or step == a.steps:
                report(model, tok, task, val, collate, step, time.perf_counter() - start, running)
            if step >= a.steps:
                break


def report(model, tok, task, val, collate, step: int, seconds: float, train_loss: float) -> None:
    model.eval()
    out = generate(model, tok, [r["prompt"] for r in val], max_new_tokens=64, do_sample=False, batch_size=32,
                   progress=False, max_prompt_tokens=128)
    preds = [t[0] for t in out.texts]
    m = task.metrics(preds, val)
    with torch.no_grad():
        v = sequence_logprobs(model, **collate(val[:64]))
    row = {task.main_metric: m[task.main_metric], **{k: m[k] for k in ("exact_match", "leak_rate") if k in m},
           "degenerate": degenerate_share(preds),
           "val_nll": float(-v.sum_logp.sum() / v.n_tokens.sum())}
    print(f"step {step} ({seconds:.0f}s) train_loss {train_loss:.3f} "
          + " ".join(f"{k} {x:.3f}" for k, x in row.items()), flush=True)
    model.train()


if __name__ == "__main__":
    main()
