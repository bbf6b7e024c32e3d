"""The fingerprint cache: stable keys, invalidation on any input change, atomic entries whose
COMPLETE manifest is verified, and writers racing on one entry (threads of control in one process
and real processes)."""

import json
import logging
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest
from helpers import HANG_S
from omegaconf import OmegaConf

import plad.cache as cache
from plad.cache import MARKER, atomic_dir, entry_dir, file_hash, fingerprint, is_complete, verify
from plad.locks import locked

SRC = str(Path(__file__).resolve().parents[1] / "src")


def warnings_of(caplog) -> list[str]:
    return [r.getMessage() for r in caplog.records if r.levelno >= logging.WARNING]


def leftovers(root: Path) -> list[str]:
    """Temp copies, trash and lock files: none may survive a finished write."""
    return sorted(p.name for p in root.rglob("*") if any(t in p.name for t in (".tmp", ".trash-", ".lock")))


def make_entry(final: Path, payload: bytes = b"x" * 4096) -> Path:
    with atomic_dir(final) as tmp:
        (tmp / "shard").mkdir()
        (tmp / "shard" / "data.arrow").write_bytes(payload)
        (tmp / "meta.json").write_text('{"rows": 3}')
    return final


def test_fingerprint_is_stable_and_order_insensitive_for_dicts():
    a = fingerprint({"lr": 1e-3, "steps": 10}, "data-v1")
    b = fingerprint(OmegaConf.create({"steps": 10, "lr": 1e-3}), "data-v1")
    assert a == b


@pytest.mark.parametrize("change", [({"lr": 2e-3, "steps": 10}, "data-v1"), ({"lr": 1e-3, "steps": 10}, "data-v2")])
def test_fingerprint_changes_with_any_input(change):
    assert fingerprint({"lr": 1e-3, "steps": 10}, "data-v1") != fingerprint(*change)


def test_file_hash_follows_content(tmp_path: Path):
    f = tmp_path / "x.jsonl"
    f.write_text("a\n")
    h1 = file_hash(f)
    f.write_text("b\n")
    assert file_hash(f) != h1


def test_atomic_dir_publishes_only_on_success(tmp_path: Path):
    final = entry_dir(tmp_path, "models", "abc")
    with pytest.raises(RuntimeError):
        with atomic_dir(final) as tmp:
            (tmp / "weights").write_text("half")
            raise RuntimeError("killed")
    assert not final.exists() and not is_complete(final)
    assert list((tmp_path / "models").iterdir()) == []  # no temp dir left behind
    with atomic_dir(final) as tmp:
        (tmp / "weights").write_text("full")
    assert is_complete(final) and (final / "weights").read_text() == "full"
    marker = json.loads((final / MARKER).read_text())
    assert marker["files"] == {"weights": [4, cache.file_hash(final / "weights", length=64)]}
    assert list((tmp_path / "models").iterdir()) == [final]


