"""Faults beyond the four kill points of test_kill.py, each with real ``train.py`` processes: a
prompt budget past the model's positions, kill -9 while an SFT model is being written to the cache
and while evaluation writes its outputs, a pair shard that verifies but holds other rows, teacher
files that are not UTF-8 or hold a NaN, an empty unlabeled split, and a full disk while a cache
entry is written. Nothing complete is lost, nothing half-written is trusted, and the rerun
finishes (or the run stops in one line, before any training, where the input is at fault)."""

from __future__ import annotations

import json
import shutil
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest
from train_process import Job, complete_markers, results, run, weights_digest

FAST = ("debug=fast",)
# A student large enough that writing its weights takes a while (a kill must land inside the write).
BIG_STUDENT = (
    "model.student.config.hidden_size=512",
    "model.student.config.intermediate_size=2048",
    "model.student.config.num_hidden_layers=6",
    "model.student.config.num_attention_heads=8",
    "model.student.config.num_key_value_heads=8",
    "++model.student.pretrain.max_steps=1",
    "model.student.sft.max_steps=1",
)


def _one_line_error(job: Job, field: str) -> None:
    """The run said one ``error: <field>...`` line and trained nothing."""
    lines = [line for line in job.text().strip().splitlines() if line.startswith("error: ")]
    assert len(lines) == 1 and lines[0].startswith(f"error: {field}"), job.text()[-2000:]
    assert not list(job.cache.glob("models/*")), "an SFT model was trained before the input was refused"


def _leftovers(cache: Path) -> list[str]:
    """Temp and trash dirs under the cache (a killed writer's; a finished run must leave none)."""
    return sorted(
        str(p.relative_to(cache))
        for p in cache.rglob(".*")
        if p.is_dir() and (".tmp-" in p.name or ".trash-" in p.name)
    )


def test_prompt_and_completion_past_the_positions_stop_before_any_training(tmp_path):
    """llama's 512 positions: 480 + 64 tokens used to run past its trained range (gpt_neo crashed mid-SFT)."""
    job = Job(tmp_path, overrides=(*FAST, "task.max_prompt_tokens=480", "task.max_new_tokens=64"))
    outcome = run(job)
    assert outcome.returncode == 2
    _one_line_error(job, "task.max_prompt_tokens: ")


def test_a_kill_while_the_sft_model_is_written_leaves_nothing_trusted_and_the_rerun_cleans_up(tmp_path):
    job = Job(tmp_path, overrides=(*FAST, *BIG_STUDENT, "stages=[sft]"))
    writing = lambda j: any(p.is_dir() and any(p.iterdir()) for p in (j.cache / "models").glob(".*-student-*.tmp-*"))
    killed = run(job, kill_when=writing)
    assert killed.killed, job.text()[-2000:]
    assert not list((job.cache / "models").glob("*-student-*/COMPLETE"))  # no entry
    assert _leftovers(job.cache)  # the half-written copy the kill left
    before = complete_markers(job.cache)
    rerun = run(job)
    assert rerun.returncode == 0, job.text()[-3000:]
    assert "left by a killed run" in job.text()
    assert _leftovers(job.cache) == []
    after = complete_markers(job.cache)
    assert all(after[k] == v for k, v in before.items())  # the teacher and data entries were kept
    assert list((job.cache / "models").glob("*-student-*/COMPLETE"))


def test_a_kill_while_evaluation_writes_leaves_no_half_output_and_the_rerun_matches(tmp_path):
    """Killed between samples.jsonl and metrics.json: what is there is whole; the rerun's outputs
    equal those of an uninterrupted run."""

    def run_reference() -> Job:
        ref = Job(tmp_path / "reference")
        assert run(ref).returncode == 0, ref.text()[-3000:]
        return ref

    with ThreadPoolExecutor(2) as pool:
        reference = pool.submit(run_reference)
        job = Job(tmp_path / "killed")
        between = lambda j: (j.run_dir / "samples.jsonl").exists() and not (j.run_dir / "metrics.json").exists()
        killed = pool.submit(run, job, between).result()
    assert killed.killed, job.text()[-2000:]
    lines = (job.run_dir / "samples.jsonl").read_text().splitlines()
    assert len(lines) == 16 and all(json.loads(line)["outputs"] for line in lines)  # whole, not cut
    assert not (job.run_dir / "metrics.json").exists() and not (job.run_dir / "run_summary.json").exists()
    assert run(job).returncode == 0, job.text()[-3000:]
    ref = reference.result()
    assert results(job.run_dir) == results(ref.run_dir)
    assert weights_digest(job.run_dir) == weights_digest(ref.run_dir)


