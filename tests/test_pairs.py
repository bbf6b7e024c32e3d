"""Pair building: resumable shards, cache integrity, black-box teachers, filters, multi-process."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
from helpers import HANG_S
from helpers.numerics import assert_sums_close
from helpers.pairs import FakeTask, load_tiny, pairs_cfg, prompt_dataset, save_tiny, spy, train_tokenizer

import plad.backends.hf_sampling as generation
from plad.backends.base import GenerationOutput
from plad.models.encoding import encode_example, pad_batch
from plad.models.logprobs import sequence_logprobs
from plad.models.ref import ModelRef
from plad.pairs import store
from plad.pairs.build import obtain_pairs
from plad.pairs.quality import RewardModelScorer

N = 6  # prompts -> 3 shards of 2
TESTS = Path(__file__).resolve().parent


@pytest.fixture(scope="module")
def models(tmp_path_factory):
    root = tmp_path_factory.mktemp("models")
    teacher, student = save_tiny(root / "teacher", seed=1), save_tiny(root / "student", seed=2)
    return {"teacher": teacher, "student": student, "T": load_tiny(teacher), "S": load_tiny(student)}


@pytest.fixture
def calls(monkeypatch):
    recorded: list = []
    monkeypatch.setattr(generation, "generate", spy(generation.generate, recorded))
    return recorded


def run(models, root, *, prompts=None, load_teacher=None, seed=0, **cfg):
    return obtain_pairs(
        pairs_cfg(**cfg),
        prompts if prompts is not None else prompt_dataset(N),
        FakeTask(),
        ModelRef(None, "teacher", loader=load_teacher or (lambda: models["T"])),
        ModelRef(None, "student", loader=lambda: models["S"]),
        Path(root),
        64,
        6,
        seed,
    )


@pytest.fixture(scope="module")
def reference(models, tmp_path_factory):
    """An uninterrupted single-process run everything else must reproduce."""
    return run(models, tmp_path_factory.mktemp("ref")).pairwise.to_list()


def generated(calls, role):
    return [p for r, ps in calls if r == role for p in ps]


class Injected(RuntimeError):
    pass


def fail_after(monkeypatch, writes: int) -> None:
    """Fault injection: the run dies right after its ``writes``-th shard write."""
    done, write = [], store.write_shard

    def write_then_maybe_die(*args, **kwargs):
        write(*args, **kwargs)
        done.append(1)
        if len(done) >= writes:
            raise Injected(f"injected failure after {writes} shard writes")

    monkeypatch.setattr(store, "write_shard", write_then_maybe_die)


def test_fail_mid_run_resumes_from_finished_shards(models, reference, tmp_path, calls, monkeypatch):
    prompts = prompt_dataset(N)["prompt"]
    with monkeypatch.context() as m, pytest.raises(Injected):
        fail_after(m, 1)
        run(models, tmp_path)  # dies after teacher shard 0
    assert generated(calls, "teacher") == prompts[:2] and not generated(calls, "student")
    calls.clear()
    with monkeypatch.context() as m, pytest.raises(Injected):
        fail_after(m, 6)
        run(models, tmp_path)  # teacher shards 1, 2, student shards 0-2, then pair shard 0
    assert generated(calls, "teacher") == prompts[2:] and generated(calls, "student") == prompts
    calls.clear()
    ps = run(models, tmp_path, load_teacher=lambda: pytest.fail("teacher reloaded"))
    assert not calls  # every sample was kept: only pair shards 1, 2 were left
    assert ps.stats["resumed_shards"] == 1 and not store.partial_dir(ps.path).exists()
    assert ps.pairwise.to_list() == reference


def test_sigkill_then_resume(models, reference, tmp_path, calls):
    spec = {
        "cfg": {},
        "n": N,
        "teacher": str(models["teacher"]),
        "student": str(models["student"]),
        "root": str(tmp_path),
        "out": str(tmp_path / "out.json"),
        "sleep": 60.0,
    }
    code = f"import sys; sys.path.insert(0, {str(TESTS)!r}); import helpers.pairs as t; t.worker(sys.argv[1])"
    proc = subprocess.Popen([sys.executable, "-c", code, json.dumps(spec)], stderr=subprocess.DEVNULL)
    try:  # until the first student shard is complete; the worker stalls after it, so it cannot end first
        while not list(tmp_path.glob("pairs/*.partial/student/00000/COMPLETE")):
            assert proc.poll() is None, "worker ended before the first shard"
            time.sleep(0.05)
    finally:
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait()
    ps = run(models, tmp_path, load_teacher=lambda: pytest.fail("teacher reloaded"))
    assert generated(calls, "student") == prompt_dataset(N)["prompt"][2:]
    assert ps.pairwise.to_list() == reference


def test_two_processes_equal_one_process(models, reference, tmp_path):
    code = f"import sys; sys.path.insert(0, {str(TESTS)!r}); import helpers.pairs as t; t.worker(sys.argv[1])"
    procs = []
    for rank in (0, 1):
        spec = {
            "cfg": {},
            "n": N,
            "teacher": str(models["teacher"]),
            "student": str(models["student"]),
            "root": str(tmp_path),
            "out": str(tmp_path / f"out{rank}.json"),
        }
        env = {**os.environ, "RANK": str(rank), "WORLD_SIZE": "2", "LOCAL_RANK": str(rank)}
        procs.append(
            subprocess.Popen([sys.executable, "-c", code, json.dumps(spec)], env=env, stderr=subprocess.PIPE, text=True)
        )
    for p in procs:
        _, err = p.communicate(timeout=HANG_S)
        assert p.returncode == 0, err[-2000:]
    outs = [json.loads((tmp_path / f"out{r}.json").read_text()) for r in (0, 1)]
    prompts = prompt_dataset(N)["prompt"]
    for out, shards in zip(outs, ([0, 2], [1])):
        assert out["pairwise"] == reference
        mine = [p for k in shards for p in prompts[2 * k : 2 * k + 2]]
        assert [p for role, ps in out["calls"] if role == "student" for p in ps] == mine


@pytest.mark.parametrize("damage", ["garble", "delete"])
def test_damaged_entry_is_rebuilt_and_rebuild_flag_regenerates(models, reference, tmp_path, calls, damage):
    ps = run(models, tmp_path)
    arrow = next((ps.path / "pairwise").glob("*.arrow"))
    if damage == "delete":
        arrow.unlink()
    else:
        data = bytearray(arrow.read_bytes())
        data[len(data) // 2] ^= 0xFF
        arrow.write_bytes(bytes(data))
    with pytest.raises(store.CorruptEntry):
        store.load_entry(ps.path)
    calls.clear()
    again = run(models, tmp_path)
    assert generated(calls, "teacher") and again.path == ps.path and again.pairwise.to_list() == reference
    calls.clear()
    assert run(models, tmp_path).pairwise.to_list() == reference and not calls  # warm: nothing generated
    run(models, tmp_path, rebuild=True)
    assert len(generated(calls, "student")) == N


def test_cache_key_covers_results_but_not_batch_size(models, tmp_path, calls):
    base = run(models, tmp_path)
    calls.clear()
    assert run(models, tmp_path, batch_size=1).path == base.path and not calls
    assert run(models, tmp_path, seed=1).path != base.path
    assert run(models, tmp_path, n_student=2).path != base.path


def write_jsonl(path, rows):
    path.write_text("\n".join(json.dumps(r) for r in rows) + "\n")
    return str(path)


def test_black_box_teacher_file(models, tmp_path, calls):
    ds = prompt_dataset(4)
    rows = [
        {"prompt": ds[0]["prompt"], "output": "first answer"},
        {"id": "p1", "outputs": ["second a", "second b"]},
        {"id": "p2", "output": "third"},
        {"prompt": ds[3]["prompt"], "outputs": ["fourth"]},
        {"id": "p2", "output": "third bis"},
    ]
    path = write_jsonl(tmp_path / "teacher.jsonl", rows)
    never = lambda: pytest.fail("load_teacher called")  # noqa: E731
    ps = run(models, tmp_path, prompts=ds, load_teacher=never, teacher_outputs=path, n_student=1)
    assert not generated(calls, "teacher") and ps.stats["teacher_source"] == "file"
    chosen = {(r["id"], r["chosen"]) for r in ps.pairwise}
    assert chosen == {
        ("p0", "first answer"),
        ("p1", "second a"),
        ("p1", "second b"),
        ("p2", "third"),
        ("p2", "third bis"),
        ("p3", "fourth"),
    }
    assert ps.listwise is not None and [r["n_teacher"] for r in ps.listwise] == [1, 2, 2, 1]
    # the file's content, not its path, is in the cache key
    rows[0]["output"] = "changed"
    assert (
        run(
            models,
            tmp_path,
            prompts=ds,
            load_teacher=never,
            teacher_outputs=write_jsonl(tmp_path / "teacher.jsonl", rows),
        ).path
        != ps.path
    )


@pytest.mark.parametrize(
    "rows, message",
    [
        (
            [
                {"id": "p0", "output": "a"},
                {"id": "p1", "output": "b"},
                {"id": "zz", "output": "c"},
                {"prompt": "nope", "output": "d"},
            ],
            r"2 rows match no prompt \(first ids: zz, nope\)",
        ),
        (
            [{"id": "p0", "output": "a"}, {"id": "p1", "outputs": []}],
            r"1 prompts have no teacher output \(first ids: p1\)",
        ),
        ([{"id": "p0"}, {"id": "p1", "output": "b"}], r"line 1: expected an 'output' or 'outputs' field"),
    ],
)
def test_black_box_mismatch_stops_the_run(models, tmp_path, rows, message):
    path = write_jsonl(tmp_path / "t.jsonl", rows)
    with pytest.raises(ValueError, match=r"pairs\.teacher_outputs: " + message):
        run(
            models,
            tmp_path,
            prompts=prompt_dataset(2),
            teacher_outputs=path,
            load_teacher=lambda: pytest.fail("load_teacher called"),
        )


def scripted(monkeypatch, script):
    """Replace sampling by fixed outputs per (role, prompt): samples that ended with EOS, their ids
    the text's own."""

    def fake(model, tok, prompts, **kw):
        texts = [script[kw["desc"].split()[0]][p] for p in prompts]
        ids = [[tok(t, add_special_tokens=False)["input_ids"] for t in ts] for ts in texts]
        return GenerationOutput(
            texts, [[len(i) + 1 for i in ts] for ts in ids], 0.0, [[True] * len(ts) for ts in texts], ids
        )

    monkeypatch.setattr(generation, "generate", fake)


