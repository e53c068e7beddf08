"""Replicas of the archive on the scorer actors' devices, so that parents never travel (``--vary-on scorer``).

Each scorer actor that makes its own children keeps the archive's genomes as
:class:`~fooling.encodings.TensorGenomes` on its device. Per generation the driver sends one
:class:`ArchiveSync` through the object store (read once per node): the cells whose elites
changed in the generations the replicas have not seen, with their genomes, and the elites'
fitness. Every replica applies the same rows, so all of them hold the driver's archive, and a
generation's parents are taken from the replica by cell. What crosses the network per
generation is the archive's changes (the all-gather of a distributed MAP-Elites), not the
parent pool; what comes back is the rows of each batch that can win a cell
(:func:`~fooling.evo.archive.candidate_rows`), not every child.

A replica that missed changes (its actor restarted, or a generation was abandoned) says so,
and the driver sends it the whole archive.
"""

from __future__ import annotations

import dataclasses

import numpy as np
import torch

from fooling.encodings import GenomeBatch, TensorGenomes
from fooling.evo.archive import ClassArchive

__all__ = ["ArchiveReplica", "ArchiveSync", "archive_sync"]


@dataclasses.dataclass
class ArchiveSync:
    """What brings a replica to the archive as generation :attr:`generation` found it.

    A child that won several cells travels once: :attr:`rows` says which of :attr:`genomes`
    each changed cell holds.

    Attributes:
        generation: the generation about to run.
        since: the generation whose starting archive the replica must hold to apply the
            changes; ``None``: the cells are every occupied one (a whole copy).
        cells: ``(k,)`` cells whose elites changed since then (all occupied cells for a copy).
        rows: ``(k,)`` the row of :attr:`genomes` each of those cells holds.
        genomes: the distinct elites of those cells, or ``None`` when ``k`` is 0.
        fitness: ``(num_cells,)`` float32 elite fitness at the start of :attr:`generation`.
    """

    generation: int
    since: int | None
    cells: np.ndarray
    rows: np.ndarray
    genomes: GenomeBatch | None
    fitness: np.ndarray

    @property
    def nbytes(self) -> int:
        """Bytes of genomes this sync carries."""
        if self.genomes is None:
            return 0
        return sum(array.nbytes for array in self.genomes.arrays().values())


def archive_sync(archive: ClassArchive, generation: int, since: int | None) -> ArchiveSync:
    """The changes of ``archive`` since the start of generation ``since`` (``None``: all of it).

    Every insertion stamps a cell with its generation (``birth_generation``), so the cells
    changed since the start of ``since`` are those born in ``since`` or later. Each distinct
    elite among them (by individual id) is sent once.

    Args:
        archive: the driver's archive, with its genomes on the host, at the start of ``generation``.
        generation: the generation about to run.
        since: the last generation whose starting archive every replica holds, or ``None``.
    """
    changed = archive.occupied if since is None else archive.occupied & (archive.birth_generation >= since)
    cells = np.flatnonzero(changed)
    # An individual id names one genome, whichever cells it won.
    _, first, rows = np.unique(archive.individual_id[cells], return_index=True, return_inverse=True)
    genomes = archive.genomes.take(cells[first]) if cells.size else None
    return ArchiveSync(generation, since, cells, rows.reshape(-1), genomes, archive.fitness.copy())


class ArchiveReplica:
    """One actor's copy of the archive's genomes on its device.

    Args:
        device: where the genomes live.
        num_cells: the archive's cells.
    """

    def __init__(self, device: torch.device, num_cells: int) -> None:
        self.device = device
        self.num_cells = num_cells
        self.genomes: TensorGenomes | None = None
        self.generation: int | None = None  # the generation whose starting archive this holds
        self._pool: tuple[int, TensorGenomes] | None = None  # (generation, parents on the device)

    def apply(self, sync: ArchiveSync) -> bool:
        """Bring the replica to the start of ``sync.generation``; ``False``: it lacks the changes' base.

        A whole copy always applies; changes apply to the archive they were taken against.
        Every call of a generation brings the same sync: the first one applies it.
        """
        if self.generation == sync.generation:
            return True  # an earlier call of this generation applied it (one archive per generation)
        if sync.since is None:
            self.genomes = None
        elif self.generation != sync.since:
            return False
        if sync.genomes is not None:
            rows = TensorGenomes.from_host(sync.genomes, self.device)
            if self.genomes is None:
                # Empty cells' rows stay unset: no parent selection reads them.
                self.genomes = rows.empty(self.num_cells)
            self.genomes.assign(sync.cells, rows, sync.rows)
        self.generation = sync.generation
        self._pool = None
        return True

    def parents(self, generation: int, cells: np.ndarray) -> TensorGenomes:
        """The genomes of ``cells`` (a generation's parent pool), taken once per generation.

        Raises:
            RuntimeError: the replica does not hold the archive of ``generation`` (a bug of the caller).
        """
        if self.generation != generation or self.genomes is None:
            raise RuntimeError(f"replica at generation {self.generation}, parents asked for {generation}")
        if self._pool is None or self._pool[0] != generation:
            self._pool = (generation, self.genomes.take(cells))
        return self._pool[1]
