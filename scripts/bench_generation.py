"""Throughput of plad's batched, length-bucketed sampling vs a naive one-prompt-at-a-time loop.

Both sample with the same settings and are forced to emit exactly ``--max-new-tokens`` tokens per
prompt (min_new_tokens = max_new_tokens), so tokens/s compare like for like. The model is the
default-sized tiny Llama teacher (random weights: speed does not depend on them) on prompts of
the default anonymization task. The last line is ``batched_vs_naive_speedup <ratio>``.

    python scripts/bench_generation.py [--n-prompts 256] [--max-new-tokens 32] [--batch-size 32]
"""

from __future__ import annotations

import argparse
import time

import torch
from tqdm.auto import tqdm
from transformers import LlamaConfig, LlamaForCausalLM

from plad.backends.hf_sampling import generate
from plad.models.encoding import encode_prompt
from plad.models.tokenizer import train_tokenizer
from plad.tasks.anonymization import AnonymizationTask


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--n-prompts", type=int, default=256)
    ap.add_argument("--max-new-tokens", type=int, default=32)
    ap.add_argument("--batch-size", type=int, default=32)
    ap.add_argument("--temperature", type=float, default=1.0)
    ap.add_argument("--top-p", type=float, default=0.95)
    ap.add_argument("--max-prompt-tokens", type=int, default=128)
    args = ap.parse_args()

    task = AnonymizationTask(seed=0, n_train=500, n_unlabeled=args.n_prompts, n_validation=1, n_test=1)
    data = task.load()
    prompts = list(data["unlabeled"]["prompt"])
    tok = train_tokenizer(list(data["train"]["prompt"]) + list(data["train"]["reference"]), vocab_size=1024)
    torch.manual_seed(0)
    model = LlamaForCausalLM(
        LlamaConfig(
            vocab_size=len(tok),
            hidden_size=256,
            intermediate_size=1024,
            num_hidden_layers=4,
            num_attention_heads=8,
            num_key_value_heads=8,
            max_position_embeddings=512,
            bos_token_id=tok.bos_token_id,
            eos_token_id=tok.eos_token_id,
            pad_token_id=tok.pad_token_id,
        )
    ).eval()
    lengths = [len(encode_prompt(tok, p, False, args.max_prompt_tokens)) for p in prompts]
    print(
        f"model: {sum(p.numel() for p in model.parameters()) / 1e6:.1f}M params, vocab {len(tok)}, "
        f"torch threads {torch.get_num_threads()}; {len(prompts)} prompts of "
        f"{min(lengths)}-{max(lengths)} tokens (mean {sum(lengths) / len(lengths):.0f})"
    )
    m = args.max_new_tokens
    sampling = dict(do_sample=True, temperature=args.temperature, top_p=args.top_p, top_k=0)
    generate(model, tok, prompts[:4], max_new_tokens=4, progress=False)  # warm-up

    out = generate(
        model,
        tok,
        prompts,
        max_new_tokens=m,
        min_new_tokens=m,
        batch_size=args.batch_size,
        max_prompt_tokens=args.max_prompt_tokens,
        desc="batched",
        **sampling,
    )
    batched_tps = out.total_tokens / out.seconds
    print(
        f"batched (batch {args.batch_size}, bucketed): {out.total_tokens} tokens in {out.seconds:.1f}s "
        f"= {batched_tps:.0f} tokens/s"
    )

    start, n_tokens = time.perf_counter(), 0
    with torch.inference_mode():
        for p in tqdm(prompts, desc="naive"):
            ids = torch.tensor([encode_prompt(tok, p, False, args.max_prompt_tokens)])
            seq = model.generate(
                input_ids=ids,
                attention_mask=torch.ones_like(ids),
                max_new_tokens=m,
                min_new_tokens=m,
                pad_token_id=tok.pad_token_id,
                **sampling,
            )
            n_tokens += seq.shape[1] - ids.shape[1]
    naive_s = time.perf_counter() - start
    naive_tps = n_tokens / naive_s
    print(f"naive (one prompt per generate call): {n_tokens} tokens in {naive_s:.1f}s = {naive_tps:.0f} tokens/s")
    print(f"batched_vs_naive_speedup {batched_tps / naive_tps:.2f}")


if __name__ == "__main__":
    main()
