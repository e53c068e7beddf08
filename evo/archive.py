"""The MAP-Elites archive of the paper: one cell per class, the cell's fitness is that class's probability."""

from __future__ import annotations

import dataclasses
import enum

import numpy as np
import torch

from fooling.encodings import GenomeBatch

__all__ = ["AddStatus", "BatchBest", "ClassArchive", "best_rows", "candidate_rows"]


class AddStatus(enum.IntEnum):
    """What :meth:`ClassArchive.add_batch` did with each row, best outcome over all cells."""

    NOT_ADDED = 0
    IMPROVED = 1  # holds at least one cell that had an occupant
    NEW = 2  # holds at least one cell that was empty


@dataclasses.dataclass(frozen=True)
class BatchBest:
    """Each cell's best row of a scored batch: all the paper's insertion rule needs of its scores.

    A scorer that keeps its probabilities on a device reduces them there (one value and one
    index per cell, where the whole matrix is ``batch_size x num_cells``) and sends this.

    Attributes:
        size: rows in the batch.
        row: ``(num_cells,)`` int64, the first row with the cell's highest probability.
        probability: ``(num_cells,)`` float32, that probability (``-inf``: no row scored the
            class, as in a top-k answer).
    """

    size: int
    row: np.ndarray
    probability: np.ndarray

    @classmethod
    def of(cls, probabilities: np.ndarray) -> BatchBest:
        """The best rows of ``probabilities`` ``(batch_size, num_cells)`` (first row on ties)."""
        size, cells = probabilities.shape
        if size == 0:
            return cls(0, np.zeros(cells, np.int64), np.full(cells, -np.inf, np.float32))
        row = probabilities.argmax(axis=0).astype(np.int64)
        return cls(size, row, probabilities[row, np.arange(cells)].astype(np.float32))

    @classmethod
    def of_tensor(cls, probabilities: torch.Tensor) -> BatchBest:
        """:meth:`of` reduced on ``probabilities``' device; only the result goes to the host.

        The same rows and values (torch's ``max`` along a dimension takes the first row on
        ties, as numpy's ``argmax``).
        """
        size, cells = probabilities.shape
        if size == 0:
            return cls.of(np.zeros((0, cells), np.float32))
        value, row = probabilities.max(dim=0)
        return cls(size, row.cpu().numpy(), value.float().cpu().numpy())


