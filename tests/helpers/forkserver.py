"""A fork server for the tests' ``python train.py ...`` processes.

A ``train.py`` process spends ~12 s at one thread importing its stack (torch, transformers,
Lightning, datasets) before any work, and the suite starts a few dozen of them: about a quarter of
its CPU time. One server per pytest worker imports that stack once; each command is then a fork of
it that runs the script as ``python <script> <args>`` would: same argv, environment, working
directory, standard streams and exit status, in a session of its own (so tests can watch it,
SIGKILL its process group and read its CPU time as before).

A fork cannot change what an interpreter fixed at start-up (hash seed, thread pools, ``sys.path``,
buffering, flags that libraries read at import). So only ``[sys.executable, <script>.py, ...]`` with
the server's environment (``env()``; ``PYTEST_CURRENT_TEST`` aside) is forked; any other command, or any other
environment (``PYTHONHASHSEED``, ``PYTHONPATH``, ...), starts a plain ``subprocess.Popen``. The
server forks only while it has one thread, so no lock or thread pool is copied half-held.

Server: ``python forkserver.py <socket path>``. Client: ``start`` (Popen-like) and ``run``
(``subprocess.run``-like).
"""

from __future__ import annotations

import atexit
import json
import os
import selectors
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

VOLATILE = ("PYTEST_CURRENT_TEST",)  # may differ between the server and a forked command
# pyarrow's jemalloc purges in a background thread; jemalloc's own fork handlers make forking safe.
FORK_SAFE_THREADS = ("jemalloc_bg_thd",)
PIPE, STDOUT, DEVNULL = subprocess.PIPE, subprocess.STDOUT, subprocess.DEVNULL


# ----------------------------------------------------------------------------- server


def _preload() -> None:
    """What a ``train.py`` run imports, without running anything (no thread, no torch op)."""
    import pkgutil

    import datasets  # noqa: F401
    import lightning.pytorch  # noqa: F401
    import torch  # noqa: F401
    import torchmetrics.text  # noqa: F401
    from transformers import (  # noqa: F401
        AutoTokenizer,
        GPTNeoForCausalLM,
        LlamaForCausalLM,
        PreTrainedTokenizerFast,
        T5ForConditionalGeneration,
    )

    import plad

    for module in pkgutil.walk_packages(plad.__path__, "plad."):
        try:
            __import__(module.name)
        except ImportError:  # optional extras (vllm, deepspeed) stay unloaded, as in a plain run
            pass


def _exit_code(exc: SystemExit) -> int:
    if exc.code is None or isinstance(exc.code, int):
        return exc.code or 0
    print(exc.code, file=sys.stderr)
    return 1


def _child(request: dict[str, Any], fds: list[int]) -> None:
    """In the fork: become ``python <script> <args>`` in a new session, run it, exit with its status."""
    os.setsid()
    null = os.open(os.devnull, os.O_RDONLY)
    for target, fd in zip((0, 1, 2), (null, *fds)):
        os.dup2(fd, target)
    for fd in {null, *fds}:
        os.close(fd)
    os.chdir(request["cwd"])
    os.environ.clear()
    os.environ.update(request["env"])
    script, *_ = sys.argv = request["argv"][1:]
    sys.path[0] = os.path.dirname(os.path.abspath(script))
    code = 0
    try:
        import runpy

        runpy.run_path(script, run_name="__main__")
    except SystemExit as e:
        code = _exit_code(e)
    except BaseException:  # as the interpreter does: traceback on stderr, status 1
        import traceback

        traceback.print_exc()
        code = 1
    try:
        threading._shutdown()  # type: ignore[attr-defined]  (joins non-daemon threads, as at exit)
        atexit._run_exitfuncs()  # type: ignore[attr-defined]
        sys.stdout.flush()
        sys.stderr.flush()
    finally:
        os._exit(code)


