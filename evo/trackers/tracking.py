"""Feeding trackers from a search without ever stopping or slowing it.

The driver's thread only appends records and hands over checkpoint rows (microseconds);
one background thread per search renders the pictures and calls the trackers. A tracker
that raises is logged once as a warning and skipped until the next checkpoint, when it is
tried again (started, if it never was) and given the generations it missed.
"""

from __future__ import annotations

import collections
import dataclasses
import io
import logging
import re
import threading
from collections.abc import Callable, Iterable, Mapping

import numpy as np
from PIL import Image

from fooling.encodings import GenomeBatch
from fooling.evo.archive import ClassArchive
from fooling.evo.config import RunConfig
from fooling.evo.report.figures import elites_figure, progress_figure
from fooling.evo.search import Search
from fooling.evo.store.location import join, read_bytes
from fooling.evo.store.thumbnails import ThumbnailCache
from fooling.fitness import LoadedModel, error_line
from fooling.fitness.sources import describe_model

from .base import FINISH_STATUSES, TrackedRun, Tracker, safe_name
from .registry import make_trackers

__all__ = ["METRIC_NAMES", "Tracking", "checkpoint_images", "elite_rows", "tracker_metrics"]

logger = logging.getLogger(__name__)

# Stats record field -> the metric name trackers receive ("queries" only where scoring counts them).
METRIC_NAMES = {
    "median": "fitness/median",
    "mean": "fitness/mean",
    "max": "fitness/max",
    "min": "fitness/min",
    "coverage": "archive/coverage",
    "qd_score": "archive/qd_score",
    "evals_per_s": "speed/evals_per_s",
    "queries": "budget/queries",
}
# Classes whose thumbnail is sent at each checkpoint (the same ones every time, spread over the cells).
THUMBNAIL_CLASSES = 8
# Smallest side of the thumbnails sent (MNIST's 28 pixels are enlarged, pixel for pixel).
THUMBNAIL_MIN_SIDE = 112
# Seconds the end of a search waits for its trackers to send what they hold.
FINISH_WAIT_S = 30.0
# Checkpoints whose pictures wait for a slow tracker thread; past this the oldest are not sent.
PENDING_CHECKPOINTS = 4
# user:password@ in a URI, never shown in a warning.
_CREDENTIALS = re.compile(r"(//)[^/@\s]+@")


def tracker_metrics(record: Mapping[str, float], evaluations: int) -> dict[str, float]:
    """The metrics of one stats record (see :meth:`Tracker.log_generation`).

    Args:
        record: a generation's statistics (:attr:`fooling.evo.search.STATS_FIELDS`, and
            ``queries`` where counted).
        evaluations: evaluations of the run up to and including this generation.
    """
    metrics = {name: float(record[key]) for key, name in METRIC_NAMES.items() if key in record}
    metrics["budget/evaluations"] = float(evaluations)
    return metrics


def elite_rows(
    archive: ClassArchive, thumbnails: ThumbnailCache, render: Callable[[GenomeBatch], np.ndarray]
) -> list[dict]:
    """One row per occupied cell, as the report reads them from a checkpoint.

    Args:
        archive: the elites.
        thumbnails: the run's thumbnail cache, just filled by the checkpoint (so nothing is
            rendered again).
        render: genomes -> ``(n, height, width[, 3])`` uint8 images, for cells not cached.

    Returns:
        ``{"class_id", "class_name", "fitness", "image_png"}`` per occupied cell, ``class_id``
        being the cell.
    """
    cells = archive.occupied_cells()
    if len(cells) == 0:
        return []
    pictures = thumbnails.thumbnails(cells, archive.individual_id[cells], archive.genomes, render)
    return [
        dict(class_id=int(cell), class_name=archive.class_names[cell], fitness=float(archive.fitness[cell]),
             image_png=png)
        for cell, png in zip(cells.tolist(), pictures)
    ]  # fmt: skip


