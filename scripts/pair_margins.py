"""Where does each trained student put the teacher's output and its own sample? Scores every pair of
a cached pair set under each run's student and prints, per run, the mean length-normalised
log-likelihood of y+ (teacher) and y- (student sample), their margin and the share of pairs that
rank y+ first, separately for the prompts of the run's training split and those it held out.

Why a script: the run's own ``val/margin`` is measured on ``distill.val_size`` held-out pairs, a
handful of prompts (16 pairs = 2 prompts in the SmolLM2 presets), too few to describe the pair set.
Here every pair counts. The initial student's row comes from the log-probs stored with the pairs
(no forward pass); ``--check-initial`` rescores it to confirm this script scores as the pairs did.

    python scripts/pair_margins.py logs/cache/pairs/<key> outputs/run_a outputs/run_b --prompts 32 --out margins
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import numpy as np
from datasets import load_from_disk
from omegaconf import OmegaConf

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "src"))
from plad.data.pair_datamodule import val_ids  # noqa: E402
from plad.models.build import load_saved  # noqa: E402
from plad.models.likelihood import score_completions  # noqa: E402


def per_token(sum_logp: np.ndarray, ids: list[list[int]], finished: list[bool]) -> np.ndarray:
    """The stored summed log-probs per scored token: the completion, plus its EOS when it ended
    (what ``score_completions`` counts; ``--check-initial`` compares the two)."""
    return sum_logp / np.array([len(i) + bool(f) for i, f in zip(ids, finished)])


def summary(chosen: np.ndarray, rejected: np.ndarray, held: np.ndarray) -> dict[str, dict[str, float]]:
    out = {}
    for name, sel in (("all", np.ones_like(held)), ("train_split", ~held), ("held_out", held)):
        if sel.any():
            c, r = chosen[sel], rejected[sel]
            out[name] = {
                "chosen": float(c.mean()),
                "rejected": float(r.mean()),
                "margin": float((c - r).mean()),
                "accuracy": float((c > r).mean()),
                "n": int(sel.sum()),
            }
    return out


def score_model(model_dir: Path, cfg, pairs, label: str) -> tuple[np.ndarray, np.ndarray]:
    """Per-token log-likelihood of y+ and y- under the model saved in ``model_dir``, with the run's
    prompt and completion lengths (``cfg``) and the pairs' token ids and EOS flags, as training scores them."""
    model, tok = load_saved(model_dir)
    model.eval()
    kw = dict(max_prompt_tokens=int(cfg.task.max_prompt_tokens), max_completion_tokens=int(cfg.task.max_new_tokens))
    keys = [
        (i, tuple(ids), f) for side in ("chosen", "rejected")
        for i, ids, f in zip(pairs["id"], pairs[f"{side}_ids"], pairs[f"{side}_finished"])
    ]  # fmt: skip
    unique = list(dict.fromkeys(keys))  # y+ repeats in each of its prompt's pairs: scored once
    prompt = dict(zip(pairs["id"], pairs["prompt"]))
    s = score_completions(
        model, tok, [prompt[k[0]] for k in unique], [list(k[1]) for k in unique],
        finished=[k[2] for k in unique], desc=label, **kw,
    )  # fmt: skip
    mean = dict(zip(unique, s.mean_logp))  # over the tokens scoring counted (a check of per_token's count)
    n = len(pairs)
    return np.array([mean[k] for k in keys[:n]]), np.array([mean[k] for k in keys[n:]])


def main(argv: list[str] | None = None) -> dict:
    """Runs the comparison; returns what it writes to pair_margins.json."""
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("pairs", type=Path, help="a pair cache entry (holds pairwise/)")
    p.add_argument("runs", type=Path, nargs="+", help="run directories (each holds student/ and .hydra/)")
    p.add_argument("--out", type=Path, default=Path("pair_margins"))
    p.add_argument("--check-initial", action="store_true", help="rescore the initial student too")
    p.add_argument(
        "--prompts", type=int, default=0, help="score the pairs of this many training-split prompts (0: all)"
    )
    a = p.parse_args(argv)

    pairs = load_from_disk(str(a.pairs / "pairwise"))
    cfgs = {run: OmegaConf.load(run / ".hydra" / "config.yaml") for run in a.runs}
    cfg = cfgs[a.runs[0]]
    held_ids = val_ids(pairs["id"], cfg.distill.val_size, int(cfg.seed))
    if a.prompts:  # every held-out prompt, and a seeded draw of the training split's
        trained = sorted(set(pairs["id"]) - held_ids)
        keep = held_ids | set(np.random.default_rng(0).choice(trained, min(a.prompts, len(trained)), replace=False))
        pairs = pairs.filter(lambda r: r["id"] in keep)
    held = np.array([i in held_ids for i in pairs["id"]])
    for run, c in cfgs.items():  # the training/held-out split must be the same for every run
        if (c.distill.val_size, int(c.seed)) != (cfg.distill.val_size, int(cfg.seed)):
            sys.exit(f"runs: expected one distill.val_size and seed for all runs; {run} differs from {a.runs[0]}")
    init = (
        per_token(np.array(pairs["ref_chosen_logp"]), pairs["chosen_ids"], pairs["chosen_finished"]),
        per_token(np.array(pairs["ref_rejected_logp"]), pairs["rejected_ids"], pairs["rejected_finished"]),
    )
    results = {"initial student": summary(*init, held)}
    gap = None
    if a.check_initial:
        summ = json.loads((a.runs[0] / "run_summary.json").read_text())
        rescored = score_model(Path(summ["systems"]["student_init"]), cfg, pairs, "initial")
        gap = max(float(np.abs(rescored[k] - init[k]).max()) for k in (0, 1))
        print(f"initial student rescored: largest per-token difference to the stored log-probs {gap:.2e}")
    for run, c in cfgs.items():
        results[run.name] = summary(*score_model(run / "student", c, pairs, run.name), held)

    a.out.mkdir(parents=True, exist_ok=True)
    written = {"systems": results, "initial_rescore_gap": gap, "n_pairs": len(pairs)}
    (a.out / "pair_margins.json").write_text(json.dumps(written, indent=2))
    print(f"{'system':34s} {'set':9s} {'s(y+)':>7s} {'s(y-)':>7s} {'margin':>7s} {'acc':>5s} {'n':>5s}")
    for name, parts in results.items():
        for part, v in parts.items():
            print(
                f"{name:34s} {part:9s} {v['chosen']:7.2f} {v['rejected']:7.2f} {v['margin']:7.2f} "
                f"{v['accuracy']:5.2f} {v['n']:5d}"
            )
    plot(results, a.out / "pair_margins.png")
    print(f"wrote {a.out / 'pair_margins.json'} and {a.out / 'pair_margins.png'}")
    return written


def plot(results: dict, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    names = list(results)
    x = np.arange(len(names))
    fig, ax = plt.subplots(figsize=(1.2 * len(names) + 3, 4))
    for k, (side, label) in enumerate((("chosen", "s(y+) teacher"), ("rejected", "s(y-) own sample"))):
        ax.bar(x + (k - 0.5) * 0.38, [results[n]["all"][side] for n in names], 0.38, label=label)
    for i, n in enumerate(names):
        ax.annotate(f"acc {results[n]['all']['accuracy']:.2f}", (i, 0), ha="center", va="bottom", fontsize=8)
    ax.set_xticks(x, names, rotation=30, ha="right", fontsize=8)
    ax.set_ylabel("mean log-likelihood per token (all pairs)")
    ax.axhline(0, color="black", lw=0.5)
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=120)


if __name__ == "__main__":
    main()