def serve(path: str) -> None:
    _preload()
    others = [
        name
        for tid in os.listdir("/proc/self/task")
        if int(tid) != os.getpid()
        and (name := Path(f"/proc/self/task/{tid}/comm").read_text().strip()) not in FORK_SAFE_THREADS
    ]
    if others:
        sys.exit(f"forkserver: threads {others} after the imports; forking would copy them half-held")
    listener = socket.socket(socket.AF_UNIX, socket.SOCK_SEQPACKET)
    listener.bind(path)
    listener.listen(64)
    sel = selectors.DefaultSelector()
    sel.register(listener, selectors.EVENT_READ)
    print("ready", flush=True)
    parent = os.getppid()
    while os.getppid() == parent:  # the pytest worker that started it is gone: stop
        for key, _ in sel.select(timeout=1.0):
            if key.fileobj is listener:
                conn, _ = listener.accept()
                data, fds, _, _ = socket.recv_fds(conn, 1 << 20, 2)
                running = [k for k in sel.get_map().values() if k.data is not None]
                own = [
                    listener.fileno(),
                    sel.fileno(),
                    conn.fileno(),
                    *(k.fd for k in running),
                    *(k.data[1].fileno() for k in running),
                ]
                pid = os.fork()
                if pid == 0:
                    for fd in set(own):
                        os.close(fd)
                    _child(json.loads(data), fds)
                for fd in fds:
                    os.close(fd)
                conn.send(json.dumps({"pid": pid}).encode())
                sel.register(os.pidfd_open(pid), selectors.EVENT_READ, (pid, conn))
            else:
                pid, conn = key.data
                sel.unregister(key.fileobj)
                os.close(key.fd)
                _, status, usage = os.wait4(pid, 0)
                try:
                    conn.send(
                        json.dumps(
                            {"returncode": os.waitstatus_to_exitcode(status), "cpu": usage.ru_utime + usage.ru_stime}
                        ).encode()
                    )
                except OSError:  # the client went away
                    pass
                conn.close()


# ----------------------------------------------------------------------------- client

# The session's environment as it started (tests/conftest.py imports this module first). Libraries
# running in the pytest process add to os.environ later (W&B its service socket, Lightning and torch
# their flags); a child must not inherit those.
_ENVIRON = dict(os.environ)


def env(hash_seed: int | None = None, extra: dict[str, str] | None = None) -> dict[str, str]:
    """A test process's environment: the session's, one thread per process (the tests run several
    at once), no network, unbuffered output, plus ``extra``; ``hash_seed`` pins PYTHONHASHSEED
    (else the process draws its own, as a user's would)."""
    seed = {"PYTHONHASHSEED": str(hash_seed)} if hash_seed is not None else {}
    base = {k: v for k, v in _ENVIRON.items() if k != "PYTHONHASHSEED"}
    return {
        **base,
        "OMP_NUM_THREADS": "1",
        "MKL_NUM_THREADS": "1",
        "WANDB_MODE": "offline",
        "TOKENIZERS_PARALLELISM": "false",
        "PYTHONUNBUFFERED": "1",
        "HF_HUB_OFFLINE": "1",
        "PLAD_PRESIDIO": "0",  # the optional Presidio peer stays out, installed or not (tests/conftest.py)
        **seed,
        **(extra or {}),
    }


class ForkedProcess:
    """The part of ``subprocess.Popen`` the tests use, for a child of the server."""

    def __init__(self, args: list[str], conn: socket.socket, pid: int, stdout: Any, stderr: Any) -> None:
        self.args, self._conn, self.pid, self.stdout, self.stderr = args, conn, pid, stdout, stderr
        self.returncode: int | None = None
        self.cpu_seconds = 0.0  # user + system time of the process and its children, once it ended

    def _finish(self, timeout: float | None) -> bool:
        if self.returncode is None:
            if not _readable(self._conn, timeout):
                return False
            reply = self._conn.recv(4096)
            if not reply:
                raise RuntimeError(f"forkserver: the server ended while process {self.pid} ran")
            status = json.loads(reply)
            self._conn.close()
            self.returncode, self.cpu_seconds = status["returncode"], status["cpu"]
        return True

    def poll(self) -> int | None:
        self._finish(0)
        return self.returncode

    def wait(self, timeout: float | None = None) -> int:
        if not self._finish(timeout):
            raise subprocess.TimeoutExpired(self.args, timeout)
        return self.returncode  # type: ignore[return-value]

    def kill(self) -> None:
        if self.returncode is None:
            os.kill(self.pid, signal.SIGKILL)

    def communicate(self, timeout: float | None = None) -> tuple[Any, Any]:
        deadline = None if timeout is None else time.monotonic() + timeout
        streams = [s for s in (self.stdout, self.stderr) if s is not None and not s.closed]  # closed: read before
        chunks: dict[Any, list[bytes]] = {s: [] for s in streams}
        sel = selectors.DefaultSelector()
        for s in streams:
            sel.register(s, selectors.EVENT_READ)
        while sel.get_map():
            left = None if deadline is None else max(0.0, deadline - time.monotonic())
            ready = sel.select(left)
            if not ready and left == 0.0:
                raise subprocess.TimeoutExpired(self.args, timeout)
            for key, _ in ready:
                chunk = os.read(key.fd, 1 << 16)
                if chunk:
                    chunks[key.fileobj].append(chunk)
                else:
                    sel.unregister(key.fileobj)
        self.wait(None if deadline is None else max(0.0, deadline - time.monotonic()))
        out = [b"".join(chunks[s]) if s in chunks else None for s in (self.stdout, self.stderr)]
        text = any(hasattr(s, "encoding") for s in streams)
        for s in streams:
            s.close()
        return tuple(o.decode() if text and o is not None else o for o in out)  # type: ignore[return-value]


