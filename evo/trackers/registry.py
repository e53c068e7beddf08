"""The tracker registry: built-in trackers by name, the ``fooling.trackers`` plugins, ``--track`` specs."""

from __future__ import annotations

import dataclasses
import importlib.metadata
from collections.abc import Iterable

from fooling.encodings import UserError
from fooling.encodings.plugins import entry_points, load_entry_point, load_entry_points
from fooling.fitness import resolve_name

from .base import Tracker

__all__ = [
    "TRACKERS",
    "TRACKER_GROUP",
    "TrackerEntry",
    "TrackerSpec",
    "make_trackers",
    "parse_tracker",
    "registered_trackers",
    "tracker_class",
    "tracker_help",
    "tracker_names",
]

TRACKER_GROUP = "fooling.trackers"


@dataclasses.dataclass(frozen=True)
class TrackerEntry:
    """A registered tracker, described without importing it.

    Attributes:
        name: the ``--track`` name.
        target: where its class is, ``module:Class`` (as an entry point's value).
        summary: one line for the help.
        argument: what ``ARG`` of ``--track NAME:ARG`` is (``""``: none).
    """

    name: str
    target: str
    summary: str
    argument: str


# The built-in trackers, by name. Their modules import TensorBoard or MLflow (seconds), so
# they are loaded only when a run asks for them, through the same loader as the plugins.
TRACKERS: dict[str, TrackerEntry] = {
    entry.name: entry
    for entry in (
        TrackerEntry(
            "tensorboard",
            "fooling.evo.trackers.tensorboard_tracker:TensorBoardTracker",
            "TensorBoard event files (default OUT/tensorboard; DIR: DIR/RUN-NAME)",
            "DIR",
        ),
        TrackerEntry(
            "mlflow",
            "fooling.evo.trackers.mlflow_tracker:MLflowTracker",
            "an MLflow run (sqlite:///FILE, http://HOST:PORT, ...; default MLflow's own)",
            "TRACKING_URI",
        ),
    )
}


def _tracker_class(loaded: object) -> type[Tracker]:
    """``loaded`` if it is a :class:`Tracker` subclass (the ``make`` of the group's entry points)."""
    if isinstance(loaded, type) and issubclass(loaded, Tracker):
        return loaded
    raise TypeError(f"{getattr(loaded, '__name__', type(loaded).__name__)} is not a Tracker subclass")


def tracker_names() -> list[str]:
    """Every tracker's name: the built-in ones, then the installed plugins' (nothing is imported)."""
    return [*TRACKERS, *(name for name in entry_points(TRACKER_GROUP) if name not in TRACKERS)]


def registered_trackers() -> dict[str, TrackerEntry]:
    """Every tracker: the built-in ones, then the plugins of :data:`TRACKER_GROUP` (loaded afresh).

    A plugin may not replace a built-in tracker (its entry point is ignored).

    Raises:
        PluginError: a plugin fails to load or is not a :class:`Tracker` subclass of its name.
    """
    plugins = load_entry_points(TRACKER_GROUP, "tracker", type, make=_tracker_class, skip=TRACKERS)
    found = {
        name: TrackerEntry(name, f"{kind.__module__}:{kind.__qualname__}", kind.summary, kind.argument)
        for name, kind in plugins.items()
    }
    return {**TRACKERS, **found}


def tracker_class(name: str) -> type[Tracker]:
    """The class of tracker ``name`` (case-insensitive), built in or a plugin, imported now.

    Raises:
        UnknownNameError: no such tracker; the message suggests close names.
        PluginError: a plugin fails to load or is not a :class:`Tracker` subclass of its name.
    """
    name = resolve_name(name, tracker_names(), "tracker")
    if name in TRACKERS:
        entry = importlib.metadata.EntryPoint(name, TRACKERS[name].target, TRACKER_GROUP)
    else:
        entry = entry_points(TRACKER_GROUP)[name]
    return load_entry_point(entry, "tracker", type, make=_tracker_class)


def tracker_help() -> str:
    """The ``--track`` help: every tracker, ``name[:ARG]: summary``, separated by `` | ``.

    Plugins are read by name only (loading them is left to a run that asks for one).
    """
    described = [f"{name}[:{entry.argument}]: {entry.summary}" for name, entry in TRACKERS.items()]
    described += [f"{name}: plugin" for name in tracker_names() if name not in TRACKERS]
    return "report the run to an experiment tracker, NAME[:ARG], repeatable: " + " | ".join(described)


@dataclasses.dataclass(frozen=True)
class TrackerSpec:
    """A tracker asked for by name: ``--track NAME[:ARG]`` as parsed (no tracker built yet).

    Attributes:
        name: the tracker's registered name.
        arg: the text after the first ``:`` (``None``: not given).
    """

    name: str
    arg: str | None = None

    def make(self) -> Tracker:
        """A new tracker of this spec (no I/O).

        Raises:
            MissingExtraError: its package is not installed (the message names the extra).
            UserError: an argument the tracker cannot take.
            PluginError: a plugin that fails to load.
        """
        return tracker_class(self.name)(self.arg)

    def __str__(self) -> str:
        return self.name if self.arg is None else f"{self.name}:{self.arg}"


def parse_tracker(text: str) -> TrackerSpec:
    """``NAME[:ARG]`` as a :class:`TrackerSpec` (the name checked, nothing imported).

    Raises:
        UnknownNameError: no tracker of that name (close names suggested).
        UserError: an empty ``ARG`` after ``:``.
    """
    name, colon, arg = str(text).partition(":")
    name = resolve_name(name.strip(), tracker_names(), "tracker")
    if colon and not arg.strip():
        argument = TRACKERS[name].argument if name in TRACKERS else "ARG"
        raise UserError(f"--track {text}: nothing after ':' (give {name}:{argument}, or {name} alone)")
    return TrackerSpec(name, arg.strip() if colon else None)


def make_trackers(
    items: Iterable[str | TrackerSpec | Tracker] | str | TrackerSpec | Tracker | None,
) -> list[Tracker]:
    """New trackers of ``items`` (``NAME[:ARG]`` texts or specs); trackers given are kept as they are.

    One item alone (``"tensorboard"``) is taken as a list of one, never as a sequence of letters.

    Raises:
        UnknownNameError, MissingExtraError, UserError, PluginError: as :func:`parse_tracker`
            and :meth:`TrackerSpec.make`.
        TypeError: an item of another type.
    """
    if isinstance(items, str | TrackerSpec | Tracker):
        items = [items]
    trackers = []
    for item in items or ():
        if isinstance(item, str):
            item = parse_tracker(item)
        if isinstance(item, TrackerSpec):
            item = item.make()
        if not isinstance(item, Tracker):
            raise TypeError(f"trackers: expected a tracker name or a Tracker, not {type(item).__name__}")
        trackers.append(item)
    return trackers
