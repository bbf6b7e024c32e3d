"""The reliability folder's modules import their helper (train_process) by name; the line counting
their tables is printed by tests/conftest.py, which xdist's controller loads too."""

from __future__ import annotations

import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent
if str(HERE) not in sys.path:  # the suite's helper modules (train_process) import by name
    sys.path.insert(0, str(HERE))