def _readable(conn: socket.socket, timeout: float | None) -> bool:
    with selectors.DefaultSelector() as sel:
        sel.register(conn, selectors.EVENT_READ)
        return bool(sel.select(timeout))


class _Server:
    """This process's fork server, started on first use; None when it could not start."""

    def __init__(self, env: dict[str, str]) -> None:
        import tempfile

        self.env = {k: v for k, v in env.items() if k not in VOLATILE}
        self.path = os.path.join(tempfile.mkdtemp(prefix="plad-fork-"), "socket")
        self.proc = subprocess.Popen(
            [sys.executable, __file__, self.path],
            env=env,
            cwd=Path(__file__).parent,
            stdin=DEVNULL,
            stdout=PIPE,
            text=True,
        )
        atexit.register(self.stop)
        self.ready = self.proc.stdout.readline().strip() == "ready"  # type: ignore[union-attr]
        if not self.ready:
            print(f"forkserver: did not start (status {self.proc.wait()}); plain processes instead", file=sys.stderr)

    def stop(self) -> None:
        import shutil

        self.proc.kill()
        self.proc.wait()
        shutil.rmtree(os.path.dirname(self.path), ignore_errors=True)


_server: _Server | None = None
_lock = threading.Lock()


def _server_for(request_env: dict[str, str]) -> _Server | None:
    global _server
    with _lock:
        if _server is None:
            _server = _Server(env())
    same = {k: v for k, v in request_env.items() if k not in VOLATILE} == _server.env
    return _server if _server.ready and same else None


def _fd(spec: Any, default: int, opened: list[int]) -> tuple[int, int | None]:
    """(the fd the child writes to, the read end of a new pipe or None) for a Popen stream spec."""
    if spec == PIPE:
        read, write = os.pipe()
        opened.append(write)
        return write, read
    if spec == DEVNULL:
        opened.append(os.open(os.devnull, os.O_WRONLY))
        return opened[-1], None
    return (default if spec is None else spec if isinstance(spec, int) else spec.fileno()), None


def start(
    args: Sequence[str],
    *,
    cwd: str | Path,
    env: dict[str, str],
    stdout: Any = None,
    stderr: Any = None,
    text: bool = False,
) -> Any:
    """``subprocess.Popen(args, cwd=..., env=..., stdout=..., stderr=..., start_new_session=True)``,
    forked from the server when it can be (a ``ForkedProcess``), else that Popen."""
    args = [str(a) for a in args]
    server = _server_for(env) if len(args) > 1 and args[0] == sys.executable and args[1].endswith(".py") else None
    if server is None:
        return subprocess.Popen(args, cwd=cwd, env=env, stdout=stdout, stderr=stderr, text=text, start_new_session=True)
    opened: list[int] = []
    out, out_read = _fd(stdout, 1, opened)
    err, err_read = (out, None) if stderr == STDOUT else _fd(stderr, 2, opened)
    conn = socket.socket(socket.AF_UNIX, socket.SOCK_SEQPACKET)
    conn.connect(server.path)
    request = {"argv": args, "cwd": str(cwd), "env": env}
    socket.send_fds(conn, [json.dumps(request).encode()], [out, err])
    reply = conn.recv(4096)
    if not reply:
        raise RuntimeError(f"forkserver: the server (pid {server.proc.pid}) ended; see its stderr above")
    pid = json.loads(reply)["pid"]
    for fd in opened:
        os.close(fd)  # the child holds its own copies: EOF comes when it (and its children) end
    mode = "r" if text else "rb"
    return ForkedProcess(args, conn, pid, *(None if r is None else os.fdopen(r, mode) for r in (out_read, err_read)))


def run(
    args: Sequence[str],
    *,
    cwd: str | Path,
    env: dict[str, str],
    capture_output: bool = False,
    text: bool = False,
    timeout: float | None = None,
) -> subprocess.CompletedProcess:
    """``subprocess.run`` through ``start``."""
    stream = PIPE if capture_output else None
    proc = start(args, cwd=cwd, env=env, stdout=stream, stderr=stream, text=text)
    try:
        out, err = proc.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait()
        raise
    return subprocess.CompletedProcess(proc.args, proc.returncode, out, err)


if __name__ == "__main__":
    serve(sys.argv[1])