def _flip(f: Path) -> None:
    data = bytearray(f.read_bytes())
    data[len(data) // 2] ^= 0x01
    f.write_bytes(bytes(data))


DAMAGES = [  # (what is done to a whole entry, what the warning must say)
    (lambda e: _flip(e / "shard" / "data.arrow"), "shard/data.arrow does not match its checksum"),
    (lambda e: (e / "shard" / "data.arrow").write_bytes(b"x" * 100), "shard/data.arrow has 100 bytes"),
    (lambda e: (e / "meta.json").unlink(), "meta.json is missing"),
    (lambda e: (e / MARKER).write_text(""), "empty COMPLETE marker"),
    (lambda e: (e / MARKER).write_text('{"fingerprint": "fp"}'), "no readable manifest"),
    (lambda e: (e / MARKER).write_text((e / MARKER).read_text()[:20]), "no readable manifest"),
    (lambda e: (e / MARKER).unlink(), "no COMPLETE marker"),
]


@pytest.mark.parametrize(
    "damage,says",
    DAMAGES,
    ids=["bit flip", "truncated", "file missing", "empty marker", "marker without manifest", "cut marker", "no marker"],
)
def test_damaged_entry_is_reported_once_discarded_and_rebuilt(tmp_path: Path, caplog, damage, says):
    final = make_entry(tmp_path / "data" / "fp")
    assert is_complete(final)
    damage(final)
    with caplog.at_level(logging.WARNING, logger="plad"):
        assert not is_complete(final)
        assert not is_complete(final)  # already discarded: nothing more to say
    (line,) = warnings_of(caplog)
    assert str(final) in line and says in line and "\n" not in line
    assert not final.exists() and leftovers(tmp_path) == []
    make_entry(final)
    assert is_complete(final) and verify(final) is None


def test_repeat_checks_hash_once_until_a_file_changes(tmp_path: Path, monkeypatch):
    final = make_entry(tmp_path / "models" / "fp")
    hashed: list[str] = []
    real = cache.file_hash
    monkeypatch.setattr(cache, "file_hash", lambda p, length=16: hashed.append(Path(p).name) or real(p, length))
    assert is_complete(final) and is_complete(final)
    assert sorted(hashed) == ["data.arrow", "meta.json"]  # the second check only stats the files
    arrow = final / "shard" / "data.arrow"
    before = arrow.stat()
    _flip(arrow)  # same size; its mtime set one second on, whatever the file system's timestamp resolution
    os.utime(arrow, ns=(before.st_atime_ns, before.st_mtime_ns + 1_000_000_000))
    assert not is_complete(final)


def test_files_added_after_publishing_are_not_part_of_the_entry(tmp_path: Path):
    final = make_entry(tmp_path / "pairs" / "fp")
    make_entry(final / "tokenized" / "abc")  # a nested entry written later (the tokenized pair cache)
    (final / "cache-123.arrow").write_bytes(b"library cache file")
    assert is_complete(final) and is_complete(final / "tokenized" / "abc")


def test_losing_writer_discards_its_copy_and_the_complete_entry_stays(tmp_path: Path, caplog):
    final = tmp_path / "models" / "fp"
    with caplog.at_level(logging.WARNING, logger="plad"):
        with atomic_dir(final) as slow:
            (slow / "w").write_text("slow writer")
            with atomic_dir(final) as fast:
                (fast / "w").write_text("fast writer")
            inode = final.stat().st_ino
        assert not slow.exists()
    assert (final / "w").read_text() == "fast writer" and final.stat().st_ino == inode
    assert is_complete(final) and warnings_of(caplog) == [] and leftovers(tmp_path) == []


def test_writer_replaces_a_damaged_entry_with_one_warning(tmp_path: Path, caplog):
    final = make_entry(tmp_path / "pairs" / "fp")
    (final / "meta.json").write_text("garbled")
    with caplog.at_level(logging.WARNING, logger="plad"):
        make_entry(final, payload=b"new")
    assert len(warnings_of(caplog)) == 1 and (final / "shard" / "data.arrow").read_bytes() == b"new"
    assert is_complete(final) and leftovers(tmp_path) == []


WRITER = """
import os, sys, time
from pathlib import Path
sys.path.insert(0, sys.argv[1])
from plad.cache import atomic_dir, is_complete
root, me, n = Path(sys.argv[2]), sys.argv[3], int(sys.argv[4])
final = root / "entry"
while not (root / "go").exists():
    time.sleep(0.001)
with atomic_dir(final) as tmp:
    (tmp / "who").write_text(me)
    (tmp / "big").write_bytes(os.urandom(1 << 20))
    (root / f"ready-{me}").touch()
    while len(list(root.glob("ready-*"))) < n:  # every writer has a full temp copy: all race to publish
        time.sleep(0.001)
assert is_complete(final)
print((final / "who").read_text())
"""


def test_racing_processes_all_use_the_one_published_entry(tmp_path: Path):
    n = 4
    procs = [
        subprocess.Popen(
            [sys.executable, "-c", WRITER, SRC, str(tmp_path), str(i), str(n)],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        for i in range(n)
    ]
    (tmp_path / "go").touch()
    outs = []
    for p in procs:
        out, err = p.communicate(timeout=HANG_S)
        assert p.returncode == 0, err[-2000:]
        outs.append(out.strip())
    final = tmp_path / "entry"
    assert len(set(outs)) == 1 and outs[0] == (final / "who").read_text()  # everyone reads the winner's
    assert verify(final) is None and leftovers(tmp_path) == []
    assert sorted(p.name for p in tmp_path.iterdir()) == ["entry", "go", *[f"ready-{i}" for i in range(n)]]


LOCKER = """
import os, sys
sys.path.insert(0, sys.argv[1])
from plad.locks import locked
print("trying", flush=True)
with locked(sys.argv[2]):
    print("got it after the release" if os.path.exists(sys.argv[3]) else "got it while held", flush=True)
"""


def _blocked_on_a_lock(pid: int) -> bool:
    """Whether ``pid`` waits for a file lock (Linux's /proc/locks marks waiters with '->')."""
    return any("->" in line and f" {pid} " in line for line in Path("/proc/locks").read_text().splitlines())


@pytest.mark.skipif(not Path("/proc/locks").exists(), reason="needs Linux's /proc/locks to see a waiting process")
def test_lock_is_exclusive_across_processes_reentrant_within_one(tmp_path: Path):
    """The other process is seen blocked on the lock (in /proc/locks) while this one holds it, and
    gets it only after the release: it finds the file written just before the release."""
    target, released = tmp_path / "pairs" / "fp", tmp_path / "released"
    with locked(target):
        with locked(target):  # the same process may take it again (the pair builder publishes under it)
            pass
        assert (tmp_path / "pairs" / ".fp.lock").exists()
        proc = subprocess.Popen(
            [sys.executable, "-c", LOCKER, SRC, str(target), str(released)], stdout=subprocess.PIPE, text=True
        )
        assert proc.stdout.readline().strip() == "trying"
        while not _blocked_on_a_lock(proc.pid):
            assert proc.poll() is None, "the other process ended without waiting for the lock"
            time.sleep(0.01)
        released.write_text("")
    out, _ = proc.communicate(timeout=HANG_S)
    assert proc.returncode == 0 and out.strip() == "got it after the release"
    assert not (tmp_path / "pairs" / ".fp.lock").exists()  # exists only while held


def test_stale_or_damaged_partial_shards_are_discarded(tmp_path: Path, caplog):
    from datasets import Dataset

    from plad.pairs import store

    entry, other = tmp_path / "pairs" / "mine", tmp_path / "pairs" / "theirs"
    table = {"outputs": Dataset.from_dict({"texts": [["a"], ["b"]]})}
    store.write_shard(other, "teacher", 0, table, {})
    store.partial_dir(other).rename(store.partial_dir(entry))  # shards of another config under our name
    with caplog.at_level(logging.WARNING, logger="plad"):
        assert not store.shard_done(entry, "teacher", 0)
        assert not store.shard_done(entry, "teacher", 1)
    (line,) = warnings_of(caplog)
    assert "belongs to entry theirs" in line and not store.partial_dir(entry).exists()

    caplog.clear()
    for k in (0, 1):
        store.write_shard(entry, "teacher", k, table, {})
    arrow = next((store.shard_dir(entry, "teacher", 1) / "outputs").glob("*.arrow"))
    _flip(arrow)
    with caplog.at_level(logging.WARNING, logger="plad"):
        assert store.shard_done(entry, "teacher", 0) and not store.shard_done(entry, "teacher", 1)
    (line,) = warnings_of(caplog)
    assert "00001" in line and "does not match its checksum" in line
    assert store.read_shard(entry, "teacher", 0)[0]["outputs"]["texts"] == [["a"], ["b"]]
    assert leftovers(tmp_path) == []


def test_sweep_removes_what_killed_runs_left_and_never_work_in_progress(tmp_path: Path):
    """Temp dirs are owned by a lock while they are written; a SIGKILL frees it. Trash dirs belong to
    the entry being discarded, under the entry's lock."""
    from plad.cache import sweep

    models = tmp_path / "models"
    done = make_entry(models / "llama-teacher-fp")
    dead_tmp = models / ".llama-student-fp.tmp-dead"
    dead_tmp.mkdir()
    (dead_tmp / "model.safetensors").write_bytes(b"half a model")
    dead_trash = models / ".llama-student-old.trash-0001"
    dead_trash.mkdir()
    dead_shard = tmp_path / "pairs" / "fp.partial" / "student" / ".00001.tmp-dead"
    dead_shard.mkdir(parents=True)
    busy_trash = models / ".llama-busy.trash-0002"
    busy_trash.mkdir()
    with atomic_dir(models / "llama-student-live") as live, locked(models / "llama-busy"):
        (live / "model.safetensors").write_bytes(b"being written")
        removed = sweep(tmp_path)
        assert sorted(removed) == sorted([dead_tmp, dead_trash, dead_shard])
        assert live.is_dir() and busy_trash.is_dir()  # held: in progress
    assert is_complete(done) and is_complete(models / "llama-student-live")
    assert sweep(tmp_path) == [busy_trash]  # its discarder is gone now
    assert sorted(p.name for p in models.iterdir()) == ["llama-student-live", "llama-teacher-fp"]


def test_content_key_follows_what_files_hold(tmp_path: Path):
    from plad.cache import MIB, content_key

    big = tmp_path / "model" / "weights.bin"
    big.parent.mkdir()
    big.write_bytes(b"a" * (3 * MIB))
    first = content_key(big.parent)
    assert content_key(big.parent) == first
    data = bytearray(big.read_bytes())
    data[-10] ^= 1  # the last MiB changes, the size does not
    st = big.stat()
    big.write_bytes(bytes(data))
    os.utime(big, ns=(st.st_atime_ns, st.st_mtime_ns))  # even with its old mtime ...
    cache._content.clear()  # ... in the next process (within one, the key is memoized on the files' stat)
    assert content_key(big.parent) != first
    (big.parent / "config.json").write_text("{}")  # a new file in the directory
    assert len({first, content_key(big.parent)}) == 2