def best_rows(probabilities: np.ndarray, fitness: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Each cell's best row of a scored batch, its probability, and whether it beats ``fitness``.

    The paper's rule for one batch (:meth:`ClassArchive.add_batch`): a cell goes to the row
    with the highest probability, the first such row on ties, when that probability (as
    float32, the archive's precision) is strictly higher than the elite's.

    Args:
        probabilities: ``(batch_size, num_cells)`` class probabilities, or their
            :class:`BatchBest`.
        fitness: ``(num_cells,)`` float32 elite fitness, ``-inf`` where empty.

    Returns:
        ``(best_row, best, won)``: ``(num_cells,)`` int row, float32 probability, bool.
    """
    best = probabilities if isinstance(probabilities, BatchBest) else BatchBest.of(probabilities)
    return best.row, best.probability, best.probability > fitness


def candidate_rows(probabilities: np.ndarray | BatchBest, fitness: np.ndarray) -> np.ndarray:
    """The rows of a scored batch that can enter an archive whose elites are at least ``fitness``.

    Elites only improve, so with ``fitness`` taken before a generation's first insertion these
    rows hold every row that :meth:`ClassArchive.add_batch` inserts from the batch later in the
    generation: a worker that keeps its children sends only these (``rows`` of ``add_batch``).

    Args:
        probabilities: ``(batch_size, num_cells)`` class probabilities, or their :class:`BatchBest`.
        fitness: ``(num_cells,)`` float32 elite fitness, ``-inf`` where empty.

    Returns:
        ``(k,)`` int64 rows, ascending, distinct.
    """
    best_row, _, won = best_rows(probabilities, fitness)  # an empty batch's reduction wins no cell
    return np.unique(best_row[won]).astype(np.int64)


class ClassArchive:
    """One elite per class, stored as a structure of arrays.

    Args:
        class_names: one name per cell, e.g. the classifier's class names.

    Attributes:
        fitness: ``(num_cells,)`` float32, the elite's probability of its cell's class
            (``-inf`` where empty).
        occupied: ``(num_cells,)`` bool.
        genomes: a genome batch of ``num_cells`` rows, ``None`` until the first insertion.
        individual_id: ``(num_cells,)`` int64, unique id of each elite (-1 where empty).
        parent_id: ``(num_cells,)`` int64, id of the elite it was varied from (-1 for
            random initial genomes).
        parent_cell: ``(num_cells,)`` int32, the cell its parent was drawn from (-1 if none).
        birth_generation: ``(num_cells,)`` int32, generation in which it was evaluated.
    """

    def __init__(self, class_names: tuple[str, ...] | list[str]) -> None:
        if not class_names:
            raise ValueError("an archive needs at least one class")
        self.class_names = tuple(class_names)
        cells = len(self.class_names)
        self.fitness = np.full(cells, -np.inf, dtype=np.float32)
        self.occupied = np.zeros(cells, dtype=bool)
        self.individual_id = np.full(cells, -1, dtype=np.int64)
        self.parent_id = np.full(cells, -1, dtype=np.int64)
        self.parent_cell = np.full(cells, -1, dtype=np.int32)
        self.birth_generation = np.full(cells, -1, dtype=np.int32)
        self.genomes: GenomeBatch | None = None

    @property
    def num_cells(self) -> int:
        """Number of cells, one per class."""
        return len(self.class_names)

    def __len__(self) -> int:
        """Number of occupied cells."""
        return int(self.occupied.sum())

    def add_batch(
        self,
        genomes: GenomeBatch,
        probabilities: np.ndarray | BatchBest,
        *,
        individual_id: np.ndarray,
        generation: int,
        parent_id: np.ndarray | None = None,
        parent_cell: np.ndarray | None = None,
        rows: np.ndarray | None = None,
    ) -> np.ndarray:
        """Insert a batch by the paper's rule: a row takes EVERY cell where it beats the elite.

        Within the batch, a cell goes to the row with the highest probability (the
        first such row on ties), and only if that probability is strictly higher
        than the current elite's: the same result as inserting rows one by one.

        Args:
            genomes: ``batch_size`` genomes, or with ``rows`` only those rows of the batch.
            probabilities: ``(batch_size, num_cells)`` class probabilities; ``-inf`` where a
                class was not scored (top-k answers): such a cell is left as it is. Or their
                :class:`BatchBest`, all the rule reads of them.
            individual_id: ``(batch_size,)`` int64 unique ids of the rows.
            generation: generation the batch was evaluated in.
            parent_id: ``(batch_size,)`` ids of the parents, -1 for none (default all -1).
            parent_cell: ``(batch_size,)`` parent cells, -1 for none (default all -1).
            rows: ``(k,)`` ascending rows of the batch that ``genomes`` holds, a superset of
                the rows that win a cell (:func:`candidate_rows`); ``None``: all rows.

        Returns:
            ``(batch_size,)`` int8 array of :class:`AddStatus` values.

        Raises:
            ValueError: ``probabilities`` is not ``(batch_size, num_cells)`` or not finite, or
                ``genomes`` does not hold ``rows``.
            RuntimeError: a winning row is not among ``rows`` (a bug of the backend that chose them).
        """
        if isinstance(probabilities, BatchBest):
            scored, values = probabilities.size, probabilities.probability
            shape = f"{scored} rows of best rows {probabilities.row.shape} and values {values.shape}"
            fits = probabilities.row.shape == values.shape == (self.num_cells,)
        else:
            scored, values = len(probabilities), probabilities
            shape = f"shape {probabilities.shape}"
            fits = probabilities.ndim == 2 and probabilities.shape[1] == self.num_cells
        batch = len(genomes) if rows is None else scored
        if rows is not None and len(rows) != len(genomes):
            raise ValueError(f"{len(genomes)} genomes for {len(rows)} rows")
        if not fits or scored != batch:
            raise ValueError(f"probabilities of {shape}, expected ({batch}, {self.num_cells})")
        # -inf: a class the scorer did not return (an endpoint's top-k answer), never inserted.
        if np.isnan(values).any() or np.isposinf(values).any():
            raise ValueError("probabilities must be finite (or -inf for a class not scored)")
        status = np.zeros(batch, dtype=np.int8)
        if batch == 0:
            return status
        best_row, best, won = best_rows(probabilities, self.fitness)
        cells = np.flatnonzero(won)
        if cells.size == 0:
            return status
        winners = best_row[cells]
        source_rows = winners
        if rows is not None:
            source_rows = np.minimum(np.searchsorted(rows, winners), max(len(rows) - 1, 0))
            if len(rows) == 0 or not np.array_equal(rows[source_rows], winners):
                missing = np.setdiff1d(winners, rows).tolist()
                raise RuntimeError(f"rows {missing} win a cell but were not sent")
        was_empty = ~self.occupied[cells]
        if self.genomes is None:
            self.genomes = genomes.take(np.zeros(self.num_cells, dtype=np.int64))
        self.genomes.assign(cells, genomes, source_rows)
        self.fitness[cells] = best[cells]
        self.occupied[cells] = True
        self.individual_id[cells] = individual_id[winners]
        none = np.full(batch, -1)
        self.parent_id[cells] = (none if parent_id is None else parent_id)[winners]
        self.parent_cell[cells] = (none if parent_cell is None else parent_cell)[winners]
        self.birth_generation[cells] = generation
        new = np.where(was_empty, AddStatus.NEW, AddStatus.IMPROVED).astype(np.int8)
        np.maximum.at(status, winners, new)
        return status

    def occupied_cells(self) -> np.ndarray:
        """Indices of occupied cells, ascending."""
        return np.flatnonzero(self.occupied)

    def sample_parents(self, count: int, rng: np.random.Generator) -> np.ndarray:
        """``count`` cells drawn uniformly, with replacement, among occupied ones.

        Raises:
            ValueError: the archive is empty.
        """
        cells = self.occupied_cells()
        if cells.size == 0:
            raise ValueError("cannot sample parents from an empty archive")
        return cells[rng.integers(0, cells.size, size=count)]

    def elite_fitness(self) -> np.ndarray:
        """Fitness of occupied cells, ``(num_occupied,)``."""
        return self.fitness[self.occupied]

    def stats(self) -> dict[str, float]:
        """Median, mean, max and min elite fitness, coverage and QD score (sum of fitness)."""
        values = self.elite_fitness().astype(np.float64)
        if values.size == 0:
            return dict(median=np.nan, mean=np.nan, max=np.nan, min=np.nan, coverage=0.0, qd_score=0.0)
        return dict(
            median=float(np.median(values)),
            mean=float(values.mean()),
            max=float(values.max()),
            min=float(values.min()),
            coverage=float(values.size / self.num_cells),
            qd_score=float(values.sum()),
        )

    def equals(self, other: ClassArchive) -> bool:
        """True when both archives hold bit-identical elites, fitness and lineage."""
        if self.class_names != other.class_names:
            return False
        same = all(
            np.array_equal(getattr(self, name), getattr(other, name))
            for name in (
                "fitness",
                "occupied",
                "individual_id",
                "parent_id",
                "parent_cell",
                "birth_generation",
            )
        )
        if not same:
            return False
        if self.genomes is None or other.genomes is None:
            return self.genomes is None and other.genomes is None
        cells = self.occupied_cells()
        return self.genomes.take(cells).equals(other.genomes.take(cells))

    def data(self):
        """The occupied cells as a pandas DataFrame (no genomes), for notebooks."""
        import pandas as pd  # optional heavy dependency: only notebooks ask for a DataFrame

        cells = self.occupied_cells()
        return pd.DataFrame(
            {
                "class_id": cells,
                "class_name": [self.class_names[c] for c in cells],
                "fitness": self.fitness[cells],
                "individual_id": self.individual_id[cells],
                "parent_id": self.parent_id[cells],
                "parent_cell": self.parent_cell[cells],
                "birth_generation": self.birth_generation[cells],
            }
        )
