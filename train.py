"""Thin entry point: ``python train.py task=anonymization model=llama loss=ranking``."""

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent / "src"))

from plad.cli import main  # noqa: E402

if __name__ == "__main__":
    main()
