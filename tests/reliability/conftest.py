"""The reliability modules import the tests/ conftest's names through this one (see __getattr__);
the line counting their tables is printed by tests/conftest.py, which xdist's controller loads too."""
from __future__ import annotations

import importlib.util
import sys
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
if str(HERE) not in sys.path:  # the suite's helper modules (train_process) import by name
    sys.path.insert(0, str(HERE))


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
