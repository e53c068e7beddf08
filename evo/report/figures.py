"""Pictures of a run: the elites as a labelled grid and confidence over generations."""

from __future__ import annotations

import io
import logging
import math

import numpy as np

# Figures are built with matplotlib.figure.Figure, never pyplot: no global backend is
# chosen at import (notebooks keep inline plots) and savefig picks Agg for PNG itself.
from matplotlib.figure import Figure

from fooling.evo.report.cells import checked_rows, decode_png
from fooling.evo.report.gallery import write_gallery
from fooling.evo.store.checkpoint import read_latest_rows
from fooling.evo.store.location import join, write_bytes
from fooling.evo.store.tables import read_stats

logger = logging.getLogger(__name__)


def figure_png(figure: Figure) -> bytes:
    """PNG bytes of ``figure`` (Agg, chosen by savefig for PNG; no global backend)."""
    buffer = io.BytesIO()
    figure.savefig(buffer, format="png", dpi=110, bbox_inches="tight")
    return buffer.getvalue()


def percent(probability: float) -> str:
    """``99.9987%`` near certainty (where the paper's thresholds lie), ``42.17%`` elsewhere."""
    return f"{100 * probability:.{4 if probability >= 0.999 else 2}f}%"


def elites_figure(rows: list[dict], max_tiles: int = 40) -> bytes:
    """PNG of the best ``max_tiles`` elites: image, class name, confidence.

    Args:
        rows: checkpoint rows checked by :func:`~fooling.evo.report.cells.checked_rows`.
        max_tiles: most elites shown.

    Raises:
        ValueError: a thumbnail that does not decode as a PNG.
    """
    # Few classes (MNIST): all of them in class order. Many (ImageNet): the best first.
    if len(rows) <= max_tiles:
        rows = sorted(rows, key=lambda row: row["class_id"])
    else:
        rows = sorted(rows, key=lambda row: -row["fitness"])[:max_tiles]
    columns = min(10, max(1, len(rows)))
    lines = max(1, math.ceil(len(rows) / columns))
    figure = Figure(figsize=(1.6 * columns, 1.9 * lines + 0.4), layout="constrained")
    axes = figure.subplots(lines, columns, squeeze=False)
    for axis in axes.flat:
        axis.axis("off")
    for axis, row in zip(axes.flat, rows):
        if row["image_png"]:
            image = np.asarray(decode_png(row["image_png"]))
            axis.imshow(image, cmap="gray" if image.ndim == 2 else None, vmin=0, vmax=255)
        # parse_math=False: a "$" in a label is text, not mathtext to parse.
        axis.set_title(f"{row['class_name'][:18]}\n{percent(row['fitness'])}", fontsize=8, parse_math=False)
    figure.suptitle("Elites: images and the network's confidence in their class", fontsize=10)
    return figure_png(figure)


def progress_figure(records: list[dict]) -> bytes:
    """PNG of median, mean and max elite confidence per generation."""
    figure = Figure(figsize=(6, 3.5))
    axis = figure.subplots()
    generations = [r["gen"] for r in records]
    for key, style in (("max", "-"), ("median", "-"), ("mean", "--"), ("min", ":")):
        axis.plot(generations, [100 * r[key] for r in records], style, label=key)
    axis.set_xlabel("generation")
    axis.set_ylabel("elite confidence (%)")
    axis.set_ylim(0, 100.5)
    axis.grid(alpha=0.3)
    axis.legend(loc="lower right")
    return figure_png(figure)


def write_report(out: str, *, max_tiles: int = 40) -> list[str]:
    """Write ``elites.png``, ``index.html`` (gallery of every cell) and ``progress.png`` into ``out``.

    The gallery's thumbnails go to ``out/thumbs/``. Every field read from the checkpoint is
    type-checked first (:func:`~fooling.evo.report.cells.checked_rows`): run folders may
    come from someone else.

    Returns:
        URIs of the files written (the thumbnails not listed).

    Raises:
        CheckpointError: the run has no readable checkpoint.
        UntrustedFieldError: the checkpoint holds a field a run never writes (one line).
    """
    contents = read_latest_rows(out)
    rows = checked_rows(contents.rows, contents.uri)
    # The gallery first: it decodes every thumbnail, and names the row of one that does not.
    gallery = write_gallery(out, rows, f"fooling: {out.rstrip('/').split('/')[-1]}", source=contents.uri)
    uri = join(out, "elites.png")
    write_bytes(uri, elites_figure(rows, max_tiles))
    written = [uri, gallery]
    records = read_stats(out, generations=contents.config.generations)
    if records:
        uri = join(out, "progress.png")
        write_bytes(uri, progress_figure(records))
        written.append(uri)
    return written
