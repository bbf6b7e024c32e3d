"""The two trainer children of the benchmark, each run in a fresh process: plad (reference
log-probs, then DistillModule + PairDataModule in a Lightning Trainer) and TRL (DPOTrainer with its
reference precompute). Both return their timings, token count, mean loss and reference log-probs."""

from __future__ import annotations

import argparse
import os
import time
from pathlib import Path
from typing import Any

from _bench_train.common import StepTimer, configs


def run_plad(work: Path, a: argparse.Namespace) -> dict[str, Any]:
    import lightning as L
    import torch
    from datasets import load_from_disk
    from hydra.utils import instantiate

    from plad.data.pair_datamodule import PairDataModule
    from plad.models.build import load_saved
    from plad.models.likelihood import score_completions
    from plad.pairs import store
    from plad.training.modules import DistillModule

    c = configs()
    text = load_from_disk(str(work / "pairs_text"))
    prompts, chosen, rejected = list(text["prompt"]), list(text["chosen"]), list(text["rejected"])

    # Reference log-probs of the initial student, once per distinct (prompt, text), as build_rows does.
    model, tok = load_saved(work / "student")
    t = time.perf_counter()
    keys = sorted({(p, x) for p, cs in zip(prompts, zip(chosen, rejected)) for x in cs})
    logp = dict(
        zip(
            keys,
            score_completions(
                model,
                tok,
                [p for p, _ in keys],
                [x for _, x in keys],
                max_prompt_tokens=c["max_prompt_tokens"],
                max_completion_tokens=c["max_completion_tokens"],
                batch_size=a.ref_batch_size,
                progress=False,
            ).sum_logp,
        )
    )
    ref_s = time.perf_counter() - t
    del model
    ref_c = [logp[p, x] for p, x in zip(prompts, chosen)]
    ref_r = [logp[p, x] for p, x in zip(prompts, rejected)]
    entry = work / "plad_pairs"
    store.remove(entry)
    # The pair cache's layout: texts that end (references), served as their own token ids.
    for col, texts in (("chosen", chosen), ("rejected", rejected)):
        text = text.add_column(f"{col}_ids", [tok(x, add_special_tokens=False)["input_ids"] for x in texts])
        text = text.add_column(f"{col}_finished", [True] * len(texts))
    store.write_entry(
        entry,
        {
            "pairwise": text.add_column("ref_chosen_logp", ref_c).add_column("ref_rejected_logp", ref_r),
            "listwise": None,
        },
        {
            "ref_lengths": {
                "max_prompt_tokens": c["max_prompt_tokens"],
                "max_completion_tokens": c["max_completion_tokens"],
            }
        },
    )

    L.seed_everything(0, verbose=False)
    max_steps = a.warmup + a.steps
    module = DistillModule(
        str(work / "student"),
        c["loss"],
        lr=c["lr"],
        max_steps=max_steps,
        warmup_steps=c["warmup_steps"],
        weight_decay=c["weight_decay"],
        optim=c["optim"],
    )
    t = time.perf_counter()
    dm = PairDataModule(
        entry,
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
    tokenize_s = time.perf_counter() - t
    n_tokens = sum(len(ids) for row in dm.train_dataset["input_ids"] for ids in row)

    timer = StepTimer(a.warmup, max_steps)
    losses: list[float] = []

    class Timing(L.Callback):
        def on_train_batch_end(self, trainer, module, outputs, *args) -> None:
            timer.step_end(trainer.global_step)
            loss = trainer.callback_metrics.get("train/loss")  # manual optimisation: training_step returns None
            if loss is not None:
                losses.append(float(loss))

    # configs/trainer/cpu.yaml as fit_distill instantiates it, minus logging, checkpoints and validation.
    trainer = instantiate(
        c["trainer"],
        max_steps=max_steps,
        logger=False,
        callbacks=[Timing()],
        enable_checkpointing=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        limit_val_batches=0,
        num_sanity_val_steps=0,
    )
    trainer.fit(module, dm)
    return {
        "ref_s": ref_s,
        "tokenize_s": tokenize_s,
        "train_s": timer.seconds,
        "n_tokens": n_tokens,
        "steps": trainer.global_step,
        "threads": torch.get_num_threads(),
        "mean_loss": sum(losses) / len(losses),
        "ref_chosen": ref_c,
        "ref_rejected": ref_r,
    }


# ----------------------------------------------------------------------------- TRL child


def _trl_config(work: Path, a: argparse.Namespace, c: dict[str, Any], max_steps: int) -> Any:
    from trl import DPOConfig

    return DPOConfig(
        output_dir=str(work / "trl_out"),
        loss_type="sigmoid",
        beta=float(c["loss"]["beta"]),
        per_device_train_batch_size=a.batch_size,
        max_steps=max_steps,
        precompute_ref_log_probs=True,
        precompute_ref_batch_size=a.ref_batch_size,
        max_length=c["max_prompt_tokens"] + c["max_completion_tokens"],
        learning_rate=c["lr"],
        warmup_steps=c["warmup_steps"],
        lr_scheduler_type="cosine",
        weight_decay=c["weight_decay"],
        adam_beta1=0.9,
        adam_beta2=0.95,
        max_grad_norm=c["gradient_clip_val"],
        gradient_checkpointing=a.trl_gradient_checkpointing,
        bf16=a.trl_bf16,
        report_to=[],
        eval_strategy="no",
        save_strategy="no",
        logging_steps=10**9,
        dataloader_num_workers=0,
        use_cpu=True,
        disable_tqdm=True,
        seed=0,
    )


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
    ds = Dataset.from_dict(
        {
            "prompt": [tok.bos_token + p for p in text["prompt"]],
            "chosen": list(text["chosen"]),
            "rejected": list(text["rejected"]),
        }
    )
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
    trainer = TimedDPOTrainer(model=model, args=config, train_dataset=ds, processing_class=tok, callbacks=[Timing()])
    n_tokens = sum(
        len(r["prompt_ids"]) * 2 + len(r["chosen_ids"]) + len(r["rejected_ids"]) for r in trainer.train_dataset
    )
    out = trainer.train()
    return {
        "ref_s": times["ref_s"],
        "tokenize_s": times["tokenize_s"],
        "train_s": timer.seconds,
        "n_tokens": n_tokens,
        "steps": trainer.state.global_step,
        "threads": torch.get_num_threads(),
        "mean_loss": float(out.training_loss),  # mean of the per-step losses
        "ref_chosen": list(trainer.train_dataset["ref_chosen_logps"]),
        "ref_rejected": list(trainer.train_dataset["ref_rejected_logps"]),
    }
