"""Name look-ups that fail with a helpful message."""

from __future__ import annotations

import difflib
from collections.abc import Iterable


class UnknownNameError(LookupError):
    """A model, encoding or class name that does not exist; the message suggests close ones."""


def resolve_name(name: str, choices: Iterable[str], kind: str) -> str:
    """Return ``name`` if it is one of ``choices``, case-insensitively.

    Raises:
        UnknownNameError: no such name; the message lists up to three close matches.
    """
    choices = list(choices)
    by_lower = {choice.lower(): choice for choice in choices}
    if name.lower() in by_lower:
        return by_lower[name.lower()]
    close = difflib.get_close_matches(name.lower(), list(by_lower), n=3, cutoff=0.5)
    hint = f"; did you mean {', '.join(repr(by_lower[c]) for c in close)}?" if close else ""
    shown = ", ".join(choices[:8]) + (", ..." if len(choices) > 8 else "")
    raise UnknownNameError(f"unknown {kind} {name!r}{hint} (known: {shown})")
