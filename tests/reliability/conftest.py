"""One line at the end of a session that ran any reliability module: how many kill points,
corruption cases and bad inputs the suite covers, so a shrinking table shows up in the log."""
from __future__ import annotations

import ast
import importlib.util
import sys
from pathlib import Path
from types import ModuleType
from typing import Any

import pytest

HERE = Path(__file__).resolve().parent
if str(HERE) not in sys.path:  # the suite's helper modules (train_process) import by name
    sys.path.insert(0, str(HERE))
# (label, module file, table name)
TABLES = (("kill points", "test_kill.py", "KILL_POINTS"),
          ("corruption cases", "test_corruption.py", "CORRUPTIONS"),
          ("bad inputs", "test_bad_inputs.py", "BAD_INPUTS"))
COLLECTED = pytest.StashKey[dict[str, ModuleType]]()


def __getattr__(name: str) -> Any:
    """``from conftest import compose_run_config`` in this folder's modules: without package
    files, this module is the one named ``conftest`` here, so it lends the tests/ conftest's names."""
    if name.startswith("__"):
        raise AttributeError(name)
    parent = sys.modules.get("_plad_tests_conftest")
    if parent is None:
        spec = importlib.util.spec_from_file_location("_plad_tests_conftest", HERE.parent / "conftest.py")
        parent = importlib.util.module_from_spec(spec)  # type: ignore[arg-type]
        sys.modules[spec.name] = parent  # type: ignore[union-attr]
        spec.loader.exec_module(parent)  # type: ignore[union-attr]
    try:
        return getattr(parent, name)
    except AttributeError:
        raise AttributeError(f"module 'conftest' has no attribute {name!r}") from None


def pytest_collection_finish(session: pytest.Session) -> None:
    """Remember which of the table modules this session runs (after -k / -m deselection)."""
    files = {file for _, file, _ in TABLES}
    mods = {}
    for item in session.items:
        path = Path(str(item.path)).resolve()
        if path.parent == HERE and path.name in files and isinstance(item, pytest.Function):
            mods[path.name] = item.module
    session.config.stash[COLLECTED] = mods


def table_size(mods: dict[str, ModuleType], file: str, name: str) -> str:
    """Length of the table in a collected module; else read off the file's literal list; else why not."""
    if file in mods and hasattr(mods[file], name):
        return str(len(getattr(mods[file], name)))
    path = HERE / file
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
    mods = config.stash.get(COLLECTED, {})
    # Under pytest-xdist the controller collects nothing: the reports say which modules ran, and
    # table_size then reads each table off its file.
    ran = {Path(r.nodeid.split("::")[0]).name for reports in terminalreporter.stats.values() for r in reports
           if getattr(r, "nodeid", "").startswith("tests/reliability/")}
    if not mods and not ran & {file for _, file, _ in TABLES}:
        return
    counts = ", ".join(f"{label}: {table_size(mods, file, name)}" for label, file, name in TABLES)
    terminalreporter.write_line(f"reliability suite: {counts}")
