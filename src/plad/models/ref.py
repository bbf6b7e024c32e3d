"""``ModelRef``: how stages hand models to each other and to generation backends (a saved
directory and the fingerprint naming it, not a loaded model), so each consumer loads what it
needs: the HF backend an HF model, vLLM its own engine from the same directory."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any


@dataclass
class ModelRef:
    """A saved model directory (HF ``save_pretrained`` layout) and the fingerprint naming it
    (empty for run-local models, which no cache entry may be keyed on). ``loader`` replaces
    loading from ``path`` (models held in memory by tests and benchmarks; such a ref has no path)."""

    path: Path | None
    fingerprint: str
    reused: bool = False  # taken from the cache by this run
    loader: Callable[[], tuple[Any, Any]] | None = field(default=None, repr=False, compare=False)

    def load(self) -> tuple[Any, Any]:
        """(model, tokenizer), freshly loaded (or the loader's)."""
        if self.loader is not None:
            return self.loader()
        from plad.models.build import load_saved

        return load_saved(self.path)

    def tokenizer(self) -> Any:
        """The saved tokenizer alone (no weights loaded), or the loader's."""
        if self.loader is not None:
            return self.loader()[1]
        from transformers import AutoTokenizer

        from plad.models.tokenizer import ensure_pad

        return ensure_pad(AutoTokenizer.from_pretrained(str(self.path)))

    @classmethod
    def in_memory(cls, model: Any, tokenizer: Any, fingerprint: str = "") -> ModelRef:
        return cls(None, fingerprint, loader=lambda: (model, tokenizer))
