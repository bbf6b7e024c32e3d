"""The breakdown child: plad and TRL timed per batch on identical batches, interleaved, down to the
LM head and the optimizer step, plus the padding of each reference-precompute schedule."""

from __future__ import annotations

import argparse
import os
import statistics
import time
from pathlib import Path
from typing import Any

from _bench_train.children import _trl_config
from _bench_train.common import configs


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

    from plad.data.pair_datamodule import PairDataModule
    from plad.models.build import load_saved
    from plad.training.modules import DistillModule

    datasets.disable_progress_bars()
    c = configs()
    torch.manual_seed(0)
    module = DistillModule(
        str(work / "student"),
        c["loss"],
        lr=c["lr"],
        max_steps=100,
        warmup_steps=c["warmup_steps"],
        weight_decay=c["weight_decay"],
        optim=c["optim"],
    )
    dm = PairDataModule(
        work / "plad_pairs",
        module.tokenizer,
        False,
        inputs=module.loss_fn.inputs,
        batch_size=a.batch_size,
        max_prompt_tokens=c["max_prompt_tokens"],
        max_completion_tokens=c["max_completion_tokens"],
        val_size=0,
        seed=0,
    )
    dm.prepare_data()
    dm.setup("fit")
    plad_rows = dm.train_dataset.with_format(columns=[x for x in dm.train_dataset.column_names if x != "id"])
    pairs = load_from_disk(str(work / "plad_pairs" / "pairwise"))

    model, tok = load_saved(work / "student")
    model.train()
    text = Dataset.from_dict(
        {
            "prompt": [tok.bos_token + p for p in pairs["prompt"]],
            "chosen": list(pairs["chosen"]),
            "rejected": list(pairs["rejected"]),
        }
    )
    trainer = DPOTrainer(
        model=model, args=_trl_config(work, a, c, 100), train_dataset=text.select(range(4)), processing_class=tok
    )
    trl_rows = trainer._prepare_dataset(text, tok, trainer.args, "bench")
    trl_rows = trl_rows.add_column("ref_chosen_logps", list(pairs["ref_chosen_logp"]))
    trl_rows = trl_rows.add_column("ref_rejected_logps", list(pairs["ref_rejected_logp"]))
    trl_rows = trl_rows.select_columns(
        ["prompt_ids", "chosen_ids", "rejected_ids", "ref_chosen_logps", "ref_rejected_logps"]
    )
    # TRL's forward with only the log-probs its loss needs (no entropy / mean logit / top-1 outputs).
    lean, _ = load_saved(work / "student")
    lean.train()
    add_fused_lm_head(lean, outputs=("log_probs",))
    beta = float(c["loss"]["beta"])

    n = len(plad_rows)
    order = torch.randperm(n, generator=torch.Generator().manual_seed(0)).tolist()
    batches = [order[i : i + a.batch_size] for i in range(0, n - a.batch_size + 1, a.batch_size)]
    batches = batches[: a.breakdown_batches + 2]

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
        logp = (
            lean(
                input_ids=inputs["input_ids"],
                attention_mask=inputs["attention_mask"],
                labels=labels,
                fused_lm_head=True,
            )
            .log_probs[:, -(mask.shape[1] - 1) :]
            .sum(1)
        )
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
                hidden[b] = (
                    module.student.model(
                        input_ids=batch["input_ids"], attention_mask=batch["attention_mask"]
                    ).last_hidden_state,
                    batch["labels"],
                )
        h, labels = hidden[b]
        return h.detach().requires_grad_(), labels

    def plad_head(idx: list[int], b: int) -> None:
        h, labels = hidden_of(b, idx)
        keep = max(int((labels != -100).any(0).float().argmax()), 1)
        logits = F.linear(h[:, keep - 1 :], weight)[:, :-1]
        targets = labels[:, keep:]
        token_logp = -F.cross_entropy(
            logits.float().flatten(0, 1), targets.flatten(), ignore_index=-100, reduction="none"
        )
        token_logp.sum().backward()

    def trl_head(idx: list[int], b: int) -> None:
        h, labels = hidden_of(b, idx)
        hs, lab = h[:, :-1], labels[:, 1:]
        per = _ChunkedLogProbFunction.apply(
            hs.reshape(-1, hs.shape[-1]),
            weight,
            None,
            lab.clamp(min=0).reshape(-1),
            1.0,
            _CHUNKED_LOGPROB_CHUNK_SIZE,
            None,
            1.0,
            ("log_probs", "entropy", "mean_logits", "is_top1"),
        )
        per[0].view(lab.shape).masked_fill(lab == -100, 0).sum().backward()

    # Optimizers as each loop builds them (plad: AdamW, 2 param groups; TRL/HF: its default optim).
    plad_opt = module.configure_optimizers()["optimizer"]
    trl_opt = trainer.create_optimizer()
    clip = c["gradient_clip_val"]

    def plad_opt_step(idx: list[int]) -> None:
        torch.nn.utils.clip_grad_norm_(module.student.parameters(), clip)
        plad_opt.step()
        plad_opt.zero_grad()

    def trl_opt_step(idx: list[int]) -> None:
        trainer.accelerator.clip_grad_norm_(trainer.model.parameters(), clip)
        trl_opt.step()
        trl_opt.zero_grad()

    fns = {
        "plad_fwd_bwd": plad_fb,
        "plad_opt": plad_opt_step,
        "trl_fwd_bwd": trl_fb,
        "trl_opt": trl_opt_step,
        "trl_lean_fwd_bwd": lean_fb,
    }
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
        for name in heads if b % 2 == 0 else reversed(list(heads)):
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
    by_text = {(p, x): n for p, x, n in zip(pairs["prompt"], pairs["chosen"], lens_c)}
    by_text |= {(p, x): n for p, x, n in zip(pairs["prompt"], pairs["rejected"], lens_r)}
    plad_lens = sorted((by_text[k] for k in plad_seqs), reverse=True)
    rb = a.ref_batch_size
    plad_ref_padded = sum(max(plad_lens[i : i + rb]) * len(plad_lens[i : i + rb]) for i in range(0, len(plad_lens), rb))
    trl_ref_padded = sum(
        2 * len(lens_c[i : i + rb]) * max(lens_c[i : i + rb] + lens_r[i : i + rb]) for i in range(0, len(lens_c), rb)
    )
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
    return {
        "median_s": med,
        "n_batches": len(batches) - 2,
        "ref_tokens_real": real,
        "ref_tokens_padded_plad": plad_ref_padded,
        "ref_tokens_padded_trl": trl_ref_padded,
        "head_positions_plad": head_plad,
        "head_positions_trl": head_trl,
        "threads": torch.get_num_threads(),
    }
