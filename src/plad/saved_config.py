"""The one reader of a job's saved Hydra files (``.hydra/config.yaml``, ``overrides.yaml``,
``hydra.yaml``): ``ckpt_path=last`` finds a killed run of the same configuration by it
(plad.training.resume), and the report reads job identity (plad.report.jobs), folder filters
(plad.report.wandb_runs) and the W&B Report's config differences (plad.report.publish) from it.

Read once, parsed as OmegaConf parses YAML (``1e-3`` is a float, as in the live config, so a saved
config and the running one fingerprint alike) but not resolved and not instantiated, so a job
folder from another checkout (unknown ``_target_`` classes, interpolations that need the live job)
still reads. Two views on top: ``flat()``, the values as
written, and ``value(key)``, a value resolved as the job resolved it (no Hydra app runs here, so
``${hydra:...}`` is answered from the saved hydra.yaml).
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from functools import cached_property
from pathlib import Path
from typing import Any

HYDRA_DIR = ".hydra"
# Top-level keys that differ between a job and its resumption or relocation without changing what it
# computes: where it writes, the resume switch, Hydra's own settings. Resume matches configs without
# them (plad.training.resume); the report does not split a row on overrides of them (plad.report.jobs).
VOLATILE = ("paths", "ckpt_path", "hydra")


@dataclass
class SavedConfig:
    """A job's composed config, its command-line overrides and Hydra's own settings, as saved."""

    config: dict[str, Any] = field(default_factory=dict)  # .hydra/config.yaml
    overrides: dict[str, str] = field(default_factory=dict)  # .hydra/overrides.yaml, {key: value}
    hydra: dict[str, Any] = field(default_factory=dict)  # the ``hydra`` node of .hydra/hydra.yaml

    @property
    def choices(self) -> dict[str, Any]:
        """The config group options Hydra picked (``loss: ranking``), overrides and defaults alike."""
        return (self.hydra.get("runtime") or {}).get("choices") or {}

    @property
    def loss_target(self) -> str | None:
        """The loss class path (``loss._target_``): what plad.report.jobs reads the loss's kind from."""
        target = (self.config.get("loss") or {}).get("_target_")
        return str(target) if target else None

    def flat(self) -> dict[str, Any]:
        """The config as {dotted key: value}, as written (interpolations unresolved)."""
        out: dict[str, Any] = {}

        def walk(node: Any, key: str) -> None:
            if isinstance(node, dict) and node:
                for k, v in node.items():
                    walk(v, f"{key}.{k}" if key else str(k))
            else:
                out[key] = node

        walk(self.config, "")
        return out

    @cached_property
    def resolvable(self) -> Any:
        """The config as an OmegaConf object whose ``${hydra:...}`` values point at the saved
        hydra.yaml (under ``_hydra``), so e.g. the W&B group resolves as in the job."""
        from omegaconf import OmegaConf

        cfg = OmegaConf.create(_hydra_free(self.config))
        cfg["_hydra"] = self.hydra
        return cfg

    def value(self, key: str) -> Any:
        """A dotted key's value, resolved where it can be (the raw text of an interpolation that
        needs the live job: paths, clocks); containers come back as plain dicts and lists."""
        from omegaconf import OmegaConf

        import plad.resolvers  # noqa: F401  (the configs' own resolvers)

        try:
            value = OmegaConf.select(self.resolvable, key)
        except Exception:
            value = OmegaConf.select(self.resolvable, key, throw_on_resolution_failure=False)
        return OmegaConf.to_container(value, resolve=False) if OmegaConf.is_config(value) else value


def read_saved_config(job_dir: Path) -> SavedConfig:
    """The saved Hydra files of a job folder; a missing or empty file reads as empty."""
    hydra_dir = Path(job_dir) / HYDRA_DIR
    return SavedConfig(
        config=_read_yaml(hydra_dir / "config.yaml", {}),
        overrides=_parse_overrides(_read_yaml(hydra_dir / "overrides.yaml", [])),
        hydra=_read_yaml(hydra_dir / "hydra.yaml", {}).get("hydra") or {},
    )


def _read_yaml(path: Path, default: Any) -> Any:
    if not path.is_file():
        return default
    from omegaconf import OmegaConf

    return OmegaConf.to_container(OmegaConf.load(path), resolve=False) or default


def _parse_overrides(items: list[Any]) -> dict[str, str]:
    """``["loss=margin", "+x=1", "~y"]`` -> ``{"loss": "margin", "x": "1"}`` (deletions carry no value)."""
    out = {}
    for item in items:
        key, sep, value = str(item).lstrip("+~").partition("=")
        if sep:
            out[key] = value
    return out


def _hydra_free(node: Any) -> Any:
    """``${hydra:x}`` -> ``${_hydra.x}`` in every string: the ``hydra`` resolver exists only while
    a Hydra app runs."""
    if isinstance(node, str):
        return re.sub(r"\$\{hydra:", "${_hydra.", node)
    if isinstance(node, dict):
        return {k: _hydra_free(v) for k, v in node.items()}
    if isinstance(node, list):
        return [_hydra_free(v) for v in node]
    return node