def alone_logp(model, tok, prompt, completion):
    batch = pad_batch([encode_example(tok, prompt, completion, False, 64, 6)], tok.pad_token_id, False)
    out = sequence_logprobs(model, **batch)
    return out.sum_logp.item(), out.n_tokens.item()


def test_filters_scores_and_drop_counts(models, tmp_path, monkeypatch):
    ds = prompt_dataset(6)
    p = ds["prompt"]
    script = {
        "teacher": {
            p[0]: ["good answer"],
            p[1]: [""],
            p[2]: ["same"],
            p[3]: ["good one"],
            p[4]: ["good a"],
            p[5]: ["ok"],
        },
        "student": {p[0]: ["bad"], p[1]: ["x"], p[2]: ["same"], p[3]: ["good too"], p[4]: ["  "], p[5]: ["good b"]},
    }
    scripted(monkeypatch, script)
    oracle = {"scorer": {"_target_": "plad.pairs.quality.TaskMetricScorer"}, "oracle_references": True, "n_student": 1}
    ps = run(models, tmp_path, prompts=ds, filter_by_score=True, **oracle)
    assert ps.pairwise.to_list() and len(ps.pairwise) == 1 and ps.listwise is None
    row = ps.pairwise[0]
    assert (row["chosen"], row["rejected"], row["chosen_score"], row["rejected_score"]) == ("good answer", "bad", 1, 0)
    st = ps.stats["pairwise"]
    assert st["kept"] == 1 and st["candidates"] == 6
    assert st["dropped"] == {
        "empty_chosen": 1,
        "empty_rejected": 1,
        "cut_chosen": 0,
        "cut_rejected": 0,
        "identical": 1,
        "filtered_by_score": 2,
    }
    assert ps.stats["teacher"]["empty"] == 1 and ps.stats["student"]["samples"] == 6
    model, tok = models["S"]
    for col, text in (("chosen", row["chosen"]), ("rejected", row["rejected"]), ("reference", row["reference"])):
        assert_sums_close(row[f"ref_{col}_logp"], *alone_logp(model, tok, row["prompt"], text))
    unfiltered = run(models, tmp_path, prompts=ds, **oracle)
    assert unfiltered.stats["pairwise"]["kept"] == 3 and unfiltered.path != ps.path


