"""What every layer shares for checking its inputs: ``InputError``.

An ``InputError`` means "this configuration value, file or data row cannot work", said in one line
that names the field and what was expected ("task.n_train: expected a positive integer, got 0").
The command line prints it as that one line and exits with status 2 (``plad.cli``); any other
exception is a defect or a failure mid-run (a library error, a full disk) and keeps its traceback
and a status other than 2. It subclasses ValueError, so code that catches ValueError still does.
"""
from __future__ import annotations


class InputError(ValueError):
    """A bad configuration value, file or data row, named in one line."""
