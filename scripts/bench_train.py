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
trainers see token-identical sequences (checked each run: same token count, reference log-probs
equal to ~1e-4). Each trainer runs in a fresh process (``--rounds`` alternates the order, medians
are reported); ``--warmup`` steps are excluded, the timed window covers ``--steps`` optimizer steps
(default one epoch). pairs/s = steps * batch / (reference precompute + timed steps). ``--breakdown``
then times both on identical batches, interleaved. The last line is
``plad_vs_trl_throughput_ratio <ratio>``.

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

ROOT = Path(__file__).resolve().parents[1]


# ----------------------------------------------------------------------------- shared setup

def configs() -> dict[str, Any]:
    from omegaconf import OmegaConf

    task = OmegaConf.load(ROOT / "configs" / "task" / "anonymization.yaml")
    loss = OmegaConf.to_container(OmegaConf.load(ROOT / "configs" / "loss" / "dpo.yaml"))
    distill = OmegaConf.load(ROOT / "configs" / "distill" / "default.yaml")
    trainer = OmegaConf.to_container(OmegaConf.load(ROOT / "configs" / "trainer" / "cpu.yaml"))
    return {"max_prompt_tokens": int(task.max_prompt_tokens), "max_completion_tokens": int(task.max_new_tokens),
            "loss": loss, "lr": float(loss["lr"]), "warmup_steps": int(distill.warmup_steps),
            "weight_decay": float(distill.weight_decay), "trainer": trainer}


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
    rows = [r for r in data["unlabeled"] if n_tokens(r["prompt"]) < c["max_prompt_tokens"]
            and max(n_tokens(r["reference"]), n_tokens(r["text"])) < c["max_completion_tokens"]][:n_pairs]
    if len(rows) < n_pairs:
        raise SystemExit(f"only {len(rows)} of {2 * n_pairs} prompts fit the length limits, need {n_pairs}")
    Dataset.from_dict({"id": [r["id"] for r in rows], "prompt": [r["prompt"] for r in rows],
                       "chosen": [r["reference"] for r in rows], "rejected": [r["text"] for r in rows]}
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
    model, tok = load_saved(work / "student")
    t = time.perf_counter()
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
    losses: list[float] = []

    class Timing(L.Callback):
        def on_train_batch_end(self, trainer, module, outputs, *args) -> None:
            timer.step_end(trainer.global_step)
            loss = outputs["loss"] if isinstance(outputs, dict) else outputs
            if loss is not None:
                losses.append(float(loss))

    # configs/trainer/cpu.yaml as fit_distill instantiates it, minus logging, checkpoints and validation.
    trainer = instantiate(c["trainer"], max_steps=max_steps, logger=False, callbacks=[Timing()],
                          enable_checkpointing=False, enable_progress_bar=False, enable_model_summary=False,
                          limit_val_batches=0, num_sanity_val_steps=0)
    trainer.fit(module, dm)
    return {"ref_s": ref_s, "tokenize_s": tokenize_s, "train_s": timer.seconds, "n_tokens": n_tokens,
            "steps": trainer.global_step, "threads": torch.get_num_threads(),
            "mean_loss": sum(losses) / len(losses), "ref_chosen": ref_c, "ref_rejected": ref_r}


# ----------------------------------------------------------------------------- TRL child

def _trl_config(work: Path, a: argparse.Namespace, c: dict[str, Any], max_steps: int) -> Any:
    from trl import DPOConfig

    return DPOConfig(
        output_dir=str(work / "trl_out"), loss_type="sigmoid", beta=float(c["loss"]["beta"]),
        per_device_train_batch_size=a.batch_size, max_steps=max_steps, precompute_ref_log_probs=True,
        precompute_ref_batch_size=a.ref_batch_size,
        max_length=c["max_prompt_tokens"] + c["max_completion_tokens"], learning_rate=c["lr"],
        warmup_steps=c["warmup_steps"], lr_scheduler_type="cosine", weight_decay=c["weight_decay"],
        adam_beta1=0.9, adam_beta2=0.95, max_grad_norm=float(c["trainer"]["gradient_clip_val"]),
        gradient_checkpointing=a.trl_gradient_checkpointing, bf16=a.trl_bf16,
        report_to=[], eval_strategy="no", save_strategy="no", logging_steps=10**9,
        dataloader_num_workers=0, use_cpu=True, disable_tqdm=True, seed=0)


def run_trl(work: Path, a: argparse.Namespace) -> dict[str, Any]:
    os.environ.setdefault("TQDM_DISABLE", "1")
    import datasets
    import torch
    from datasets import Dataset, load_from_disk
    from transformers import TrainerCallback
    from trl import DPOTrainer

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

    config = _trl_config(work, a, c, max_steps)
    trainer = TimedDPOTrainer(model=model, args=config, train_dataset=ds, processing_class=tok,
                              callbacks=[Timing()])
    n_tokens = sum(len(r["prompt_ids"]) * 2 + len(r["chosen_ids"]) + len(r["rejected_ids"])
                   for r in trainer.train_dataset)
    out = trainer.train()
    return {"ref_s": times["ref_s"], "tokenize_s": times["tokenize_s"], "train_s": timer.seconds,
            "n_tokens": n_tokens, "steps": trainer.state.global_step, "threads": torch.get_num_threads(),
            "mean_loss": float(out.training_loss),  # mean of the per-step losses
            "ref_chosen": list(trainer.train_dataset["ref_chosen_logps"]),
            "ref_rejected": list(trainer.train_dataset["ref_rejected_logps"])}


# ----------------------------------------------------------------------------- breakdown child

def run_breakdown(work: Path, a: argparse.Namespace) -> dict[str, Any]:
    """Per-batch costs on identical batches, plad and TRL interleaved so machine noise hits both alike:
    forward+backward of each loss path, the optimizer step (+ clipping) of each, and the padding of
    each reference-precompute schedule. Needs work/plad_pairs (written by the plad child)."""
    os.environ.setdefault("TQDM_DISABLE", "1")
    import datasets
    import torch
    import torch.nn.functional as F
    from datasets import Dataset, load_from_disk
    from trl import DPOTrainer
    from trl.trainer.utils import _CHUNKED_LOGPROB_CHUNK_SIZE, _ChunkedLogProbFunction, add_fused_lm_head

    from plad.data.pairs import PairDataModule
    from plad.models.build import load_saved
    from plad.module import DistillModule

    datasets.disable_progress_bars()
    c = configs()
    torch.manual_seed(0)
    module = DistillModule(str(work / "student"), c["loss"], lr=c["lr"], max_steps=100,
                           warmup_steps=c["warmup_steps"], weight_decay=c["weight_decay"])
    dm = PairDataModule(work / "plad_pairs", module.tokenizer, False, inputs=module.loss_fn.inputs,
                        batch_size=a.batch_size, max_prompt_tokens=c["max_prompt_tokens"],
                        max_completion_tokens=c["max_completion_tokens"], val_size=0, seed=0)
    dm.prepare_data()
    dm.setup("fit")
    plad_rows = dm.train_dataset.with_format(columns=[x for x in dm.train_dataset.column_names if x != "id"])
    pairs = load_from_disk(str(work / "plad_pairs" / "pairwise"))

    model, tok = load_saved(work / "student")
    model.train()
    text = Dataset.from_dict({"prompt": [tok.bos_token + p for p in pairs["prompt"]],
                              "chosen": list(pairs["chosen"]), "rejected": list(pairs["rejected"])})
    trainer = DPOTrainer(model=model, args=_trl_config(work, a, c, 100), train_dataset=text.select(range(4)),
                         processing_class=tok)
    trl_rows = trainer._prepare_dataset(text, tok, trainer.args, "bench")
    trl_rows = trl_rows.add_column("ref_chosen_logps", list(pairs["ref_chosen_logp"]))
    trl_rows = trl_rows.add_column("ref_rejected_logps", list(pairs["ref_rejected_logp"]))
    trl_rows = trl_rows.select_columns(["prompt_ids", "chosen_ids", "rejected_ids", "ref_chosen_logps",
                                        "ref_rejected_logps"])
    # TRL's forward with only the log-probs its loss needs (no entropy / mean logit / top-1 outputs).
    lean, _ = load_saved(work / "student")
    lean.train()
    add_fused_lm_head(lean, outputs=("log_probs",))
    beta = float(c["loss"]["beta"])

    n = len(plad_rows)
    order = torch.randperm(n, generator=torch.Generator().manual_seed(0)).tolist()
    batches = [order[i:i + a.batch_size] for i in range(0, n - a.batch_size + 1, a.batch_size)]
    batches = batches[:a.breakdown_batches + 2]

    def plad_fb(idx: list[int]) -> None:
        batch = dm.collator([plad_rows[i] for i in idx])
        loss, _ = module.loss_fn(module.scores(batch))
        loss.backward()

    def trl_fb(idx: list[int]) -> None:
        inputs = trainer.data_collator([trl_rows[i] for i in idx])
        trainer.compute_loss(trainer.model, inputs).backward()

    def lean_fb(idx: list[int]) -> None:
        inputs = trainer.data_collator([trl_rows[i] for i in idx])
        mask = inputs["completion_mask"]
        labels = inputs["input_ids"].masked_fill(mask == 0, -100)
        logp = lean(input_ids=inputs["input_ids"], attention_mask=inputs["attention_mask"], labels=labels,
                    fused_lm_head=True).log_probs[:, -(mask.shape[1] - 1):].sum(1)
        ch, rj = logp.chunk(2)
        h = (ch - inputs["ref_chosen_logps"]) - (rj - inputs["ref_rejected_logps"])
        (-F.logsigmoid(beta * h)).mean().backward()

    # The LM head + log-prob part alone, on the same hidden states: plad's logits_to_keep + cross_entropy
    # (plad.models.logprobs) vs TRL's fused chunked log-prob head as DPOTrainer configures it.
    weight = module.student.get_output_embeddings().weight
    hidden: dict[int, Any] = {}

    def hidden_of(b: int, idx: list[int]) -> tuple[Any, Any]:
        if b not in hidden:
            batch = dm.collator([plad_rows[i] for i in idx])
            with torch.no_grad():
                hidden[b] = (module.student.model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"])
                             .last_hidden_state, batch["labels"])
        h, labels = hidden[b]
        return h.detach().requires_grad_(), labels

    def plad_head(idx: list[int], b: int) -> None:
        h, labels = hidden_of(b, idx)
        keep = max(int((labels != -100).any(0).float().argmax()), 1)
        logits = F.linear(h[:, keep - 1:], weight)[:, :-1]
        targets = labels[:, keep:]
        token_logp = -F.cross_entropy(logits.float().flatten(0, 1), targets.flatten(), ignore_index=-100,
                                      reduction="none")
        token_logp.sum().backward()

    def trl_head(idx: list[int], b: int) -> None:
        h, labels = hidden_of(b, idx)
        hs, lab = h[:, :-1], labels[:, 1:]
        per = _ChunkedLogProbFunction.apply(hs.reshape(-1, hs.shape[-1]), weight, None, lab.clamp(min=0).reshape(-1),
                                            1.0, _CHUNKED_LOGPROB_CHUNK_SIZE, None, 1.0,
                                            ("log_probs", "entropy", "mean_logits", "is_top1"))
        per[0].view(lab.shape).masked_fill(lab == -100, 0).sum().backward()

    # Optimizers as each loop builds them (plad: AdamW, 2 param groups; TRL/HF: its default optim).
    plad_opt = module.configure_optimizers()["optimizer"]
    trl_opt = trainer.create_optimizer()
    clip = float(c["trainer"]["gradient_clip_val"])

    def plad_opt_step(idx: list[int]) -> None:
        torch.nn.utils.clip_grad_norm_(module.student.parameters(), clip)
        plad_opt.step()
        plad_opt.zero_grad()

    def trl_opt_step(idx: list[int]) -> None:
        trainer.accelerator.clip_grad_norm_(trainer.model.parameters(), clip)
        trl_opt.step()
        trl_opt.zero_grad()

    fns = {"plad_fwd_bwd": plad_fb, "plad_opt": plad_opt_step, "trl_fwd_bwd": trl_fb, "trl_opt": trl_opt_step,
           "trl_lean_fwd_bwd": lean_fb}
    heads = {"plad_head": plad_head, "trl_head": trl_head}
    times: dict[str, list[float]] = {k: [] for k in [*fns, *heads]}
    for b, idx in enumerate(batches):
        names = list(fns) if b % 2 == 0 else ["trl_fwd_bwd", "trl_opt", "trl_lean_fwd_bwd", "plad_fwd_bwd", "plad_opt"]
        for name in names:
            t = time.perf_counter()
            fns[name](idx)
            if b >= 2:  # first two batches warm up
                times[name].append(time.perf_counter() - t)
        lean.zero_grad()
        for name in (heads if b % 2 == 0 else reversed(list(heads))):
            for _ in range(3):
                t = time.perf_counter()
                heads[name](idx, b)
                if b >= 2:
                    times[name].append(time.perf_counter() - t)
        module.student.zero_grad()

    # Padded tokens of each schedule (what the forward passes actually compute over).
    lens_c = [len(r["prompt_ids"]) + len(r["chosen_ids"]) for r in trl_rows]
    lens_r = [len(r["prompt_ids"]) + len(r["rejected_ids"]) for r in trl_rows]
    plad_seqs = sorted(set(zip(pairs["prompt"], pairs["chosen"])) | set(zip(pairs["prompt"], pairs["rejected"])))
    by_text = {(p, x): l for p, x, l in zip(pairs["prompt"], pairs["chosen"], lens_c)}
    by_text |= {(p, x): l for p, x, l in zip(pairs["prompt"], pairs["rejected"], lens_r)}
    plad_lens = sorted((by_text[k] for k in plad_seqs), reverse=True)
    rb = a.ref_batch_size
    plad_ref_padded = sum(max(plad_lens[i:i + rb]) * len(plad_lens[i:i + rb]) for i in range(0, len(plad_lens), rb))
    trl_ref_padded = sum(2 * len(lens_c[i:i + rb]) * max(lens_c[i:i + rb] + lens_r[i:i + rb])
                         for i in range(0, len(lens_c), rb))
    real = sum(lens_c) + sum(lens_r)
    # LM-head positions per training batch: plad keeps logits from the batch's first completion
    # position (logits_to_keep); TRL on CPU (no Triton) scores every position of the padded batch.
    head_plad = head_trl = 0
    for idx in batches[2:]:
        batch = dm.collator([plad_rows[i] for i in idx])
        labels = batch["labels"]
        first = int((labels != -100).any(0).float().argmax())
        head_plad += labels.shape[0] * (labels.shape[1] - max(first, 1))
        head_trl += labels.shape[0] * (labels.shape[1] - 1)
    med = {k: statistics.median(v) for k, v in times.items()}
    return {"median_s": med, "n_batches": len(batches) - 2, "ref_tokens_real": real,
            "ref_tokens_padded_plad": plad_ref_padded, "ref_tokens_padded_trl": trl_ref_padded,
            "head_positions_plad": head_plad, "head_positions_trl": head_trl, "threads": torch.get_num_threads()}


# ----------------------------------------------------------------------------- parent

def child_main(a: argparse.Namespace) -> None:
    import torch

    torch.set_num_threads(a.threads)
    res = {"plad": run_plad, "trl": run_trl, "breakdown": run_breakdown}[a.child](a.work, a)
    print("RESULT " + json.dumps(res))


def run_child(which: str, work: Path, a: argparse.Namespace) -> dict[str, Any]:
    cmd = [sys.executable, __file__, "--child", which, "--work", str(work), "--threads", str(a.threads),
           "--batch-size", str(a.batch_size), "--steps", str(a.steps), "--warmup", str(a.warmup),
           "--ref-batch-size", str(a.ref_batch_size), "--breakdown-batches", str(a.breakdown_batches)]
    cmd += ["--trl-gradient-checkpointing"] * a.trl_gradient_checkpointing + ["--trl-bf16"] * a.trl_bf16
    out = subprocess.run(cmd, capture_output=True, text=True, env={**os.environ, "PYTHONWARNINGS": "ignore"})
    if out.returncode != 0:
        sys.stderr.write(out.stdout[-5000:] + out.stderr[-20000:])
        raise SystemExit(f"{which} child failed (rc {out.returncode})")
    line = next(ln for ln in out.stdout.splitlines() if ln.startswith("RESULT "))
    return json.loads(line[len("RESULT "):])


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--pairs", type=int, default=512)
    ap.add_argument("--batch-size", type=int, default=16)
    ap.add_argument("--steps", type=int, default=None, help="timed optimizer steps (default: one epoch)")
    ap.add_argument("--warmup", type=int, default=3, help="untimed steps before the timed window")
    ap.add_argument("--ref-batch-size", type=int, default=16,
                    help="reference precompute batch (plad: sequences, pairs.batch_size; TRL: pairs)")
    ap.add_argument("--rounds", type=int, default=1, help="plad/TRL measurements, order alternated; median")
    ap.add_argument("--threads", type=int, default=1,
                    help="torch threads per trainer process; 1 stays steady when other jobs share the cores, "
                         "2 uses both cores of an otherwise idle machine")
    ap.add_argument("--n-train", type=int, default=3000, help="task train rows the tokenizer is trained on")
    ap.add_argument("--trl-gradient-checkpointing", action="store_true", help="TRL's default; off for parity")
    ap.add_argument("--trl-bf16", action="store_true", help="TRL's default; off for parity (fp32 like plad)")
    ap.add_argument("--breakdown", action="store_true",
                    help="also time forward+backward / optimizer of both on identical batches (interleaved)")
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
    print(f"{a.pairs} pairs, batch {a.batch_size}, {a.warmup} warm-up + {a.steps} timed steps, "
          f"{a.threads} torch threads, DPO sigmoid beta={c['loss']['beta']}, lr={c['lr']}, fp32")
    busy = os.getloadavg()[0]
    if a.threads > 1 and busy > 0.5:
        print(f"warning: load average {busy:.1f} before start; with {a.threads} threads per process, other jobs "
              f"on these cores stall torch's thread barriers and timings get noisy (--threads 1 is steadier)")
    with tempfile.TemporaryDirectory(prefix="bench_train_") as tmp:
        work = Path(tmp)
        t = time.perf_counter()
        what = prepare(work, a.pairs, a.n_train)
        print(f"prepared tokenizer, {what} and pairs in {time.perf_counter() - t:.1f}s")
        results: dict[str, list[dict[str, Any]]] = {"plad": [], "trl": []}
        for r in range(a.rounds):
            for which in (("plad", "trl") if r % 2 == 0 else ("trl", "plad")):
                load = os.getloadavg()[0]
                res = run_child(which, work, a)
                results[which].append(res)
                pps = a.steps * a.batch_size / (res["ref_s"] + res["train_s"])
                print(f"[round {r + 1}] {which:4s}: ref precompute {res['ref_s']:.2f}s, {res['steps']} steps, "
                      f"timed {a.steps} in {res['train_s']:.2f}s ({a.steps * a.batch_size / res['train_s']:.1f} "
                      f"pairs/s train only) -> {pps:.1f} pairs/s; tokenize {res['tokenize_s']:.2f}s, "
                      f"mean loss {res['mean_loss']:.4f}, threads {res['threads']}, load before {load:.1f}")
        bd = run_child("breakdown", work, a) if a.breakdown else None

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
    if bd is not None:
        m = bd["median_s"]
        print(f"breakdown (median of {bd['n_batches']} identical batches, interleaved, {bd['threads']} threads):")
        print(f"  loss forward+backward per batch: plad {m['plad_fwd_bwd'] * 1e3:.0f} ms, TRL "
              f"{m['trl_fwd_bwd'] * 1e3:.0f} ms (TRL with a log-probs-only head and no metrics "
              f"{m['trl_lean_fwd_bwd'] * 1e3:.0f} ms)")
        print(f"    of which LM head + log-probs (fwd+bwd, same hidden states): plad {m['plad_head'] * 1e3:.0f} ms "
              f"({bd['head_positions_plad']} positions: logits_to_keep + cross_entropy), TRL "
              f"{m['trl_head'] * 1e3:.0f} ms ({bd['head_positions_trl']} positions: chunked fused head, every "
              f"position on CPU, + entropy/mean-logit/top-1)")
        print(f"  clip + optimizer step: plad {m['plad_opt'] * 1e3:.0f} ms, TRL {m['trl_opt'] * 1e3:.0f} ms; "
              f"whole loop per step: plad {pt / a.steps * 1e3:.0f} ms, TRL {tt / a.steps * 1e3:.0f} ms")
        print(f"  reference precompute padded tokens: plad {bd['ref_tokens_padded_plad']} (length-sorted, "
              f"distinct sequences), TRL {bd['ref_tokens_padded_trl']} (dataset order, chosen+rejected "
              f"padded together); real tokens {bd['ref_tokens_real']}")
    print(f"plad_vs_trl_throughput_ratio {pp / tp:.2f}")


if __name__ == "__main__":
    main()
