"""One-line texts of errors, for reports that must fit on one line."""

from __future__ import annotations

import re

# Terminal colour codes, which Ray puts in the messages of remote errors.
_ANSI = re.compile(r"\x1b\[[0-9;]*m")


def error_line(error: BaseException, limit: int | None = 200, *, last: bool = False) -> str:
    """The first (or ``last``) non-blank line of ``error``'s message, cut to ``limit`` characters.

    ``limit=None`` keeps the whole line (the command line's own error report). Colour codes
    are removed; an error with an empty message gives its type's name (``OSError()`` ->
    ``"OSError"``), so a one-line report never ends in a blank. The last line of a Ray error
    names the remote exception (``ModuleNotFoundError: ...``).
    """
    lines = [line.strip() for line in _ANSI.sub("", str(error)).splitlines() if line.strip()]
    return lines[-1 if last else 0][:limit] if lines else type(error).__name__
