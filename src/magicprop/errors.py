"""Errors a user can act on.

Every failure we can foresee is raised as a `MagicPropError` whose message is one line that names the problem and the fix.
The CLI prints that line (no traceback unless `--debug`) and exits with the error's code: 2 for usage errors (bad
arguments, bad input files), 1 for runtime failures (out of disk, a model that cannot be loaded).
"""

from __future__ import annotations


class MagicPropError(Exception):
    """A runtime failure with a one-line message; CLI exit code 1."""

    exit_code = 1


class UsageError(MagicPropError):
    """The user asked for something that cannot work (bad argument, bad input file); CLI exit code 2."""

    exit_code = 2


def first_line(exc: BaseException, limit: int | None = None) -> str:
    """The first line of an exception's message (its class name when it has none), for one-line error reports."""
    text = str(exc).strip()
    line = text.splitlines()[0] if text else type(exc).__name__
    return line if limit is None else line[:limit]
