"""Training steps with and without ``plad.heap.keep_freed_memory``, each in a fresh process.

The workload is an SFT-shaped step of the default student (configs/model/llama.yaml student block,
random weights, the default 2048-token vocabulary): forward + backward + AdamW on a batch of
``--batch-size`` x ``--seq-len`` tokens, ``--warmup`` steps excluded. Both modes run ``--rounds``
times, alternating which goes first; medians are reported with the page faults and system time of
the timed window (``resource.getrusage``). The last line is ``heap_vs_default_step_time_ratio``
(below 1: the setting is faster).

    python scripts/bench_heap.py [--steps 40] [--batch-size 32] [--seq-len 160] [--threads 2] [--rounds 3]

Run it alone: another process on the same cores changes both timings.
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def child(keep: bool, steps: int, warmup: int, batch_size: int, seq_len: int, threads: int) -> None:
    import resource
    import time

    import torch
    from omegaconf import OmegaConf

    sys.path.insert(0, str(ROOT / "src"))
    from plad.heap import keep_freed_memory

    took = keep_freed_memory() if keep else False
    import transformers

    torch.set_num_threads(threads)
    torch.manual_seed(0)
    spec = OmegaConf.to_container(OmegaConf.load(ROOT / "configs" / "model" / "llama.yaml").student.config)
    spec.pop("_target_")
    vocab = int(OmegaConf.load(ROOT / "configs" / "model" / "llama.yaml").tokenizer.vocab_size)
    model = transformers.LlamaForCausalLM(transformers.LlamaConfig(vocab_size=vocab, **spec))
    optim = torch.optim.AdamW(model.parameters(), lr=1e-3)
    batch = torch.randint(0, vocab, (batch_size, seq_len))

    def step() -> None:
        model(input_ids=batch, labels=batch).loss.backward()
        optim.step()
        optim.zero_grad()

    for _ in range(warmup):
        step()
    before, t0 = resource.getrusage(resource.RUSAGE_SELF), time.perf_counter()
    for _ in range(steps):
        step()
    seconds, after = time.perf_counter() - t0, resource.getrusage(resource.RUSAGE_SELF)
    print(
        json.dumps(
            {
                "applied": took,
                "ms_per_step": 1000 * seconds / steps,
                "page_faults": after.ru_minflt - before.ru_minflt,
                "system_s": after.ru_stime - before.ru_stime,
            }
        )
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=40)
    parser.add_argument("--warmup", type=int, default=3)
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--seq-len", type=int, default=160)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--child", choices=["default", "heap"], help=argparse.SUPPRESS)
    args = parser.parse_args()
    shape = (args.steps, args.warmup, args.batch_size, args.seq_len, args.threads)
    if args.child:
        child(args.child == "heap", *shape)
        return
    runs: dict[str, list[dict]] = {"default": [], "heap": []}
    for r in range(args.rounds):
        for mode in ("default", "heap") if r % 2 == 0 else ("heap", "default"):
            out = subprocess.run(
                [
                    sys.executable,
                    __file__,
                    "--child",
                    mode,
                    "--steps",
                    str(args.steps),
                    "--warmup",
                    str(args.warmup),
                    "--batch-size",
                    str(args.batch_size),
                    "--seq-len",
                    str(args.seq_len),
                    "--threads",
                    str(args.threads),
                ],
                check=True,
                capture_output=True,
                text=True,
            ).stdout
            runs[mode].append(json.loads(out.strip().splitlines()[-1]))
    for mode, rows in runs.items():
        print(
            f"{mode:8s} ms/step {statistics.median(r['ms_per_step'] for r in rows):8.1f}  "
            f"page faults {statistics.median(r['page_faults'] for r in rows):>10.0f}  "
            f"system s {statistics.median(r['system_s'] for r in rows):6.2f}  applied {rows[0]['applied']}"
        )
    ratio = statistics.median(r["ms_per_step"] for r in runs["heap"]) / statistics.median(
        r["ms_per_step"] for r in runs["default"]
    )
    print(f"heap_vs_default_step_time_ratio {ratio:.3f}")


if __name__ == "__main__":
    main()
