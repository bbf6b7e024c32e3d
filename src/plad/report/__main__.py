"""``python -m plad.report``: see plad.report.cli. Guarded, so importing the module (as a walk over
the package does: the test suite's fork server preloads every plad module) runs nothing."""

from plad.report.cli import main

if __name__ == "__main__":
    main()
