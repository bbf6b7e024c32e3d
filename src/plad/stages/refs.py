"""``ModelRef``: how stages hand models to each other (a saved directory, not a loaded model)."""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any


@dataclass
class ModelRef:
    """A saved model directory (HF ``save_pretrained`` layout) and the fingerprint naming it
    (empty for run-local models, which no cache entry may be keyed on)."""
    path: Path
    fingerprint: str
    reused: bool = False  # taken from the cache by this run

    def load(self) -> tuple[Any, Any]:
        from plad.models.build import load_saved
        return load_saved(self.path)
