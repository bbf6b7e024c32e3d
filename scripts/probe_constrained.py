"""Would decoding alone close an anonymization model's keep gap? Greedy decoding of one saved model
on the hand-written validation rows (``dev.jsonl``), free and copy-or-mask constrained, side by side.

Copy-or-mask: the output must be the input with some spans replaced by ``[TYPE]`` placeholders (the
task's PII types), each span at most ``--max-span`` characters and on word boundaries, and it may
end only when the whole input is consumed. At each step the model's best-scoring token among its
top ``--top-k`` that keeps the output such a prefix is taken; when none does, the output stops
there. Under the constraint a model can no longer paraphrase, drop words, continue past the input
or hallucinate; it can still mask words that are not PII, and stop early. ``incomplete`` counts the
outputs that are not a whole copy-or-mask output of their input (cut short); in the others, every
word lost was masked: the model's own judgement of what is PII, which only training can change.

Validation only; the OOD test set is never touched. (docs/RESULTS.md, "Does decoding close the keep
gap?")

    python scripts/probe_constrained.py --model logs/cache/models/smollm2-teacher-<key>
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch
from transformers import LogitsProcessor, LogitsProcessorList

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "src"))
from plad.evaluation.degenerate import degenerate_share  # noqa: E402
from plad.models.build import load_saved  # noqa: E402
from plad.models.encoding import encode_prompt, pad_batch  # noqa: E402
from plad.tasks.anonymization import AnonymizationTask  # noqa: E402
from plad.tasks.anonymization.generator import PII_TYPES  # noqa: E402
from plad.tasks.anonymization.metrics import keep_rate  # noqa: E402

State = tuple  # ("copy", i): next char copies text[i]; ("mask", i, typed): in "[typed", span from i
PARTIAL_TYPES = {t[:k] for t in PII_TYPES for k in range(len(t) + 1)}


def _boundary(text: str, i: int) -> bool:
    """A span may start or end at i: not inside a run of letters/digits."""
    return i in (0, len(text)) or not (text[i - 1].isalnum() and text[i].isalnum())


def advance(text: str, states: set[State], chars: str, max_span: int) -> set[State]:
    """The states after reading ``chars`` of output, from ``states`` (empty: not a valid prefix)."""
    for ch in chars:
        nxt: set[State] = set()
        for s in states:
            if s[0] == "copy":
                i = s[1]
                if i < len(text) and text[i] == ch:
                    nxt.add(("copy", i + 1))
                if ch == "[" and i < len(text) and _boundary(text, i):
                    nxt.add(("mask", i, ""))
            elif ch == "]" and s[2] in PII_TYPES:  # the span text[i:j] is masked; copying resumes at j
                i = s[1]
                top = min(len(text), i + max_span)
                nxt.update(("copy", j) for j in range(i + 1, top + 1) if _boundary(text, j))
            elif s[2] + ch in PARTIAL_TYPES:
                nxt.add(("mask", s[1], s[2] + ch))
        if not (states := nxt):
            break
    return states


def accepts(text: str, output: str, max_span: int, complete: bool = True) -> bool:
    """Is ``output`` a copy-or-mask output of ``text`` (a prefix of one, when not ``complete``)?"""
    states = advance(text, {("copy", 0)}, output, max_span)
    return ("copy", len(text)) in states if complete else bool(states)


class CopyOrMask(LogitsProcessor):
    """Leaves one token allowed per row: the best of the top-k that keeps a valid prefix, else EOS."""

    def __init__(self, tokenizer: Any, texts: Sequence[str], prompt_len: int, eos: int, top_k: int, max_span: int):
        self.tok, self.texts, self.prompt_len, self.eos = tokenizer, texts, prompt_len, eos
        self.top_k, self.max_span = top_k, max_span

    def _allowed(self, row: int, generated: list[int], scores: torch.Tensor) -> int:
        text = self.texts[row]
        if self.eos in generated:  # finished rows only pad
            return self.eos
        # A multi-byte character split across tokens decodes to U+FFFD until it is complete.
        so_far = self.tok.decode(generated).lstrip().rstrip("\ufffd")
        states = advance(text, {("copy", 0)}, so_far, self.max_span)
        complete = ("copy", len(text)) in states
        for t in torch.topk(scores, min(self.top_k, scores.shape[-1])).indices.tolist():
            if t == self.eos:
                if complete:
                    return t
                continue
            new = self.tok.decode(generated + [t]).lstrip().rstrip("\ufffd")
            if len(new) <= len(so_far):
                continue
            # Decoding appends: read only the new characters, from the prefix's states.
            start, chars = (states, new[len(so_far) :]) if new.startswith(so_far) else ({("copy", 0)}, new)
            if advance(text, start, chars, self.max_span):
                return t
        return self.eos

    def __call__(self, input_ids: torch.LongTensor, scores: torch.FloatTensor) -> torch.FloatTensor:
        mask = torch.full_like(scores, float("-inf"))
        for row in range(scores.shape[0]):
            mask[row, self._allowed(row, input_ids[row, self.prompt_len :].tolist(), scores[row])] = 0.0
        return scores + mask


def decode(model: Any, tok: Any, rows: list[dict], args: argparse.Namespace, constrained: bool) -> list[str]:
    """Greedy outputs in row order, batched as plad's generation encodes prompts (left padding, the
    chat template when the tokenizer has one)."""
    eos = model.generation_config.eos_token_id
    eos = eos[0] if isinstance(eos, list) else eos
    outputs = []
    for start in range(0, len(rows), args.batch_size):
        batch = rows[start : start + args.batch_size]
        enc = [{"input_ids": encode_prompt(tok, r["prompt"], False, 128), "labels": []} for r in batch]
        padded = pad_batch(enc, tok.pad_token_id, False, padding_side="left")
        prompt_len = padded["input_ids"].shape[1]
        proc = CopyOrMask(tok, [r["text"] for r in batch], prompt_len, eos, args.top_k, args.max_span)
        with torch.inference_mode():
            out = model.generate(
                input_ids=padded["input_ids"],
                attention_mask=padded["attention_mask"],
                max_new_tokens=args.max_new_tokens,
                do_sample=False,
                logits_processor=LogitsProcessorList([proc] if constrained else []),
                pad_token_id=tok.pad_token_id,
                eos_token_id=eos,
            )
        for ids in out[:, prompt_len:].tolist():
            outputs.append(tok.decode(ids[: ids.index(eos)] if eos in ids else ids, skip_special_tokens=True).strip())
        print(f"{'constrained' if constrained else 'free'}: {len(outputs)}/{len(rows)}", file=sys.stderr, flush=True)
    return outputs


def completeness(rows: list[dict], outputs: list[str], max_span: int) -> dict[str, float]:
    """How many outputs are not whole copy-or-mask outputs of their input, and the keep rate of
    those that are (their lost words were all masked)."""
    whole = [accepts(r["text"], o, max_span) for r, o in zip(rows, outputs)]
    kept = [k for r, o, w in zip(rows, outputs, whole) if w and (k := keep_rate(o, r["reference"])) is not None]
    return {"incomplete": len(rows) - sum(whole), "keep_rate_whole": round(sum(kept) / max(len(kept), 1), 4)}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--model", required=True, help="a saved model directory (e.g. a cached teacher)")
    p.add_argument("--max-span", type=int, default=48, help="longest masked span, characters")
    p.add_argument("--top-k", type=int, default=40)
    p.add_argument("--batch-size", type=int, default=8)
    p.add_argument("--max-new-tokens", type=int, default=64)  # configs/task/anonymization.yaml
    p.add_argument("--out", type=Path, help="write both modes' outputs here (JSON)")
    args = p.parse_args()
    task = AnonymizationTask()
    rows = task.dev_rows()
    model, tok = load_saved(args.model)
    model.eval()
    results, outputs = {}, {}
    for mode in ("free", "constrained"):
        t0 = time.perf_counter()
        outputs[mode] = decode(model, tok, rows, args, mode == "constrained")
        m = task.metrics(outputs[mode], rows)
        results[mode] = {
            **{k: round(m[k], 4) for k in ("quality", "leak_rate", "keep_rate", "exact_match", "placeholder_f1")},
            "degenerate": round(degenerate_share(outputs[mode]), 4),
            **completeness(rows, outputs[mode], args.max_span),
            "seconds": round(time.perf_counter() - t0, 1),
        }
        print(json.dumps({"mode": mode, "rows": len(rows), **results[mode]}))
    for k in ("quality", "leak_rate", "keep_rate"):
        print(f"constrained_minus_free_{k} {results['constrained'][k] - results['free'][k]:+.4f}")
    if args.out:
        args.out.write_text(
            json.dumps({"args": vars(args) | {"out": str(args.out)}, "results": results, "outputs": outputs}, indent=1)
        )


if __name__ == "__main__":
    main()
