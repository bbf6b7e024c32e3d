"""Shared fixtures: run the pipeline in-process on composed configs (no process start-up cost)."""

import ast
import gc
import os
from collections.abc import Callable
from pathlib import Path
from typing import Any

from helpers import forkserver  # noqa: F401  (first: it keeps the environment the session started with)

# isort: split
import pytest
from helpers.configs import compose_run_config

from plad.heap import keep_freed_memory

keep_freed_memory()  # in-process training steps reuse freed memory instead of faulting it in (plad.heap)
os.environ.setdefault("WANDB_MODE", "offline")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
os.environ["PLAD_PRESIDIO"] = "0"  # peer lists stay the same with the optional extra installed; test_presidio opts in


def pytest_collection_finish(session: pytest.Session) -> None:
    """What is alive after collection (the imported stack, the test modules) lives all session: out
    of the garbage collector's scans, each full collection (automatic, or a model release's
    ``gc.collect()``) takes milliseconds instead of ~0.5-1 s. Later objects are collected as usual."""
    gc.collect()
    gc.freeze()


@pytest.fixture
def run_pipeline(tmp_path: Path) -> Callable[..., dict[str, Any]]:
    """``run_pipeline(*overrides, log_dir=..., name=...)`` runs a whole job; returns its results."""
    from plad.pipeline import run

    def _run(*overrides: str, log_dir: Path | None = None, name: str = "run") -> dict[str, Any]:
        run_dir = tmp_path / name
        run_dir.mkdir(parents=True, exist_ok=True)
        cfg = compose_run_config(log_dir or tmp_path / "logs", run_dir, *overrides)
        with open(run_dir / "resolved.yaml", "w") as f:
            from omegaconf import OmegaConf

            f.write(OmegaConf.to_yaml({k: v for k, v in cfg.items() if k != "hydra"}, resolve=False))
        results = run(cfg)
        results["run_dir"] = run_dir
        return results

    return _run


# The reliability suite's tables: (label, module file, table name).
RELIABILITY = Path(__file__).resolve().parent / "reliability"
TABLES = (
    ("kill points", "test_kill.py", "KILL_POINTS"),
    ("corruption cases", "test_corruption.py", "CORRUPTIONS"),
    ("bad inputs", "test_bad_inputs.py", "BAD_INPUTS"),
)


def table_size(file: str, name: str) -> str:
    """Length of a literal table read off the module's file; else why not."""
    path = RELIABILITY / file
    if not path.is_file():
        return "n/a (no module)"
    try:
        tree = ast.parse(path.read_text())
    except (OSError, SyntaxError):
        return "? (unreadable)"
    for node in tree.body:
        if isinstance(node, ast.Assign):
            targets, value = node.targets, node.value
        elif isinstance(node, ast.AnnAssign):
            targets, value = [node.target], node.value
        else:
            continue
        if any(isinstance(t, ast.Name) and t.id == name for t in targets):
            literal = isinstance(value, (ast.List, ast.Tuple, ast.Set, ast.Dict))
            if literal and not any(isinstance(e, (ast.Starred, type(None))) for e in _elements(value)):
                return str(len(_elements(value)))
            return "? (not a literal table)"
    return f"? (no {name})"


def _elements(node: ast.expr) -> list:
    return list(node.keys) if isinstance(node, ast.Dict) else list(node.elts)  # type: ignore[attr-defined]


def pytest_terminal_summary(terminalreporter: pytest.TerminalReporter, exitstatus: int, config: pytest.Config) -> None:
    """One line after a session that ran a reliability table module: how many kill points, corruption
    cases and bad inputs the suite covers, so a shrinking table shows up in the log. Read from the
    reports, not from collection: under pytest-xdist the controller collects nothing."""
    ran = {
        Path(r.nodeid.split("::")[0]).name
        for reports in terminalreporter.stats.values()
        for r in reports
        if getattr(r, "nodeid", "").startswith("tests/reliability/")
    }
    if not ran & {file for _, file, _ in TABLES}:
        return
    counts = ", ".join(f"{label}: {table_size(file, name)}" for label, file, name in TABLES)
    terminalreporter.write_line(f"reliability suite: {counts}")