def test_a_pair_shard_that_verifies_but_holds_other_rows_is_built_again(tmp_path):
    """Student shard 0 gets shard 1's rows (a copy whose manifest matches: it verifies): the rerun
    finds them to be other prompts' samples, samples shard 0 again, and its pairs are those of an
    uninterrupted run."""
    from plad.cache import write_marker

    overrides = (*FAST, "stages=[sft,pairs]")
    reference, job = Job(tmp_path / "reference", overrides=overrides), Job(tmp_path / "damaged", overrides=overrides)
    with ThreadPoolExecutor(2) as pool:
        ref_outcome = pool.submit(run, reference)
        sampled = lambda j: next(j.cache.glob("pairs/*.partial/student/00001/COMPLETE"), None) is not None
        killed = pool.submit(run, job, sampled).result()
        assert ref_outcome.result().returncode == 0, reference.text()[-3000:]
    assert killed.killed, job.text()[-2000:]
    shards = next(job.cache.glob("pairs/*.partial/student"))
    shutil.rmtree(shards / "00000")
    shutil.copytree(shards / "00001", shards / "00000")
    (shards / "00000" / "COMPLETE").unlink()
    write_marker(shards / "00000")  # a manifest that matches: only the content says it is wrong
    assert run(job).returncode == 0, job.text()[-3000:]

    def pairs(j: Job) -> list:
        from datasets import load_from_disk

        return load_from_disk(str(next(j.cache.glob("pairs/*/pairwise")))).to_list()

    assert pairs(job) == pairs(reference)
    assert "student shard 0 does not hold the rows of its 16 prompts; building it again" in job.text()


@pytest.mark.parametrize(
    "content, named",
    [
        (b'{"id": "anon-unlabeled-00000", "output": "caf\xe9"}\n', "line 1: expected UTF-8 text"),
        (b'{"id": "anon-unlabeled-00000", "output": NaN}\n', "line 1: expected 'output' to be a string"),
    ],
)
def test_a_teacher_file_that_is_not_utf8_or_holds_a_nan_stops_in_one_line(tmp_path, content, named):
    path = tmp_path / "teacher.jsonl"
    path.write_bytes(content)
    job = Job(tmp_path, overrides=(*FAST, f"pairs.teacher_outputs={path}", "pairs.scorer=null"))
    assert run(job).returncode == 2
    _one_line_error(job, "pairs.teacher_outputs: ")
    assert named in job.text()


def test_an_empty_unlabeled_split_stops_in_one_line_before_any_training(tmp_path):
    """A source whose unlabeled split is a CSV with a header and no row."""
    train = tmp_path / "train.csv"
    train.write_text(
        "source_text,target_text\n"
        + "".join(f"Hi Ann {i}, call 555-01{i:02d},Hi [NAME] {i}, call [PHONE]\n" for i in range(80))
    )
    (tmp_path / "unlabeled.csv").write_text("source_text,target_text\n")
    job = Job(tmp_path, overrides=(*FAST, f"task.source={{train:{train},unlabeled:{tmp_path / 'unlabeled.csv'}}}"))
    assert run(job).returncode == 2
    _one_line_error(job, "task.")


DISK_FULL = """
import errno, os
import safetensors.torch as st

_save = st.save_file


def save_file(tensors, filename, metadata=None):  # the student's weights meet a full disk
    if "-student-" in str(filename) and not os.path.exists(os.environ["DISK_FULL_ONCE"]):
        open(os.environ["DISK_FULL_ONCE"], "w").close()
        with open(filename, "wb") as f:
            f.write(b"\\0" * 1000)  # what made it to the disk
        raise OSError(errno.ENOSPC, "No space left on device", str(filename))
    return _save(tensors, filename, metadata)


st.save_file = save_file
"""


def test_a_full_disk_while_a_cache_entry_is_written_loses_nothing_complete_and_the_rerun_finishes(tmp_path):
    """ENOSPC while the initial student's weights are written (injected in the process through a
    sitecustomize module): the run fails with the error, not an input error; no entry, temp dir or
    partial file remains; the teacher's entry is kept; the rerun finishes and reuses it."""
    hook = tmp_path / "hook"
    hook.mkdir()
    (hook / "sitecustomize.py").write_text(DISK_FULL)
    job = Job(
        tmp_path / "logs",
        overrides=(*FAST, "stages=[sft]"),
        env={"PYTHONPATH": str(hook), "DISK_FULL_ONCE": str(tmp_path / "full-once")},
    )
    failed = run(job)
    assert failed.returncode not in (0, 2) and "No space left on device" in job.text(), job.text()[-3000:]
    assert (tmp_path / "full-once").exists()  # the fault did fire
    assert not list((job.cache / "models").glob("*-student-*")) and _leftovers(job.cache) == []
    teacher = complete_markers(job.cache)
    assert any("-teacher-" in k for k in teacher)
    assert run(job).returncode == 0, job.text()[-3000:]
    assert all(complete_markers(job.cache)[k] == v for k, v in teacher.items())
    assert list((job.cache / "models").glob("*-student-*/COMPLETE"))
