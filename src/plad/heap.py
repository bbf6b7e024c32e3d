"""Keep freed heap memory inside the process (glibc) instead of handing it back to the OS each step.

Why: a CPU training step frees and allocates the same activation buffers again and again. With
glibc's defaults the freed top of the heap goes back to the OS, and the next step faults the pages
in again (the kernel zeroes each one). On the default experiment's distillation stage that was
26.7 million page faults and 55 s of system time in 104 s. ``M_TOP_PAD`` is the setting that
removes it: glibc then grows the heap in steps of ``TOP_PAD_BYTES`` and, when it trims, keeps that
much free memory mapped. Measured with ``python scripts/bench_heap.py`` (a training step of the
default student, side by side); raising ``M_TRIM_THRESHOLD`` alone made steps slower, because
setting it also freezes glibc's adaptive mmap threshold.

The cost is resident memory: up to ``TOP_PAD_BYTES`` of freed heap stays mapped per arena. Only the
allocator's bookkeeping changes; no number a run computes does (metrics of the default were
bit-identical with and without it).
"""

from __future__ import annotations

import ctypes
import sys

M_TOP_PAD = -2  # glibc <malloc.h>
TOP_PAD_BYTES = 1 << 30


def keep_freed_memory() -> bool:
    """Apply ``M_TOP_PAD`` to this process; True when the C library took it (glibc on Linux), False
    elsewhere (macOS, musl), where nothing changes."""
    if not sys.platform.startswith("linux"):
        return False
    try:
        mallopt = ctypes.CDLL(None).mallopt
    except (OSError, AttributeError):  # not glibc
        return False
    mallopt.argtypes, mallopt.restype = [ctypes.c_int, ctypes.c_int], ctypes.c_int
    return mallopt(M_TOP_PAD, TOP_PAD_BYTES) == 1
