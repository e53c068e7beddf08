"""The one base class of the user's mistakes, in the lowest layer so every package can raise it."""

from __future__ import annotations

__all__ = ["UserError"]


class UserError(ValueError):
    """Bad input, a missing or damaged file, an unreachable store: the user's to fix, not a bug.

    The command line prints a ``UserError`` (and an ``OSError``: the machine's state, such as
    a full disk) as one line with exit code 2; anything else is a bug and keeps its traceback
    (exit code 1). A ``ValueError`` subclass, so callers that catch ``ValueError`` still catch it.
    Subclasses add the usual kind where it helps (e.g. ``LookupError`` for unknown names).
    """
