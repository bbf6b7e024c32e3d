"""Inter-process file locks for the cache (``plad.cache``): per-entry build locks and owned temp dirs.

Why a lock file that exists only while held: ``plad.cache.sweep`` tells abandoned work (a SIGKILLed
writer's temp dir) from work in progress by whether its lock can be taken, so a free lock file
means "nobody is here", and a held one is never removed by anyone but its holder.
"""

from __future__ import annotations

import fcntl
import os
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

_held: dict[str, list[int]] = {}  # lock file -> [fd, depth] for the locks this process holds


@contextmanager
def locked(path: str | os.PathLike) -> Iterator[None]:
    """Exclusive inter-process lock on a cache path, reentrant within a process.

    The lock file ``.<name>.lock`` beside ``path`` exists only while held: the holder unlinks it
    before unlocking, and a waiter that then gets the lock on the unlinked file retries.
    """
    path = Path(path)
    lock = path.with_name(f".{path.name}.lock")
    key = os.path.abspath(lock)
    if key in _held:
        _held[key][1] += 1
        try:
            yield
        finally:
            _held[key][1] -= 1
        return
    lock.parent.mkdir(parents=True, exist_ok=True)
    while True:
        fd = os.open(lock, os.O_RDWR | os.O_CREAT, 0o644)
        fcntl.flock(fd, fcntl.LOCK_EX)
        try:
            if os.fstat(fd).st_ino == os.stat(lock).st_ino:
                break
        except FileNotFoundError:
            pass
        os.close(fd)
    _held[key] = [fd, 1]
    try:
        yield
    finally:
        del _held[key]
        release(lock, fd)


def release(lock: Path, fd: int) -> None:
    """Remove a held lock file, then drop the lock (in this order: a waiter that wins the lock on
    the old inode sees it unlinked and retries on a fresh file)."""
    try:
        os.unlink(lock)
    except FileNotFoundError:
        pass
    os.close(fd)


@contextmanager
def owned(lock: Path) -> Iterator[None]:
    """Hold an exclusive lock on ``lock`` (created) while the block runs; unlinked after. A process
    killed inside the block leaves the file unlocked: that is how ``sweep`` tells abandoned work."""
    fd = os.open(lock, os.O_RDWR | os.O_CREAT, 0o644)
    fcntl.flock(fd, fcntl.LOCK_EX)
    try:
        yield
    finally:
        release(lock, fd)


def unheld(lock: Path) -> int | None:
    """An fd holding ``lock`` when no other process holds it, else None (it is in use)."""
    fd = os.open(lock, os.O_RDWR | os.O_CREAT, 0o644)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        return fd
    except BlockingIOError:
        os.close(fd)
        return None
