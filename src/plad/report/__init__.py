"""Comparing runs: a multirun folder, W&B offline run folders or ``wandb://<entity>/<project>``
into report.md, report.json and charts, optionally a W&B Report.

``python -m plad.report <sources> [--out DIR]`` (plad.report.cli). The modules, in the order data
flows through them:

- ``saved_config``: the one reader of a job's saved Hydra files (config, overrides, choices);
- ``jobs``: job folders -> ``Job`` (identity, status, metrics, samples, curves; the loss's kind and
  display order from its class);
- ``wandb_runs``: W&B run folders, or runs downloaded from W&B, -> the same ``Job``s; folder filters;
- ``rows``: jobs -> tables (``Group`` of ``Row``s), per-seed values, paired comparisons;
- ``stats``: mean ± std over seeds, the paired bootstrap, curves (pure numpy);
- ``tables``: the markdown tables beyond the main one, number formatting;
- ``build``: report.md, report.json and the charts;
- ``publish``: the tables as a W&B Report (``--publish``).
"""

from plad.report.build import build_report
from plad.report.cli import main

__all__ = ["build_report", "main"]
