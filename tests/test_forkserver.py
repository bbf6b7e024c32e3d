"""The suite's fork server (tests/helpers/forkserver.py): a script forked from it behaves as ``python script``
run as a plain process (argv, working directory, environment, ``__main__``, ``sys.path[0]``, stdout
and stderr apart, exit status), runs in a session of its own, and is what the suite's ``train.py``
commands get; a command it cannot reproduce (another hash seed) starts a plain process."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest
from helpers import HANG_S, forkserver

PROBE = """
import os, sys
print("argv", sys.argv, "cwd", os.getcwd(), "test", os.environ.get("PYTEST_CURRENT_TEST"))
print("main", __name__, "path0", sys.path[0], "session", os.getsid(0) == os.getpid(), flush=True)
print("to stderr", file=sys.stderr)
if sys.argv[1] == "raise":
    raise RuntimeError("boom")
if sys.argv[1] == "sleep":
    import time
    time.sleep(600)
sys.exit(None if sys.argv[1] == "none" else int(sys.argv[1]) if sys.argv[1].isdigit() else sys.argv[1])
"""


def _probe(tmp_path: Path, arg: str) -> list[str]:
    script = tmp_path / "probe.py"
    script.write_text(PROBE)
    return [sys.executable, str(script), arg]


@pytest.mark.parametrize("arg", ["none", "0", "3", "a message", "raise"])
def test_a_forked_script_behaves_as_a_plain_process(tmp_path: Path, arg: str):
    cmd = _probe(tmp_path, arg)
    proc = forkserver.start(
        cmd, cwd=tmp_path, env=forkserver.env(), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
    )
    assert isinstance(proc, forkserver.ForkedProcess)  # the server is up and the suite's env is its env
    out, err = proc.communicate(timeout=HANG_S)
    plain = subprocess.run(
        cmd, cwd=tmp_path, env=forkserver.env(), capture_output=True, text=True, timeout=HANG_S, start_new_session=True
    )
    assert (proc.returncode, out) == (plain.returncode, plain.stdout)
    assert "session True" in out and f"path0 {tmp_path}" in out and "main __main__" in out
    if arg == "raise":  # the same error; the fork's traceback also shows runpy's frames
        assert err.splitlines()[-1] == plain.stderr.splitlines()[-1] == "RuntimeError: boom"
    else:
        assert err == plain.stderr
    assert proc.cpu_seconds > 0


def test_a_forked_process_group_dies_by_sigkill(tmp_path: Path):
    proc = forkserver.start(
        _probe(tmp_path, "sleep"), cwd=tmp_path, env=forkserver.env(), stdout=subprocess.PIPE, stderr=subprocess.DEVNULL
    )
    assert isinstance(proc, forkserver.ForkedProcess)
    assert proc.stdout.readline().startswith(b"argv") and proc.poll() is None
    os.killpg(proc.pid, signal.SIGKILL)
    assert proc.wait(timeout=HANG_S) == -signal.SIGKILL


def test_what_a_fork_cannot_reproduce_starts_a_plain_process(tmp_path: Path):
    proc = forkserver.start(
        _probe(tmp_path, "0"), cwd=tmp_path, env=forkserver.env(hash_seed=7), stdout=subprocess.DEVNULL
    )
    assert isinstance(proc, subprocess.Popen) and proc.wait(timeout=HANG_S) == 0
