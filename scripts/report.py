"""Aggregate a multirun folder into report.md + charts (same as ``python -m plad.report``)."""

from plad.report import main

if __name__ == "__main__":
    main()