def test_listwise_rows_dedupe_and_count(models, tmp_path, monkeypatch):
    ds = prompt_dataset(3)
    p = ds["prompt"]
    scripted(
        monkeypatch,
        {
            "teacher": {p[0]: ["A", "A"], p[1]: ["", "C"], p[2]: ["E", "F"]},
            "student": {p[0]: ["B", ""], p[1]: ["C", "D"], p[2]: ["E", "F"]},
        },
    )
    ps = run(models, tmp_path, prompts=ds, n_teacher=2, n_student=2)
    assert [(r["id"], r["chosen"], r["rejected"]) for r in ps.pairwise] == [
        ("p0", "A", "B"),
        ("p0", "A", "B"),
        ("p1", "C", "D"),
        ("p2", "E", "F"),
        ("p2", "F", "E"),
    ]
    assert ps.stats["pairwise"]["dropped"] == {
        "empty_chosen": 2,
        "empty_rejected": 2,
        "cut_chosen": 0,
        "cut_rejected": 0,
        "identical": 3,
        "filtered_by_score": 0,
    }
    assert [(r["id"], r["candidates"], r["n_teacher"]) for r in ps.listwise] == [
        ("p0", ["A", "B"], 1),
        ("p1", ["C", "D"], 1),
    ]
    assert ps.stats["listwise"] == {
        "rows": 2,
        "dropped_prompts": 1,
        "dropped_candidates": {"empty": 2, "cut": 0, "duplicate": 4},
    }
    model, tok = models["S"]
    r = ps.listwise[1]
    expected, n_tokens = zip(*(alone_logp(model, tok, r["prompt"], c) for c in r["candidates"]))
    assert_sums_close(r["ref_candidates_logp"], expected, n_tokens)


