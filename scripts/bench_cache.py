"""Time from process start to pairs ready: cold pair cache vs warm, each in a fresh process.

The parent prepares what earlier stages would have cached (the default task's unlabeled prompts,
the default tiny Llama teacher and student from configs/model/llama.yaml, random weights) in a
temporary directory, then runs the pairs stage twice in new subprocesses against one empty cache
dir. A warm run must only import, fingerprint, verify the manifest and memory-map the Arrow
files. The last line is ``warm_vs_cold_time_ratio <ratio>``.

    python scripts/bench_cache.py [--n-prompts 256] [--max-new-tokens 64]
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def child(work: Path, max_new_tokens: int) -> None:
    """The pairs stage as the pipeline runs it; prints READY <epoch seconds> when pairs are usable."""
    from datasets import load_from_disk
    from omegaconf import OmegaConf

    from plad.models.ref import ModelRef
    from plad.pairs.build import obtain_pairs

    def loader(name: str):
        def load():
            from plad.models.build import load_saved

            return load_saved(work / name)

        return load

    cfg = OmegaConf.load(ROOT / "configs" / "pairs" / "default.yaml")
    cfg.pop("defaults")
    prompts = load_from_disk(str(work / "prompts"))
    ps = obtain_pairs(
        cfg,
        prompts,
        None,
        ModelRef(None, "bench-teacher", loader=loader("teacher")),
        ModelRef(None, "bench-student", loader=loader("student")),
        work / "cache",
        max_prompt_tokens=128,
        max_new_tokens=max_new_tokens,
        seed=0,
    )
    ready = time.time()
    print(f"READY {ready} {json.dumps({'rows': len(ps.pairwise), 'stats': ps.stats})}")


def prepare(work: Path, n_prompts: int) -> None:
    from omegaconf import OmegaConf

    from plad.models.build import build_model, save_model
    from plad.models.tokenizer import train_tokenizer
    from plad.tasks.anonymization import AnonymizationTask

    data = AnonymizationTask(seed=0, n_train=500, n_unlabeled=n_prompts, n_validation=1, n_test=1).load()
    data["unlabeled"].save_to_disk(str(work / "prompts"))
    tok = train_tokenizer(list(data["train"]["prompt"]) + list(data["train"]["reference"]), vocab_size=1024)
    spec = OmegaConf.load(ROOT / "configs" / "model" / "llama.yaml")
    for i, name in enumerate(("teacher", "student")):
        save_model(build_model(spec[name], tok, seed=i).eval(), tok, work / name)


def timed_run(work: Path, max_new_tokens: int) -> tuple[float, dict]:
    start = time.time()
    out = subprocess.run(
        [sys.executable, __file__, "--child", str(work), "--max-new-tokens", str(max_new_tokens)],
        capture_output=True,
        text=True,
        check=True,
    )
    line = next(ln for ln in out.stdout.splitlines() if ln.startswith("READY "))
    _, ready, info = line.split(" ", 2)
    return float(ready) - start, json.loads(info)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--n-prompts", type=int, default=256)
    ap.add_argument("--max-new-tokens", type=int, default=64)
    ap.add_argument("--child", type=Path, default=None, help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.child is not None:
        child(args.child, args.max_new_tokens)
        return
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        prepare(work, args.n_prompts)
        cold, info = timed_run(work, args.max_new_tokens)
        st = info["stats"]
        print(
            f"cold: {cold:.1f}s to {info['rows']} pairs (teacher {st['teacher']['tokens']} tokens in "
            f"{st['teacher']['seconds']:.1f}s, student {st['student']['tokens']} tokens in "
            f"{st['student']['seconds']:.1f}s)"
        )
        warm, info2 = timed_run(work, args.max_new_tokens)
        assert info2["rows"] == info["rows"] and info2["stats"]["fingerprint"] == st["fingerprint"]
        print(f"warm: {warm:.2f}s (same entry {st['fingerprint']})")
    print(f"warm_vs_cold_time_ratio {warm / cold:.3f}")


if __name__ == "__main__":
    main()
