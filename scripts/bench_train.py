"""Training throughput on cached pairs: plad's DistillModule + Lightning loop vs TRL's DPOTrainer.

Same tiny student (configs/model/llama.yaml student block, random weights, BPE tokenizer trained on
the default anonymization task), the same pairs (chosen = the reference, rejected = the input
copied, i.e. the PII leaked; prompt <= 128 tokens, completions <= 64), the same DPO sigmoid loss
(beta from configs/loss/dpo.yaml), batch size, learning rate, gradient clipping, fp32 and torch
threads. Both compute reference log-probs once, before training, and that time is counted:

* plad: ``score_completions`` (what ``obtain_pairs`` stores with every pair set), then
  ``DistillModule`` + ``PairDataModule`` in a ``lightning.Trainer`` built from configs/trainer/cpu.yaml
  (no logger, checkpoint, progress bar or validation).
* TRL: ``DPOTrainer`` with ``DPOConfig(loss_type="sigmoid", precompute_ref_log_probs=True, ...)`` on a
  ``datasets.Dataset`` of prompt/chosen/rejected text; ``gradient_checkpointing=False`` and
  ``bf16=False`` (TRL's documented defaults are True) so both do the same fp32 work without
  recomputation.

The prompt is given to TRL as ``<s>`` + prompt and TRL appends ``</s>`` to completions, so both
trainers see token-identical sequences (checked each run: same token count, reference log-probs
equal to ~1e-4). Each trainer runs in a fresh process (``--rounds`` alternates the order, medians
are reported); ``--warmup`` steps are excluded, the timed window covers ``--steps`` optimizer steps
(default one epoch). pairs/s = steps * batch / (reference precompute + timed steps). ``--breakdown``
then times both on identical batches, interleaved. The last line is
``plad_vs_trl_throughput_ratio <ratio>``. The children and the set-up live in ``scripts/_bench_train/``.

    python scripts/bench_train.py [--pairs 512] [--batch-size 16] [--steps N] [--warmup 3]
                                  [--rounds 1] [--threads 1] [--breakdown] [--quick]

What makes the difference. Setup: 512 pairs, batch 16, ``--rounds 3 --breakdown``, one thread,
default student (0.17M params, vocab 1024), on a 2-core AMD EPYC VM with other jobs running.
Result: plad 72.2 pairs/s, TRL 29.0, ratio 2.49 (rounds 2.25-2.54).

* Reference precompute, 1.5 s vs 4.9 s (3.2x). plad scores the distinct (prompt, text) sequences
  sorted by length: 91.0k padded tokens for 90.2k real ones. TRL runs its training collator in
  dataset order, chosen and rejected padded to one width: 130.9k tokens (+45%). It also uses the
  LM head described next, and writes the columns to an Arrow cache file.
* Training step, 174 vs 393 ms (2.3x). Both do the same backbone work: one forward over the
  concatenated chosen+rejected batch, padded to the batch's longest sequence. What differs is the
  LM head and log-probs (forward+backward on the same hidden states): plad 68 ms, TRL 288 ms.
  plad projects only the positions from the batch's first completion token on (``logits_to_keep``:
  26.0k positions) and calls one fused ``cross_entropy``. TRL's fused chunked log-prob head is
  built to keep [N, V] logits out of GPU memory. Without Triton (on CPU) it scores every position
  of the padded batch (32.5k) and folds each tile with several torch ops, also computing entropy,
  mean logit and top-1 for its logs. In backward it recomputes the tiles and accumulates with fp32
  ``addmm``. Those extra outputs and TRL's per-step metric bookkeeping account for about 70 ms: a
  log-probs-only head with no metrics takes 402 ms instead of 473 ms per forward+backward. The
  head is a large share here because the vocabulary (1024) is big next to hidden size 64. With
  the earlier 1.0M student (hidden 128, 4 layers), the same setup gave 1.50: step 548 vs 715 ms,
  head 60 vs 206 ms, precompute 3.3 vs 8.5 s.
* Loop overhead is small on both sides. cProfile puts about 97% of plad's ``fit`` time in model
  forward, backward and the optimizer. Lightning's per-step ``self.log`` calls, ``PairCollator``
  and ``ResumableLoader`` take a few ms, and so does the HF Trainer's loop. The optimizer step
  favours TRL slightly: 1 ms (HF's default fused AdamW) vs 5 ms (plad's unfused AdamW, 2 param
  groups).
* Some expected causes make no difference here. TRL 1.16 also runs one forward for chosen and
  rejected (``DataCollatorForPreference`` concatenates them). It also computes the reference once
  (``precompute_ref_log_probs=True``). It tokenizes once, in ``__init__``, not per step. It pads
  each batch to its own longest sequence, not to ``max_length`` (``pad_to_multiple_of`` is None on
  CPU).
* TRL's documented defaults, ``gradient_checkpointing=True`` and ``bf16=True``, are switched off
  here for parity. With them (``--trl-gradient-checkpointing --trl-bf16``), TRL's training takes
  ~1.35x longer on this CPU: 17.1 s vs 12.6 s for 32 steps.

Threads: one torch thread per trainer process by default. The 2-core machine is shared with other
jobs, and two threads per process then stall at every OpenMP barrier: steps got 5-10x slower, and
the ratio swung between 0.07 and 8 depending on which trainer met a busy minute. With one thread
the rounds agree to within about 10%. Pass ``--threads 2`` on an idle machine; the script warns
when the load says otherwise.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from _bench_train.breakdown import run_breakdown
from _bench_train.children import run_plad, run_trl
from _bench_train.common import configs, prepare


def child_main(a: argparse.Namespace) -> None:
    """One measurement in this process (started by ``run_child``); prints ``RESULT <json>``."""
    import torch

    torch.set_num_threads(a.threads)
    res = {"plad": run_plad, "trl": run_trl, "breakdown": run_breakdown}[a.child](a.work, a)
    print("RESULT " + json.dumps(res))


def run_child(which: str, work: Path, a: argparse.Namespace) -> dict[str, Any]:
    cmd = [
        sys.executable,
        __file__,
        "--child",
        which,
        "--work",
        str(work),
        "--threads",
        str(a.threads),
        "--batch-size",
        str(a.batch_size),
        "--steps",
        str(a.steps),
        "--warmup",
        str(a.warmup),
        "--ref-batch-size",
        str(a.ref_batch_size),
        "--breakdown-batches",
        str(a.breakdown_batches),
    ]
    cmd += ["--trl-gradient-checkpointing"] * a.trl_gradient_checkpointing + ["--trl-bf16"] * a.trl_bf16
    out = subprocess.run(cmd, capture_output=True, text=True, env={**os.environ, "PYTHONWARNINGS": "ignore"})
    if out.returncode != 0:
        sys.stderr.write(out.stdout[-5000:] + out.stderr[-20000:])
        raise SystemExit(f"{which} child failed (rc {out.returncode})")
    line = next(ln for ln in out.stdout.splitlines() if ln.startswith("RESULT "))
    return json.loads(line[len("RESULT ") :])


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--pairs", type=int, default=512)
    ap.add_argument("--batch-size", type=int, default=16)
    ap.add_argument("--steps", type=int, default=None, help="timed optimizer steps (default: one epoch)")
    ap.add_argument("--warmup", type=int, default=3, help="untimed steps before the timed window")
    ap.add_argument(
        "--ref-batch-size",
        type=int,
        default=16,
        help="reference precompute batch (plad: sequences, pairs.batch_size; TRL: pairs)",
    )
    ap.add_argument("--rounds", type=int, default=1, help="plad/TRL measurements, order alternated; median")
    ap.add_argument(
        "--threads",
        type=int,
        default=1,
        help="torch threads per trainer process; 1 stays steady when other jobs share the cores, "
        "2 uses both cores of an otherwise idle machine",
    )
    ap.add_argument("--n-train", type=int, default=3000, help="task train rows the tokenizer is trained on")
    ap.add_argument("--trl-gradient-checkpointing", action="store_true", help="TRL's default; off for parity")
    ap.add_argument("--trl-bf16", action="store_true", help="TRL's default; off for parity (fp32 like plad)")
    ap.add_argument(
        "--breakdown",
        action="store_true",
        help="also time forward+backward / optimizer of both on identical batches (interleaved)",
    )
    ap.add_argument("--breakdown-batches", type=int, default=8)
    ap.add_argument("--quick", action="store_true", help="smoke run: 48 pairs, batch 8, 1+3 steps")
    ap.add_argument("--child", choices=["plad", "trl", "breakdown"], default=None, help=argparse.SUPPRESS)
    ap.add_argument("--work", type=Path, default=None, help=argparse.SUPPRESS)
    a = ap.parse_args()
    if a.warmup < 1 or a.batch_size < 1 or a.pairs < a.batch_size or (a.steps is not None and a.steps < 1):
        ap.error("expected --warmup >= 1, --steps >= 1, --batch-size >= 1 and --pairs >= --batch-size")
    if a.child:
        child_main(a)
        return
    if a.quick:
        a.pairs, a.batch_size, a.warmup, a.n_train = 48, 8, 1, 300
        a.steps = a.steps or 3
    a.steps = a.steps or -(-a.pairs // a.batch_size)
    c = configs()
    print(
        f"{a.pairs} pairs, batch {a.batch_size}, {a.warmup} warm-up + {a.steps} timed steps, "
        f"{a.threads} torch threads, DPO sigmoid beta={c['loss']['beta']}, lr={c['lr']}, fp32"
    )
    busy = os.getloadavg()[0]
    if a.threads > 1 and busy > 0.5:
        print(
            f"warning: load average {busy:.1f} before start; with {a.threads} threads per process, other jobs "
            f"on these cores stall torch's thread barriers and timings get noisy (--threads 1 is steadier)"
        )
    with tempfile.TemporaryDirectory(prefix="bench_train_") as tmp:
        work = Path(tmp)
        t = time.perf_counter()
        what = prepare(work, a.pairs, a.n_train)
        print(f"prepared tokenizer, {what} and pairs in {time.perf_counter() - t:.1f}s")
        results: dict[str, list[dict[str, Any]]] = {"plad": [], "trl": []}
        for r in range(a.rounds):
            for which in ("plad", "trl") if r % 2 == 0 else ("trl", "plad"):
                load = os.getloadavg()[0]
                res = run_child(which, work, a)
                results[which].append(res)
                pps = a.steps * a.batch_size / (res["ref_s"] + res["train_s"])
                print(
                    f"[round {r + 1}] {which:4s}: ref precompute {res['ref_s']:.2f}s, {res['steps']} steps, "
                    f"timed {a.steps} in {res['train_s']:.2f}s ({a.steps * a.batch_size / res['train_s']:.1f} "
                    f"pairs/s train only) -> {pps:.1f} pairs/s; tokenize {res['tokenize_s']:.2f}s, "
                    f"mean loss {res['mean_loss']:.4f}, threads {res['threads']}, load before {load:.1f}"
                )
        bd = run_child("breakdown", work, a) if a.breakdown else None
    report(a, results, bd)


def report(a: argparse.Namespace, results: dict[str, list[dict[str, Any]]], bd: dict[str, Any] | None) -> None:
    """Sequence parity, the medians of both trainers, the breakdown, and the ratio line last."""
    p0, t0 = results["plad"][0], results["trl"][0]
    diff = max(abs(x - y) for x, y in zip(p0["ref_chosen"] + p0["ref_rejected"], t0["ref_chosen"] + t0["ref_rejected"]))
    print(
        f"same sequences: plad {p0['n_tokens']} tokens, TRL {t0['n_tokens']} tokens; "
        f"max |ref logp plad - TRL| = {diff:.2e}"
    )

    def summary(name: str) -> tuple[float, float, float]:
        rs = results[name]
        ref = statistics.median(r["ref_s"] for r in rs)
        train = statistics.median(r["train_s"] for r in rs)
        pps = statistics.median(a.steps * a.batch_size / (r["ref_s"] + r["train_s"]) for r in rs)
        return ref, train, pps

    (pr, pt, pp), (tr, tt, tp) = summary("plad"), summary("trl")
    print(f"plad: {pp:.1f} pairs/s (ref precompute {pr:.2f}s + train {pt:.2f}s = {pr + pt:.2f}s)")
    print(f"trl:  {tp:.1f} pairs/s (ref precompute {tr:.2f}s + train {tt:.2f}s = {tr + tt:.2f}s)")
    print(f"train-only ratio {tt / pt:.2f}, ref-precompute ratio {tr / pr:.2f}")
    if bd is not None:
        m = bd["median_s"]
        print(f"breakdown (median of {bd['n_batches']} identical batches, interleaved, {bd['threads']} threads):")
        print(
            f"  loss forward+backward per batch: plad {m['plad_fwd_bwd'] * 1e3:.0f} ms, TRL "
            f"{m['trl_fwd_bwd'] * 1e3:.0f} ms (TRL with a log-probs-only head and no metrics "
            f"{m['trl_lean_fwd_bwd'] * 1e3:.0f} ms)"
        )
        print(
            f"    of which LM head + log-probs (fwd+bwd, same hidden states): plad {m['plad_head'] * 1e3:.0f} ms "
            f"({bd['head_positions_plad']} positions: logits_to_keep + cross_entropy), TRL "
            f"{m['trl_head'] * 1e3:.0f} ms ({bd['head_positions_trl']} positions: chunked fused head, every "
            f"position on CPU, + entropy/mean-logit/top-1)"
        )
        print(
            f"  clip + optimizer step: plad {m['plad_opt'] * 1e3:.0f} ms, TRL {m['trl_opt'] * 1e3:.0f} ms; "
            f"whole loop per step: plad {pt / a.steps * 1e3:.0f} ms, TRL {tt / a.steps * 1e3:.0f} ms"
        )
        print(
            f"  reference precompute padded tokens: plad {bd['ref_tokens_padded_plad']} (length-sorted, "
            f"distinct sequences), TRL {bd['ref_tokens_padded_trl']} (dataset order, chosen+rejected "
            f"padded together); real tokens {bd['ref_tokens_real']}"
        )
    print(f"plad_vs_trl_throughput_ratio {pp / tp:.2f}")


if __name__ == "__main__":
    main()
