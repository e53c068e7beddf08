"""Name look-ups that fail with a helpful message."""

from __future__ import annotations

import difflib
from collections.abc import Iterable, Sequence

from fooling.encodings.errors import UserError


class UnknownNameError(UserError, LookupError):
    """A model, encoding or class name that does not exist; the message suggests close ones.

    A :class:`~fooling.encodings.errors.UserError` (one line on the command line) and a
    ``LookupError``, for callers that catch unknown names as such.
    """


def resolve_name(name: str, choices: Iterable[str], kind: str) -> str:
    """Return ``name`` if it is one of ``choices``, case-insensitively.

    Raises:
        UnknownNameError: no such name; the message lists up to three close matches.
    """
    choices = list(choices)
    by_lower = {choice.lower(): choice for choice in choices}
    if name.lower() in by_lower:
        return by_lower[name.lower()]
    raise _unknown(name, choices, kind)


def close_names(name: str, choices: Iterable[str], *, count: int = 3) -> str:
    """``"; did you mean 'a', 'b'?"`` for up to ``count`` choices close to ``name`` (any case), or ``""``."""
    by_lower = {choice.lower(): choice for choice in choices}
    close = difflib.get_close_matches(str(name).lower(), list(by_lower), n=count, cutoff=0.5)
    return f"; did you mean {', '.join(repr(by_lower[c]) for c in close)}?" if close else ""


def _unknown(name: str, choices: list[str], kind: str) -> UnknownNameError:
    """The error for a ``kind`` called ``name`` that is not among ``choices``, with close names."""
    hint = close_names(name, choices)
    shown = ", ".join(choices[:8]) + (", ..." if len(choices) > 8 else "")
    return UnknownNameError(f"unknown {kind} {name!r}{hint} (known: {shown})")


def class_index(name: str, class_names: Sequence[str]) -> int:
    """The class id ``name`` stands for: a class name (case-insensitive), else a class id.

    A few models give two classes one name (ImageNet's "crane", the bird 134 and the machine
    517; "maillot", 638 and 639); those are chosen by id ("134").

    Raises:
        UnknownNameError: no class of that name or id (the message suggests close names), or a
            name that several classes share (the message lists their ids).
    """
    text = name.strip()
    ids = [i for i, class_name in enumerate(class_names) if class_name.lower() == text.lower()]
    if len(ids) > 1:
        shared = ", ".join(map(str, ids))
        raise UnknownNameError(f"class {name!r} names classes {shared}: give the id of the one you mean")
    if ids:
        return ids[0]
    if text.isdecimal() and int(text) < len(class_names):
        return int(text)
    raise _unknown(name, list(class_names), "class")
