"""Values made JSON-able, one way for the whole package.

``plain`` turns what Hydra hands over (DictConfig / ListConfig, also nested inside dicts and
lists, and Paths) into plain Python: cache keys hash it (``plad.cache.fingerprint``), so two
spellings of one config must give one value. ``strict`` makes a result strict JSON before it is
written (metrics.json, report.json): NaN / inf (the std of one seed, a metric over no examples)
become null, which every JSON reader accepts, and numpy scalars become Python numbers.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import numpy as np
from omegaconf import DictConfig, ListConfig, OmegaConf


def plain(obj: Any) -> Any:
    """Configs, Paths, dicts and lists of them as plain Python (configs resolved); anything else as is."""
    if isinstance(obj, (DictConfig, ListConfig)):
        return OmegaConf.to_container(obj, resolve=True)
    if isinstance(obj, Path):
        return str(obj)
    if isinstance(obj, dict):
        return {str(k): plain(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [plain(v) for v in obj]
    return obj


def strict(obj: Any) -> Any:
    """``obj`` with non-finite floats as None and numpy scalars as Python numbers, recursively."""
    if isinstance(obj, dict):
        return {str(k): strict(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [strict(v) for v in obj]
    if isinstance(obj, np.generic):
        obj = obj.item()
    return None if isinstance(obj, float) and not math.isfinite(obj) else obj
