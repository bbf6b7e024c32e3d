"""Training throughput on cached pairs: plad's DistillModule + Lightning loop vs TRL's DPOTrainer.

Same tiny student (configs/model/llama.yaml student block, random weights, BPE tokenizer trained on
the default anonymization task), the same pairs (chosen = the reference, rejected = the input
copied, i.e. the PII leaked; prompt <= 128 tokens, completions <= 64), the same DPO sigmoid loss
(beta from configs/loss/dpo.yaml), batch size, learning rate, gradient clipping, fp32 and torch
threads. Both compute reference log-probs once, before training, and that time is counted:

* plad: ``completion_logps`` (what ``obtain_pairs`` stores with every pair set), then
  ``DistillModule`` + ``PairDataModule`` in a ``lightning.Trainer`` built from configs/trainer/cpu.yaml
  (no logger, checkpoint, progress bar or validation).
* TRL: ``DPOTrainer`` with ``DPOConfig(loss_type="sigmoid", precompute_ref_log_probs=True, ...)`` on a
  ``datasets.Dataset`` of prompt/chosen/rejected text; ``gradient_checkpointing=False`` and
  ``bf16=False`` (TRL's documented defaults are True) so both do the same fp32 work without
  recomputation.

The prompt is given to TRL as ``<s>`` + prompt and TRL appends ``</s>`` to completions, so both
trainers see token-identical sequences (checked: total tokens and reference log-probs must match).
Each trainer runs in its own fresh process (``--rounds`` alternates the order); ``--warmup`` steps
are excluded from the timed window, which then covers ``--steps`` optimizer steps (default one
epoch). pairs/s = steps * batch / (reference precompute + timed steps). The last line is
``plad_vs_trl_throughput_ratio <ratio>``.

    python scripts/bench_train.py [--pairs 512] [--batch-size 16] [--steps N] [--warmup 3] [--quick]

What makes the difference (measured with --breakdown on 2 CPU cores, see the report printed at the
end of a run): filled in below from a measured run.
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

ROOT = Path(__file__).resolve().parents[1]


# ----------------------------------------------------------------------------- shared setup

def configs() -> dict[str, Any]:
    from omegaconf import OmegaConf

    task = OmegaConf.load(ROOT / "configs" / "task" / "anonymization.yaml")
    loss = OmegaConf.to_container(OmegaConf.load(ROOT / "configs" / "loss" / "dpo.yaml"))
    distill = OmegaConf.load(ROOT / "configs" / "distill" / "default.yaml")
    trainer = OmegaConf.to_container(OmegaConf.load(ROOT / "configs" / "trainer" / "cpu.yaml"))
    return {"max_prompt_tokens": int(task.max_prompt_tokens), "max_completion_tokens": int(task.max_new_tokens),
            "loss": loss, "lr": float(distill.lr), "warmup_steps": int(distill.warmup_steps),
            "weight_decay": float(distill.weight_decay), "trainer": trainer}


def prepare(work: Path, n_pairs: int, n_train: int) -> None:
    """Tokenizer + untrained default student in work/student; text pairs in work/pairs_text."""
    from datasets import Dataset
    from omegaconf import OmegaConf

    from plad.models.build import build_model, save_model
    from plad.models.tokenizer import train_tokenizer
    from plad.tasks.anonymization import AnonymizationTask

    c = configs()
    data = AnonymizationTask(seed=0, n_train=n_train, n_unlabeled=2 * n_pairs, n_validation=1, n_test=1).load()
    tok = train_tokenizer(list(data["train"]["prompt"]) + list(data["train"]["reference"]), vocab_size=1024)
    spec = OmegaConf.load(ROOT / "configs" / "model" / "llama.yaml")
    save_model(build_model(spec.student, tok, seed=1).eval(), tok, work / "student")

    def n_tokens(text: str) -> int:
        return len(tok(text, add_special_tokens=False)["input_ids"])

    # Keep pairs nothing gets truncated in (prompt + BOS <= 128, completion + EOS <= 64): TRL only has a
    # total max_length, so truncation would otherwise make the two trainers see different sequences.
    rows = [r for r in data["unlabeled"] if n_tokens(r["prompt"]) < c["max_prompt_tokens"]
            and max(n_tokens(r["reference"]), n_tokens(r["text"])) < c["max_completion_tokens"]][:n_pairs]
    if len(rows) < n_pairs:
        raise SystemExit(f"only {len(rows)} of {2 * n_pairs} prompts fit the length limits, need {n_pairs}")
    Dataset.from_dict({"id": [r["id"] for r in rows], "prompt": [r["prompt"] for r in rows],
                       "chosen": [r["reference"] for r in rows], "rejected": [r["text"] for r in rows]}
                      ).save_to_disk(str(work / "pairs_text"))


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


# ----------------------------------------------------------------------------- plad child

def run_plad(work: Path, a: argparse.Namespace) -> dict[str, Any]:
    import lightning as L
    import torch
    from datasets import load_from_disk
    from hydra.utils import instantiate

    from plad.data.pairs import PairDataModule
    from plad.models.build import load_saved
    from plad.module import DistillModule
    from plad.pairs import store
    from plad.pairs.rows import completion_logps

    c = configs()
    text = load_from_disk(str(work / "pairs_text"))
    prompts, chosen, rejected = list(text["prompt"]), list(text["chosen"]), list(text["rejected"])

    # Reference log-probs of the initial student, once per distinct (prompt, text), as build_rows does.
    t = time.perf_counter()
    model, tok = load_saved(work / "student")
    keys = sorted({(p, x) for p, cs in zip(prompts, zip(chosen, rejected)) for x in cs})
    logp = dict(zip(keys, completion_logps(model, tok, [p for p, _ in keys], [x for _, x in keys],
                                           max_prompt_tokens=c["max_prompt_tokens"],
                                           max_completion_tokens=c["max_completion_tokens"],
                                           batch_size=a.ref_batch_size, progress=False)))
    ref_s = time.perf_counter() - t
    del model
    ref_c = [logp[p, x] for p, x in zip(prompts, chosen)]
    ref_r = [logp[p, x] for p, x in zip(prompts, rejected)]
    entry = work / "plad_pairs"
    store.remove(entry)
    store.write_entry(entry, {"pairwise": text.add_column("ref_chosen_logp", ref_c)
                              .add_column("ref_rejected_logp", ref_r), "listwise": None},
                      {"ref_lengths": {"max_prompt_tokens": c["max_prompt_tokens"],
                                       "max_completion_tokens": c["max_completion_tokens"]}})

    L.seed_everything(0, verbose=False)
    max_steps = a.warmup + a.steps
    module = DistillModule(str(work / "student"), c["loss"], lr=c["lr"], max_steps=max_steps,
                           warmup_steps=c["warmup_steps"], weight_decay=c["weight_decay"])
    t = time.perf_counter()
    dm = PairDataModule(entry, module.tokenizer, False, inputs=module.loss_fn.inputs, batch_size=a.batch_size,
                        max_prompt_tokens=c["max_prompt_tokens"], max_completion_tokens=c["max_completion_tokens"],
                        val_size=0, seed=0)
    dm.prepare_data()
    dm.setup("fit")
    tokenize_s = time.perf_counter() - t
    n_tokens = sum(len(ids) for row in dm.train_dataset["input_ids"] for ids in row)

    timer = StepTimer(a.warmup, max_steps)

    class Timing(L.Callback):
        def on_train_batch_end(self, trainer, *args) -> None:
            timer.step_end(trainer.global_step)

    cfg = {k: v for k, v in c["trainer"].items() if k != "_target_"}
    trainer = L.Trainer(**{**cfg, "max_steps": max_steps, "logger": False, "callbacks": [Timing()],
                           "enable_checkpointing": False, "enable_progress_bar": False,
                           "enable_model_summary": False, "limit_val_batches": 0, "num_sanity_val_steps": 0})
    trainer.fit(module, dm)
    loss = trainer.callback_metrics.get("train/loss")
    return {"ref_s": ref_s, "tokenize_s": tokenize_s, "train_s": timer.seconds, "n_tokens": n_tokens,
            "steps": trainer.global_step, "threads": torch.get_num_threads(),
            "final_loss": float(loss) if loss is not None else None, "ref_chosen": ref_c, "ref_rejected": ref_r}


# ----------------------------------------------------------------------------- TRL child

def run_trl(work: Path, a: argparse.Namespace) -> dict[str, Any]:
    os.environ.setdefault("TQDM_DISABLE", "1")
    import datasets
    import torch
    from datasets import Dataset, load_from_disk
    from transformers import TrainerCallback
    from trl import DPOConfig, DPOTrainer

    from plad.models.build import load_saved

    datasets.disable_progress_bars()
    c = configs()
    text = load_from_disk(str(work / "pairs_text"))
    model, tok = load_saved(work / "student")
    model.train()
    # BOS in the text: TRL tokenizes the prompt as text and adds no BOS for this tokenizer, plad prepends it.
    ds = Dataset.from_dict({"prompt": [tok.bos_token + p for p in text["prompt"]],
                            "chosen": list(text["chosen"]), "rejected": list(text["rejected"])})
    times: dict[str, float] = {}

    class TimedDPOTrainer(DPOTrainer):
        """Only records how long TRL's own tokenization and reference precompute take."""

        def _prepare_dataset(self, *args, **kwargs):
            t = time.perf_counter()
            out = super()._prepare_dataset(*args, **kwargs)
            times["tokenize_s"] = times.get("tokenize_s", 0.0) + time.perf_counter() - t
            return out

        def _precompute_ref_logps(self, *args, **kwargs):
            t = time.perf_counter()
            out = super()._precompute_ref_logps(*args, **kwargs)
            times["ref_s"] = times.get("ref_s", 0.0) + time.perf_counter() - t
            return out

    max_steps = a.warmup + a.steps
    timer = StepTimer(a.warmup, max_steps)

    class Timing(TrainerCallback):
        def on_step_end(self, args, state, control, **kwargs):
            timer.step_end(state.global_step)

    tr = c["trainer"]
    config = DPOConfig(
        output_dir=str(work / "trl_out"), loss_type="sigmoid", beta=float(c["loss"]["beta"]),
        per_device_train_batch_size=a.batch_size, max_steps=max_steps, precompute_ref_log_probs=True,
        precompute_ref_batch_size=a.ref_batch_size,
        max_length=c["max_prompt_tokens"] + c["max_completion_tokens"], learning_rate=c["lr"],
        warmup_steps=c["warmup_steps"], lr_scheduler_type="cosine", weight_decay=c["weight_decay"],
        adam_beta1=0.9, adam_beta2=0.95, max_grad_norm=float(tr["gradient_clip_val"]),
        gradient_checkpointing=a.trl_gradient_checkpointing, bf16=a.trl_bf16,
        report_to=[], eval_strategy="no", save_strategy="no", logging_steps=10**9,
        dataloader_num_workers=0, use_cpu=True, disable_tqdm=True, seed=0)
    trainer = TimedDPOTrainer(model=model, args=config, train_dataset=ds, processing_class=tok,
                              callbacks=[Timing()])
    n_tokens = sum(len(r["prompt_ids"]) * 2 + len(r["chosen_ids"]) + len(r["rejected_ids"])
                   for r in trainer.train_dataset)
    out = trainer.train()
    return {"ref_s": times["ref_s"], "tokenize_s": times["tokenize_s"], "train_s": timer.seconds,
            "n_tokens": n_tokens, "steps": trainer.state.global_step, "threads": torch.get_num_threads(),
            "final_loss": float(out.training_loss),
            "ref_chosen": list(trainer.train_dataset["ref_chosen_logps"]),
            "ref_rejected": list(trainer.train_dataset["ref_rejected_logps"])}


