"""The tracker interface: what a search sends to an experiment tracker, and when.

A tracker is a :class:`Tracker` subclass built from the optional argument of
``--track NAME[:ARG]`` (``Tracker(arg)``, ``arg`` ``None`` when not given). A search calls it
through :class:`~fooling.evo.trackers.tracking.Tracking`, from one background thread of the
driver, in this order:

1. :meth:`Tracker.check` (in the driver's own thread, before any work): refuse a place the
   tracker cannot use, as a :class:`~fooling.encodings.UserError` or an ``OSError``.
2. :meth:`Tracker.start` once per search: open the run (a new one, or, when resuming, the
   one the run folder names) and say which generation it already holds.
3. :meth:`Tracker.log_generation` for each generation not yet held, in order, then
   :meth:`Tracker.flush` (send what was buffered).
4. :meth:`Tracker.log_checkpoint` at every checkpoint: the elites picture and a few classes.
5. :meth:`Tracker.finish` once, at the end (also after a failure or Ctrl-C, with that status).

Any exception a tracker raises is caught: the search logs one warning and goes on, and the
tracker is called again at the next checkpoint (from :meth:`Tracker.start` if it never
started), with the generations it missed. A tracker never sees the archive, the RNG or the
model, so it cannot change what a search finds. A tracker object may be started again after
:meth:`Tracker.finish` for another search (``fooling retrain`` runs one per round).
"""

from __future__ import annotations

import abc
import dataclasses
import re
from collections.abc import Mapping
from typing import ClassVar

from fooling.encodings import UserError
from fooling.evo.config import RunConfig

__all__ = ["FINISH_STATUSES", "MissingExtraError", "TrackedRun", "Tracker", "safe_name"]

# The statuses :meth:`Tracker.finish` receives (MLflow's words for a run's end).
FINISH_STATUSES = ("FINISHED", "FAILED", "KILLED")


class MissingExtraError(UserError):
    """A tracker whose Python package is not installed; the message names the extra to install."""


@dataclasses.dataclass(frozen=True)
class TrackedRun:
    """What a tracker learns about the search it follows, once, at :meth:`Tracker.start`.

    Attributes:
        config: the run's configuration (log it as the run's parameters).
        out: the run folder (local path or storage URI); trackers keep their own small
            files there (e.g. the MLflow run id), written with ``fooling.evo.store.location``.
        name: the run's name: the last part of ``out`` (``a`` for ``runs/a``,
            ``round-2`` for a retraining round).
        model: how the model was built (reference, kind, input size, weights hash, ...;
            ``labels`` holds its class names, which come from the user's files).
        class_names: the name of each archive cell.
        first_generation: the first generation this process runs (0 for a new run;
            after a resume, the one after the checkpoint's).
    """

    config: RunConfig
    out: str
    name: str
    model: dict
    class_names: tuple[str, ...]
    first_generation: int


class Tracker(abc.ABC):
    """An experiment tracker a search reports to (see the module's documentation for the order).

    Subclasses set :attr:`name` (the ``--track`` name, equal to the entry point's name for a
    plugin), :attr:`summary` and :attr:`argument`, and take one optional positional
    argument: the ``ARG`` of ``--track NAME:ARG``. The constructor does no I/O; it raises
    :class:`MissingExtraError` when its package is missing and
    :class:`~fooling.encodings.UserError` for an argument it cannot take.

    Every method but :meth:`check` runs on the search's tracker thread, never two at once.
    """

    name: ClassVar[str] = ""
    summary: ClassVar[str] = ""
    argument: ClassVar[str] = ""  # what ARG is, for the help: "DIR", "TRACKING_URI" ("": none)

    def __init__(self, arg: str | None = None) -> None:
        self.arg = arg

    def check(self, out: str) -> None:  # noqa: B027 (optional hook: most trackers check nothing)
        """Before any work, in the caller's thread: refuse a place this tracker cannot use.

        Args:
            out: the run folder of the search (local path or URI).

        Raises:
            UserError: an argument that cannot work for this run (one line).
            OSError: a place that cannot be written.
        """

    @abc.abstractmethod
    def start(self, run: TrackedRun, resumed: bool) -> int:
        """Open this search's run; called once per search (again after a failure, at a checkpoint).

        Args:
            run: the search.
            resumed: the search continues a run folder's checkpoint; continue the tracker's
                run of that folder where there is one.

        Returns:
            The last generation the tracker's run already holds (-1: none); the generations
            after it are sent to :meth:`log_generation`, the earlier ones not again.
        """

    @abc.abstractmethod
    def log_generation(self, step: int, metrics: Mapping[str, float]) -> None:
        """One generation's statistics (may be buffered until :meth:`flush`).

        Args:
            step: the generation.
            metrics: ``{name: value}``: ``fitness/median``, ``fitness/mean``, ``fitness/max``,
                ``fitness/min``, ``archive/coverage``, ``archive/qd_score``,
                ``speed/evals_per_s``, ``budget/evaluations`` (so far) and, where the
                scoring counts them, ``budget/queries``.
        """

    def flush(self) -> None:  # noqa: B027 (optional hook: unbuffered trackers have nothing to send)
        """Send what :meth:`log_generation` buffered; called after each batch of generations."""

    @abc.abstractmethod
    def log_checkpoint(self, step: int, images: Mapping[str, bytes]) -> None:
        """The pictures of a checkpoint.

        Args:
            step: the checkpointed generation.
            images: ``{name: PNG bytes}``: ``elites`` (the picture of ``elites.png``) and
                ``class-ID-NAME`` thumbnails of a few classes (names reduced to letters,
                digits, ``-`` and ``_``).
        """

    @abc.abstractmethod
    def finish(self, artifacts: Mapping[str, bytes], status: str) -> None:
        """Close the run.

        Args:
            artifacts: ``{file name: bytes}`` of the run's report (``elites.png``,
                ``progress.png``, ``stats.parquet``); empty unless ``status`` is ``FINISHED``.
            status: one of :data:`FINISH_STATUSES`.
        """


_UNSAFE = re.compile(r"[^A-Za-z0-9_-]+")


def safe_name(text: str, limit: int = 40) -> str:
    """``text`` as letters, digits, ``-`` and ``_`` only (class names come from a user's files)."""
    return _UNSAFE.sub("_", str(text)).strip("_")[:limit] or "_"
