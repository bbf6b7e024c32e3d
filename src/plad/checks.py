"""What every layer shares for checking its inputs: ``InputError`` and the validators of plain values.

An ``InputError`` means "this configuration value, file or data row cannot work", said in one line
that names the field and what was expected ("task.n_train: expected a positive integer, got 0").
The command line prints it as that one line and exits with status 2 (``plad.cli``); any other
exception is a defect or a failure mid-run (a library error, a full disk) and keeps its traceback
and a status other than 2. It subclasses ValueError, so code that catches ValueError still does.

The validators below are the only place that decides what counts as an integer or a number: YAML
gives ``true`` where a number was meant, and Python counts a bool as an int, so both reject bools.
"""

from __future__ import annotations

from typing import Any


class InputError(ValueError):
    """A bad configuration value, file or data row, named in one line."""


def is_number(value: Any) -> bool:
    """An int or a float, and not a bool."""
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def integer(value: Any, field: str, minimum: int = 1, null: bool = False, maximum: int | None = None) -> int | None:
    """``value`` if it is an int >= ``minimum`` (and <= ``maximum``; or None, with ``null``), else an
    ``InputError`` naming ``field``."""
    if null and value is None:
        return None
    too_big = maximum is not None and isinstance(value, int) and value > maximum
    if isinstance(value, bool) or not isinstance(value, int) or value < minimum or too_big:
        if maximum is not None:
            expected = f"an integer in [{minimum}, {maximum}]"
        else:
            expected = "a positive integer" if minimum == 1 else f"an integer >= {minimum}"
        raise InputError(f"{field}: expected {expected}{' or null' if null else ''}, got {value!r}")
    return value


def share(value: Any, field: str, null: bool = False) -> float | None:
    """``value`` as a float if it is a number in [0, 1] (or None, with ``null``), else an ``InputError``
    naming ``field``."""
    if null and value is None:
        return None
    if not is_number(value) or not 0 <= value <= 1:  # NaN fails the range
        raise InputError(f"{field}: expected a number in [0, 1]{' or null' if null else ''}, got {value!r}")
    return float(value)


def number(value: Any, field: str, positive: bool = False) -> float:
    """``value`` if it is a number > 0 (``positive``) or >= 0, else an ``InputError`` naming ``field``."""
    if not is_number(value) or not (value > 0 if positive else value >= 0):  # NaN fails both
        raise InputError(f"{field}: expected {'a positive number' if positive else 'a number >= 0'}, got {value!r}")
    return value