def _enlarged_png(data: bytes) -> bytes:
    """The PNG ``data`` enlarged pixel for pixel until its smaller side reaches :data:`THUMBNAIL_MIN_SIDE`."""
    picture = Image.open(io.BytesIO(data), formats=["PNG"])
    factor = -(-THUMBNAIL_MIN_SIDE // max(1, min(picture.size)))
    if factor <= 1:
        return data
    picture = picture.resize((picture.width * factor, picture.height * factor), Image.Resampling.NEAREST)
    buffer = io.BytesIO()
    picture.save(buffer, format="PNG")
    return buffer.getvalue()


def checkpoint_images(rows: list[dict], num_cells: int) -> dict[str, bytes]:
    """The pictures of a checkpoint: ``elites`` and up to :data:`THUMBNAIL_CLASSES` classes.

    Args:
        rows: :func:`elite_rows`.
        num_cells: cells of the archive (the classes shown are spread evenly over them, so the
            same ones come back at every checkpoint).

    Returns:
        ``{"elites": PNG, "class-CELL-NAME": PNG, ...}``.
    """
    images = {"elites": elites_figure(rows)} if rows else {}
    by_cell = {row["class_id"]: row for row in rows}
    shown = np.unique(np.linspace(0, max(0, num_cells - 1), min(THUMBNAIL_CLASSES, num_cells)).round())
    for cell in shown.astype(int).tolist():
        row = by_cell.get(cell)
        if row is not None and row["image_png"]:
            images[f"class-{cell:04d}-{safe_name(row['class_name'])}"] = _enlarged_png(row["image_png"])
    return images


@dataclasses.dataclass
class _State:
    """Where one tracker stands in a search."""

    tracker: Tracker
    started: bool = False
    logged: int = -1  # last generation the tracker holds
    failed: bool = False


class Tracking:
    """The trackers of one search, fed from a background thread; none of their failures reach the search.

    Without trackers every method does nothing. With some: :meth:`check` (before any work),
    :meth:`start`, then :meth:`generation` after each generation and :meth:`checkpoint` after
    each checkpoint, and :meth:`finish` at the end, whatever the end.

    Args:
        trackers: trackers, ``NAME[:ARG]`` texts or :class:`~fooling.evo.trackers.TrackerSpec` s.

    Raises:
        UnknownNameError, MissingExtraError, UserError, PluginError: see
            :func:`~fooling.evo.trackers.make_trackers`.

    Attributes:
        finish_wait_s: seconds :meth:`finish` waits for the trackers to send what they hold.
    """

    def __init__(self, trackers: Iterable | None = None) -> None:
        self.trackers = make_trackers(trackers)
        self.finish_wait_s = FINISH_WAIT_S
        self._states = [_State(tracker) for tracker in self.trackers]
        self._wake = threading.Condition()
        self._items: list[tuple[int, dict[str, float]]] = []  # (generation, metrics)
        self._records: list[dict] = []
        self._evaluations = 0
        self._seen = 0
        # Checkpoints not yet sent, (generation, rows); the oldest are dropped past the bound.
        self._checkpoints: collections.deque = collections.deque(maxlen=PENDING_CHECKPOINTS)
        self._last_rows: list[dict] = []  # the last checkpoint's rows (the final elites.png)
        self._status: str | None = None
        self._thread: threading.Thread | None = None
        self._abandoned = threading.Event()
        self._run: TrackedRun | None = None
        self._resumed = False

    def __bool__(self) -> bool:
        return bool(self.trackers)

    def check(self, out: str) -> None:
        """Before any work: each tracker's :meth:`~Tracker.check` of run folder ``out``.

        Raises:
            UserError, OSError: a tracker that cannot work for this run (one line).
        """
        for tracker in self.trackers:
            tracker.check(out)

    def start(
        self,
        config: RunConfig,
        model: LoadedModel,
        archive: ClassArchive,
        *,
        first_generation: int,
        resumed: bool,
        records: Iterable[Mapping],
    ) -> None:
        """Start the background thread; the trackers are started there.

        Args:
            config: the run.
            model: its classifier.
            archive: its archive (for its cells' names).
            first_generation: the first generation this process runs.
            resumed: the run continues a checkpoint.
            records: the stats records the run already has (a resumed run's), sent to
                trackers that do not hold them yet.
        """
        if not self.trackers:
            return
        out = config.out
        model_record = describe_model(config.model, model)
        self._run = TrackedRun(
            config,
            out,
            out.rstrip("/").split("/")[-1],
            model_record,
            tuple(archive.class_names),
            first_generation,
        )
        self._resumed = resumed
        for record in records:
            self._add(record)
        self._thread = threading.Thread(target=self._work, name="fooling-trackers", daemon=True)
        self._thread.start()

    def _add(self, record: Mapping) -> None:
        self._evaluations += int(record.get("evals", 0))
        self._items.append((int(record["gen"]), tracker_metrics(record, self._evaluations)))
        self._records.append(dict(record))

    def generation(self, record: Mapping) -> None:
        """A generation's stats record (:meth:`fooling.evo.search.Search.step`'s); never raises."""
        if self._thread is None:
            return
        try:
            with self._wake:
                self._add(record)
                self._wake.notify()
        except Exception as error:  # a tracker never stops the search
            logger.debug("trackers: generation record skipped: %s", error_line(error))

    def observer(self, then: Callable[[Search], None] | None = None) -> Callable[[Search], None] | None:
        """An ``on_generation`` for :func:`~fooling.evo.run.evolve`: sends the record, then calls ``then``.

        Without trackers, ``then`` itself.
        """
        if not self.trackers:
            return then

        def observe(search: Search) -> None:
            self.generation(search.logbook[-1])
            if then is not None:
                then(search)

        return observe

    def checkpoint(
        self,
        step: int,
        archive: ClassArchive,
        thumbnails: ThumbnailCache,
        render: Callable[[GenomeBatch], np.ndarray],
    ) -> None:
        """A checkpoint of generation ``step`` was written: send its pictures; never raises.

        Args:
            step: the checkpointed generation.
            archive: the elites (read here, in the caller's thread).
            thumbnails: the thumbnails the checkpoint just wrote.
            render: renders genomes (only for cells the cache lacks, normally none).
        """
        if self._thread is None:
            return
        try:
            rows = elite_rows(archive, thumbnails, render)
            with self._wake:
                self._checkpoints.append((step, rows))
                self._wake.notify()
        except Exception as error:
            logger.debug("trackers: checkpoint pictures skipped: %s", error_line(error))

    def finish(self, status: str = "FINISHED") -> None:
        """End the trackers' runs and wait for them (at most :attr:`finish_wait_s` seconds).

        Args:
            status: one of :data:`~fooling.evo.trackers.FINISH_STATUSES`; with ``FINISHED``
                the report's files are sent too.
        """
        if self._thread is None:
            return
        if status not in FINISH_STATUSES:
            raise ValueError(f"status {status!r} is not one of {FINISH_STATUSES}")
        with self._wake:
            self._status = status
            self._wake.notify()
        self._thread.join(self.finish_wait_s)
        if self._thread.is_alive():
            # The thread ends after the call it is in: nothing of this search reaches the
            # trackers after this (a resumed search in this process opens them afresh).
            self._abandoned.set()
            logger.warning(
                "trackers: still sending after %.0f s; the run ends without waiting for them",
                self.finish_wait_s,
            )
        self._thread = None

    # --- the background thread ------------------------------------------------------------------

    def _work(self) -> None:
        while True:
            with self._wake:
                while len(self._items) == self._seen and not self._checkpoints and self._status is None:
                    self._wake.wait()
                items = list(self._items)
                self._seen = len(items)
                checkpoints = list(self._checkpoints)
                self._checkpoints.clear()
                status = self._status
            if checkpoints:
                self._last_rows = checkpoints[-1][1]
            cells = len(self._run.class_names)
            # Each checkpoint's pictures are rendered once, for every tracker that gets them.
            pictures = [
                (step, _Once(lambda rows=rows, n=cells: checkpoint_images(rows, n)))
                for step, rows in checkpoints
            ]
            for state in self._states:
                # A failed tracker waits for the next checkpoint (or the end) to be tried again.
                if state.failed and not checkpoints and status is None:
                    continue
                self._attempt(state, items, pictures)
            if status is not None:
                self._end(status)
                return

    def _attempt(self, state: _State, items: list, pictures: list[tuple[int, _Once]]) -> None:
        tracker = state.tracker
        if self._abandoned.is_set():
            return
        try:
            if not state.started:
                state.logged = int(tracker.start(self._run, self._resumed))
                state.started = True
            new = [(step, metrics) for step, metrics in items if step > state.logged]
            for step, metrics in new:
                tracker.log_generation(step, metrics)
            if new:
                tracker.flush()
                state.logged = new[-1][0]
            for step, images in pictures:
                tracker.log_checkpoint(step, images())
        except Exception as error:  # any failure of a tracker: the search goes on
            self._failed(state, error)
            return
        if state.failed:
            logger.info("tracker %s works again (generations up to %d sent)", tracker.name, state.logged)
            state.failed = False

    def _failed(self, state: _State, error: Exception) -> None:
        if not state.failed:
            reason = _CREDENTIALS.sub(r"\1***@", f"{type(error).__name__}: {error_line(error)}")
            logger.warning(
                "tracker %s failed (%s); the search goes on and the tracker is tried again at the next "
                "checkpoint",
                state.tracker.name,
                reason,
            )
        else:
            logger.debug("tracker %s still failing: %s", state.tracker.name, error_line(error))
        state.failed = True

    def _end(self, status: str) -> None:
        artifacts = _Once(lambda: self._artifacts() if status == "FINISHED" else {})
        for state in self._states:
            if not state.started or self._abandoned.is_set():
                continue  # never reached (or given up on): nothing to close
            try:
                state.tracker.finish(artifacts(), status)
            except Exception as error:
                self._failed(state, error)

    def _artifacts(self) -> dict[str, bytes]:
        """The report's files: ``elites.png`` (last checkpoint), ``progress.png``, ``stats.parquet``."""
        files: dict[str, bytes] = {}
        if self._last_rows:
            files["elites.png"] = elites_figure(self._last_rows)
        if self._records:
            files["progress.png"] = progress_figure(self._records)
        try:
            files["stats.parquet"] = read_bytes(join(self._run.out, "stats.parquet"))
        except OSError as error:
            logger.debug("trackers: no stats.parquet to send: %s", error_line(error))
        return files


class _Once:
    """A value computed on first use and kept (a checkpoint's pictures are rendered once for all trackers)."""

    def __init__(self, make: Callable[[], object]) -> None:
        self._make = make
        self._done = False
        self._value = None

    def __call__(self):
        if not self._done:
            self._value = self._make()
            self._done = True
        return self._value