@pytest.mark.parametrize("num_labels", [1, 2])
def test_reward_model_scores_match_unbatched(tmp_path, num_labels):
    from transformers import LlamaConfig, LlamaForSequenceClassification

    tok = train_tokenizer()
    torch.manual_seed(0)
    cfg = LlamaConfig(
        vocab_size=len(tok),
        hidden_size=32,
        intermediate_size=64,
        num_hidden_layers=1,
        num_attention_heads=4,
        num_key_value_heads=2,
        num_labels=num_labels,
        pad_token_id=tok.pad_token_id,
    )
    rm = LlamaForSequenceClassification(cfg).eval()
    rm.save_pretrained(tmp_path / "rm")
    tok.save_pretrained(tmp_path / "rm")
    examples = [{"prompt": p} for p in prompt_dataset(5)["prompt"]]
    outputs = ["short", "a much longer answer than the others", "mid answer", "x", "good"]
    scores = RewardModelScorer(str(tmp_path / "rm"), batch_size=2)(outputs, examples, None)
    for s, o, ex in zip(scores, outputs, examples):
        enc = tok(ex["prompt"], o, return_tensors="pt")
        assert s == pytest.approx(rm(**enc).logits[0, num_labels - 1].item(), abs=1e-4)


def test_rebuild_builds_beside_the_entry_and_swaps_it_out_without_deleting_what_a_reader_holds(
    models, reference, tmp_path, calls
):
    """A reader that loaded the pair set keeps reading it while another run rebuilds it: the new entry
    is built beside the old one, which is moved aside (not deleted) and swept by a later run."""
    from plad.cache import is_complete, sweep

    old = run(models, tmp_path)
    held = old.pairwise  # a reader's memory-mapped table
    seen_during_build = []
    real_write_shard = store.write_shard

    def write_shard(entry, kind, k, tables, meta):  # the old entry stays in place while shards are built
        seen_during_build.append(is_complete(entry))
        real_write_shard(entry, kind, k, tables, meta)

    with pytest.MonkeyPatch.context() as m:
        m.setattr(store, "write_shard", write_shard)
        new = run(models, tmp_path, rebuild=True)
    assert seen_during_build and all(seen_during_build)
    assert new.path == old.path and is_complete(new.path) and new.pairwise.to_list() == reference
    assert held.to_list() == reference  # still readable
    trash = list(old.path.parent.glob(f".{old.path.name}.trash-*"))
    assert len(trash) == 1 and sweep(tmp_path) == trash
