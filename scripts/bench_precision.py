"""fp32 vs bf16 autocast on the CPU for one saved model: a training step (forward + backward at a
fixed batch of random token ids) and greedy decoding, measured side by side in one process.

Why: bf16 halves memory traffic, but a CPU without native bf16 arithmetic (AVX512-BF16 / AMX)
converts every operand, so whether autocast pays is a measurement, not a default. The presets
train in fp32 on the CPU (``trainer=cpu``) because of what this script printed there.

    python scripts/bench_precision.py <saved HF model dir> [--batch 8] [--tokens 120] [--steps 3]
                                      [--new-tokens 32] [--threads 2]

The last line is ``bf16_vs_fp32_train_step_ratio <ratio>`` (bf16 time / fp32 time; < 1: bf16 faster).
"""

from __future__ import annotations

import argparse
import contextlib
import time

import torch
from transformers import AutoModelForCausalLM


def _autocast(bf16: bool):
    return torch.autocast("cpu", dtype=torch.bfloat16) if bf16 else contextlib.nullcontext()


def train_step_seconds(model, ids: torch.Tensor, steps: int, bf16: bool) -> float:
    model.train()
    times = []
    for _ in range(steps + 1):  # the first step warms up the kernels: not counted
        start = time.perf_counter()
        with _autocast(bf16):
            loss = model(input_ids=ids, labels=ids).loss
        loss.backward()
        model.zero_grad(set_to_none=True)
        times.append(time.perf_counter() - start)
    return sorted(times[1:])[len(times[1:]) // 2]


def decode_tokens_per_second(model, ids: torch.Tensor, new_tokens: int, bf16: bool) -> float:
    model.eval()
    start = time.perf_counter()
    with torch.inference_mode(), _autocast(bf16):
        model.generate(
            input_ids=ids,
            attention_mask=torch.ones_like(ids),
            max_new_tokens=new_tokens,
            min_new_tokens=new_tokens,
            do_sample=False,
            pad_token_id=0,
        )
    return ids.shape[0] * new_tokens / (time.perf_counter() - start)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("model", help="a saved HF model directory (e.g. a cached SFT model)")
    parser.add_argument("--batch", type=int, default=8)
    parser.add_argument("--tokens", type=int, default=120)
    parser.add_argument("--steps", type=int, default=3)
    parser.add_argument("--new-tokens", type=int, default=32)
    parser.add_argument("--threads", type=int, default=2)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    model = AutoModelForCausalLM.from_pretrained(args.model, dtype=torch.float32)
    gen = torch.Generator().manual_seed(0)
    ids = torch.randint(0, model.config.vocab_size, (args.batch, args.tokens), generator=gen)
    print(
        f"{args.model}: {sum(p.numel() for p in model.parameters()):,} parameters, batch {args.batch} x "
        f"{args.tokens} tokens, {args.threads} threads"
    )
    step = {bf16: train_step_seconds(model, ids, args.steps, bf16) for bf16 in (False, True)}
    decode = {
        bf16: decode_tokens_per_second(model, ids[:, : args.tokens // 2], args.new_tokens, bf16)
        for bf16 in (False, True)
    }
    for bf16, name in ((False, "fp32"), (True, "bf16 autocast")):
        print(f"{name:>14}: train step {step[bf16]:.2f} s (median of {args.steps}), greedy {decode[bf16]:.0f} tokens/s")
    print(f"bf16_vs_fp32_decode_speed_ratio {decode[True] / decode[False]:.2f}")
    print(f"bf16_vs_fp32_train_step_ratio {step[True] / step[False]:.2f}")


if __name__ == "__main__":
    main()
