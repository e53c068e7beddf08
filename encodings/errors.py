"""The one base class of the user's mistakes, and one-line error texts, in the lowest layer.

Every package can raise :class:`UserError` and print :func:`error_line` (the fitness and
evo layers re-export it as ``fooling.fitness.error_line``).
"""

from __future__ import annotations

import re

__all__ = ["UserError", "error_line", "shortened"]


class UserError(ValueError):
    """Bad input, a missing or damaged file, an unreachable store: the user's to fix, not a bug.

    The command line prints a ``UserError`` (and an ``OSError``: the machine's state, such as
    a full disk) as one line with exit code 2; anything else is a bug and keeps its traceback
    (exit code 1). A ``ValueError`` subclass, so callers that catch ``ValueError`` still catch it.
    Subclasses add the usual kind where it helps (e.g. ``LookupError`` for unknown names).

    Checks of what the program's own code passes (a caller inside the package got it wrong)
    raise plain ``ValueError`` or ``TypeError`` instead, so that they keep their traceback.
    """


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
    return shortened(lines[-1 if last else 0], limit) if lines else type(error).__name__


def shortened(text: str, limit: int | None) -> str:
    """``text`` in at most ``limit`` characters, cut where a sentence (else a word) ends.

    ``limit=None`` keeps it whole. A text cut elsewhere than after a sentence ends in ``...``, so
    that a reader knows there was more: after a word, or inside a long one (a URL, a path) where
    cutting after the last word would drop over half the room.
    """
    if limit is None or len(text) <= limit:
        return text
    if limit < 8:
        return text[:limit]
    sentence = text[: limit + 1].rfind(". ")
    if sentence >= limit // 2:
        return text[: sentence + 1]
    # After a word, unless that drops over half the room (a long URL or path): then mid-word.
    word = text[: limit - 2].rfind(" ")
    kept = text[:word].rstrip(" ,;:.") if word >= limit // 2 else text[: limit - 3]
    return kept + "..."
