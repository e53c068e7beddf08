"""PNG thumbnails of a run's elites, as checkpoints store them, rendered once per individual."""

from __future__ import annotations

import io
from collections.abc import Callable

import numpy as np
from PIL import Image

from fooling.encodings import GenomeBatch

# Genome bytes rendered at a time by default: what rendering thumbnails adds to a run's memory,
# whatever the size of the archive (checkpoints pass their row group size).
BATCH_GENOME_BYTES = 32 * 1024 * 1024
# Largest side of the thumbnails checkpoints store (readers refuse larger ones: a run never writes them).
THUMBNAIL_SIDE = 128


def thumbnail_png(image: np.ndarray, max_side: int = THUMBNAIL_SIDE) -> bytes:
    """PNG bytes of ``image`` ``(height, width)`` or ``(height, width, 3)`` uint8, at most ``max_side``."""
    picture = Image.fromarray(image)
    if max(picture.size) > max_side:
        picture.thumbnail((max_side, max_side), Image.Resampling.LANCZOS)
    buffer = io.BytesIO()
    picture.save(buffer, format="PNG", optimize=False)
    return buffer.getvalue()


class ThumbnailCache:
    """PNG thumbnails of the cells earlier checkpoints of one run wrote.

    A checkpoint then renders and encodes only the cells whose elite changed since (cheap for
    a 1,000-class run where few cells change between checkpoints).

    A cell's thumbnail is kept with the id of the individual it shows: ids are never reused
    within a run, so the same id is the same genome, hence the same image.

    Args:
        thumbnails: cell -> ``(individual id, PNG bytes)`` already written (a resumed run's
            :attr:`Checkpoint.thumbnails`); none by default.
        batch_bytes: genome bytes rendered at a time (what rendering adds to memory).

    Attributes:
        batch_bytes: as given.
        rendered: cells rendered so far (for tests and logs).
    """

    def __init__(
        self, thumbnails: dict[int, tuple[int, bytes]] | None = None, *, batch_bytes: int = BATCH_GENOME_BYTES
    ) -> None:
        self._png: dict[int, tuple[int, bytes]] = dict(thumbnails or {})
        self.batch_bytes = batch_bytes
        self.rendered = 0

    def thumbnails(
        self,
        cells: np.ndarray,
        individual_ids: np.ndarray,
        genomes: GenomeBatch,
        render: Callable[[GenomeBatch], np.ndarray],
    ) -> list[bytes]:
        """The PNG of each of ``cells``, rendering only those not cached for their individual.

        Args:
            cells: ``(n,)`` occupied cells, ascending.
            individual_ids: ``(n,)`` id of each cell's elite.
            genomes: the archive's genomes, one row per cell (only the stale cells' rows are
                copied out and rendered).
            render: genomes -> ``(m, height, width[, 3])`` uint8 images.
        """
        stale = [
            row
            for row, (cell, ident) in enumerate(zip(cells.tolist(), individual_ids.tolist()))
            if self._png.get(cell, (None, b""))[0] != ident
        ]
        # In batches, so that a first checkpoint of 1,000 ImageNet genomes never copies them all.
        step = max(1, self.batch_bytes // max(1, genome_row_bytes(genomes)))
        for start in range(0, len(stale), step):
            rows = stale[start : start + step]
            images = render(genomes.take(cells[np.asarray(rows, dtype=np.int64)]))
            for row, image in zip(rows, images):
                self._png[int(cells[row])] = (int(individual_ids[row]), thumbnail_png(image))
            self.rendered += len(rows)
        return [self._png[int(cell)][1] for cell in cells]


def genome_row_bytes(genomes: GenomeBatch | None) -> int:
    """Bytes of one genome of ``genomes`` (all fields); 0 for none."""
    if genomes is None:
        return 0
    return sum(array[0].nbytes if len(array) else 0 for array in genomes.arrays().values())