# ----------------------------------------------------------------------------- parent

def child_main(a: argparse.Namespace) -> None:
    import torch

    torch.set_num_threads(a.threads)
    res = (run_plad if a.child == "plad" else run_trl)(a.work, a)
    print("RESULT " + json.dumps(res))


def run_child(which: str, work: Path, a: argparse.Namespace) -> dict[str, Any]:
    cmd = [sys.executable, __file__, "--child", which, "--work", str(work), "--threads", str(a.threads),
           "--batch-size", str(a.batch_size), "--steps", str(a.steps), "--warmup", str(a.warmup),
           "--ref-batch-size", str(a.ref_batch_size)]
    cmd += ["--trl-gradient-checkpointing"] * a.trl_gradient_checkpointing + ["--trl-bf16"] * a.trl_bf16
    start = time.perf_counter()
    out = subprocess.run(cmd, capture_output=True, text=True, env={**os.environ, "PYTHONWARNINGS": "ignore"})
    if out.returncode != 0:
        sys.stderr.write(out.stdout[-5000:] + out.stderr[-20000:])
        raise SystemExit(f"{which} child failed (rc {out.returncode})")
    line = next(ln for ln in out.stdout.splitlines() if ln.startswith("RESULT "))
    res = json.loads(line[len("RESULT "):])
    res["process_s"] = time.perf_counter() - start
    return res


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--pairs", type=int, default=512)
    ap.add_argument("--batch-size", type=int, default=16)
    ap.add_argument("--steps", type=int, default=None, help="timed optimizer steps (default: one epoch)")
    ap.add_argument("--warmup", type=int, default=3, help="untimed steps before the timed window")
    ap.add_argument("--ref-batch-size", type=int, default=16,
                    help="reference precompute batch (plad: sequences, pairs.batch_size; TRL: pairs)")
    ap.add_argument("--rounds", type=int, default=1, help="plad/TRL measurements, order alternated; median")
    ap.add_argument("--threads", type=int, default=None, help="torch threads (default: torch's default)")
    ap.add_argument("--n-train", type=int, default=3000, help="task train rows the tokenizer is trained on")
    ap.add_argument("--trl-gradient-checkpointing", action="store_true", help="TRL's default; off for parity")
    ap.add_argument("--trl-bf16", action="store_true", help="TRL's default; off for parity (fp32 like plad)")
    ap.add_argument("--quick", action="store_true", help="smoke run: 48 pairs, batch 8, 1+3 steps")
    ap.add_argument("--child", choices=["plad", "trl"], default=None, help=argparse.SUPPRESS)
    ap.add_argument("--work", type=Path, default=None, help=argparse.SUPPRESS)
    a = ap.parse_args()
    if a.child:
        child_main(a)
        return
    import torch

    if a.quick:
        a.pairs, a.batch_size, a.warmup, a.n_train = 48, 8, 1, 300
        a.steps = a.steps or 3
    a.steps = a.steps or -(-a.pairs // a.batch_size)
    a.threads = a.threads or torch.get_num_threads()
    c = configs()
    print(f"{a.pairs} pairs, batch {a.batch_size}, {a.warmup} warm-up + {a.steps} timed steps, "
          f"{a.threads} torch threads, DPO sigmoid beta={c['loss']['beta']}, lr={c['lr']}, fp32")
    with tempfile.TemporaryDirectory(prefix="bench_train_") as tmp:
        work = Path(tmp)
        t = time.perf_counter()
        prepare(work, a.pairs, a.n_train)
        print(f"prepared tokenizer, student and pairs in {time.perf_counter() - t:.1f}s")
        results: dict[str, list[dict[str, Any]]] = {"plad": [], "trl": []}
        for r in range(a.rounds):
            for which in (("plad", "trl") if r % 2 == 0 else ("trl", "plad")):
                res = run_child(which, work, a)
                results[which].append(res)
                pps = a.steps * a.batch_size / (res["ref_s"] + res["train_s"])
                print(f"[round {r + 1}] {which:4s}: ref precompute {res['ref_s']:.2f}s, {res['steps']} steps, "
                      f"timed {a.steps} in {res['train_s']:.2f}s ({a.steps * a.batch_size / res['train_s']:.1f} "
                      f"pairs/s train only) -> {pps:.1f} pairs/s; tokenize {res['tokenize_s']:.2f}s, "
                      f"final loss {res['final_loss']:.4f}, threads {res['threads']}, process {res['process_s']:.1f}s")

    p0, t0 = results["plad"][0], results["trl"][0]
    diff = max(abs(x - y) for x, y in zip(p0["ref_chosen"] + p0["ref_rejected"], t0["ref_chosen"] + t0["ref_rejected"]))
    print(f"same sequences: plad {p0['n_tokens']} tokens, TRL {t0['n_tokens']} tokens; "
          f"max |ref logp plad - TRL| = {diff:.2e}")

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
    print(f"plad_vs_trl_throughput_ratio {pp / tp:.2f}")


if __name__ == "__main__":
    main()
