"""Experiment trackers: a search reported live to TensorBoard, MLflow or a plugin (``--track``).

``--track NAME[:ARG]`` (repeatable) on ``fooling evolve``, ``retrain`` and ``audit``, and
``evolve(config, trackers=["tensorboard", "mlflow:sqlite:///mlflow.db"])`` in Python, send
each generation's statistics, each checkpoint's elites picture and a few class thumbnails,
the run's configuration and model once, and the report's files at the end, to each tracker.

Built in (each an optional extra, imported only when asked for):

* ``tensorboard[:DIR]``: event files for TensorBoard, in ``OUT/tensorboard`` by default; a
  ``DIR`` shared by runs gets one folder per run (``DIR/NAME``, NAME the run folder's name).
  ``pip install 'fooling[tensorboard]'``.
* ``mlflow[:TRACKING_URI]``: an MLflow run (``sqlite:///FILE``, ``http://HOST:PORT``, a
  folder...; default MLflow's own, ``MLFLOW_TRACKING_URI`` or a local store). The run's id is
  kept in ``OUT/mlflow.json`` so that a resumed run continues it. ``pip install 'fooling[mlflow]'``.

Third-party trackers register through the entry-point group ``fooling.trackers``: the entry
point's name is the ``--track`` name and it loads a :class:`Tracker` subclass of that
:attr:`~Tracker.name` (see :mod:`fooling.evo.trackers.base` for the interface). A tracker that
fails never stops or slows the search (:class:`Tracking`).
"""

from __future__ import annotations

from .base import FINISH_STATUSES, MissingExtraError, TrackedRun, Tracker, safe_name
from .registry import (
    TRACKER_GROUP,
    TRACKERS,
    TrackerEntry,
    TrackerSpec,
    make_trackers,
    parse_tracker,
    registered_trackers,
    tracker_class,
    tracker_help,
    tracker_names,
)
from .tracking import Tracking, checkpoint_images, elite_rows, tracker_metrics

__all__ = [
    "FINISH_STATUSES",
    "TRACKERS",
    "TRACKER_GROUP",
    "MissingExtraError",
    "TrackedRun",
    "Tracker",
    "TrackerEntry",
    "TrackerSpec",
    "Tracking",
    "checkpoint_images",
    "elite_rows",
    "make_trackers",
    "parse_tracker",
    "registered_trackers",
    "safe_name",
    "tracker_class",
    "tracker_help",
    "tracker_metrics",
    "tracker_names",
]
