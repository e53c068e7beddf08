"""Plugins: objects that installed packages declare under an entry-point group, loaded one way.

Every extension point that takes plugins loads them here: encodings (``fooling.encodings``),
emitters (``fooling.emitters``), scoring engines (``fooling.engines``) and models
(``fooling.models``). So a broken plugin is reported the same way everywhere, as one line
naming it, its entry point and what went wrong::

    encoding plugin 'blocks' (blocks_encoding:BLOCKS) failed: ImportError: no module named 'numpyy'
    engine plugin 'broken' (fake_fooling_engine:NotAnEngine) is NotAnEngine, not a ScoringEngine
    emitter plugin 'twice' (twice_emitter:TwiceEmitter) calls itself 'once'; name its entry point so

raised as a :class:`PluginError` or the extension point's own :class:`UserError` subclass (a
broken installed package is the user's to fix: the command line prints it as one line).

An extension point needs one call. Load every plugin of a group (the built-in names skipped,
as a plugin may not replace one)::

    emitters = {**EMITTERS, **load_entry_points(
        "fooling.emitters", "emitter", Emitter, make=instance, skip=EMITTERS
    )}

or only the one asked for, from :func:`entry_points` (which reads names without importing)::

    entry = entry_points("fooling.engines")[name]
    engine = load_entry_point(entry, "engine", ScoringEngine, make=instance, error=EngineUnavailableError)

This module imports nothing beyond the standard library and :mod:`.errors`.
"""

from __future__ import annotations

import importlib.metadata
from collections.abc import Callable, Container
from typing import Any, TypeVar

from .errors import UserError, error_line

__all__ = ["PluginError", "entry_points", "instance", "load_entry_point", "load_entry_points"]

T = TypeVar("T")


class PluginError(UserError):
    """An installed plugin that fails to load, or is not what its entry-point group takes; one line."""


def entry_points(group: str) -> dict[str, importlib.metadata.EntryPoint]:
    """The installed entry points of ``group``, by name (read afresh each call; nothing is imported)."""
    return {entry.name: entry for entry in importlib.metadata.entry_points(group=group)}


def instance(loaded: Any) -> Any:
    """``loaded()`` when ``loaded`` is a class (made with no arguments), else ``loaded`` itself.

    The ``make`` of groups whose entry points may name a class or an instance.
    """
    return loaded() if isinstance(loaded, type) else loaded


def _a(name: str) -> str:
    return f"an {name}" if name[:1].upper() in "AEIOU" else f"a {name}"


def load_entry_point(
    entry: importlib.metadata.EntryPoint,
    kind: str,
    expected: type[T],
    *,
    make: Callable[[Any], Any] | None = None,
    named: bool = True,
    error: Callable[[str], Exception] = PluginError,
) -> T:
    """The plugin that entry point ``entry`` declares, checked.

    Args:
        entry: the entry point (from :func:`entry_points`).
        kind: what the group holds, for messages: ``"encoding"``, ``"engine"``...
        expected: the type the plugin must be an instance of.
        make: turns the loaded object into the plugin (e.g. :func:`instance`, or
            ``lambda factory: factory()``); it runs the plugin's code, so its failures are
            reported as the plugin's. ``None``: the loaded object is the plugin.
        named: the plugin's ``name`` attribute must be the entry point's name.
        error: the exception class raised, called with the one-line message (a
            :class:`UserError` subclass, such as the extension point's own error).

    Returns:
        The plugin.

    Raises:
        PluginError (or ``error``): importing or making it raised (the message gives the
            exception's type and first line; the exception is the ``__cause__``), it is not
            an ``expected``, or (``named``) it calls itself by another name.
    """
    where = f"{kind} plugin {entry.name!r} ({entry.value})"
    try:
        loaded = entry.load()
        plugin = make(loaded) if make is not None else loaded
    except Exception as failure:  # the plugin's own code: one line naming the plugin
        raise error(f"{where} failed: {type(failure).__name__}: {error_line(failure)}") from failure
    if not isinstance(plugin, expected):
        raise error(f"{where} is {type(plugin).__name__}, not {_a(expected.__name__)}")
    if named and getattr(plugin, "name", None) != entry.name:
        raise error(f"{where} calls itself {getattr(plugin, 'name', None)!r}; name its entry point so")
    return plugin


def load_entry_points(
    group: str,
    kind: str,
    expected: type[T],
    *,
    make: Callable[[Any], Any] | None = None,
    named: bool = True,
    skip: Container[str] = (),
    error: Callable[[str], Exception] = PluginError,
) -> dict[str, T]:
    """Every plugin of entry-point group ``group`` whose name is not in ``skip``, by name.

    Each is loaded and checked by :func:`load_entry_point` (``kind``, ``expected``, ``make``,
    ``named`` and ``error`` as there), in the order the entry points are installed.

    Raises:
        PluginError (or ``error``): the first plugin that fails to load or is not an ``expected``
            of its entry point's name; one line naming it.
    """
    return {
        name: load_entry_point(entry, kind, expected, make=make, named=named, error=error)
        for name, entry in entry_points(group).items()
        if name not in skip
    }
