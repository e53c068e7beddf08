"""The generation loop, independent of where variation and scoring run."""

from __future__ import annotations

import dataclasses
import functools
import time
from collections.abc import Iterator
from typing import Protocol

import numpy as np
import torch
from deap import base, tools

from fooling.encodings import GenomeBatch, TensorGenomes
from fooling.evo.archive import BatchBest, ClassArchive
from fooling.evo.emitters import EMITTERS, Emitter, Refiner
from fooling.evo.on_device import DeviceRandom
from fooling.fitness import ModelRunError, error_line

__all__ = [
    "STATS_FIELDS",
    "Backend",
    "BackendError",
    "Candidates",
    "LocalBackend",
    "ParentPool",
    "Search",
    "Task",
    "Variation",
    "batch_rng",
    "selection_rng",
]

STATS_FIELDS = (
    "gen",
    "evals",
    "median",
    "mean",
    "max",
    "min",
    "coverage",
    "qd_score",
    "evals_per_s",
    "seconds",
)
# Stream keys keep the parent-selection draws apart from every batch's variation draws.
_VARIATION_STREAM = 0
_SELECTION_STREAM = 1


def batch_rng(seed: int, generation: int, batch_index: int) -> np.random.Generator:
    """The generator of one batch's variation: a pure function of its coordinates."""
    return np.random.default_rng([seed, generation, batch_index, _VARIATION_STREAM])


def selection_rng(seed: int, generation: int) -> np.random.Generator:
    """The generator of one generation's parent selection."""
    return np.random.default_rng([seed, generation, 0, _SELECTION_STREAM])


@dataclasses.dataclass
class Task:
    """One batch of children to make and score.

    A task names its parents by row in the generation's parent pool (the distinct
    parent cells, :class:`ParentPool`, whose genomes travel at most once per generation),
    so that what the driver sends per task is a small integer array, not ``count`` genomes.

    Attributes:
        generation, batch_index: coordinates that seed the batch's random draws.
        count: children in the batch.
        parent_rows: ``(count,)`` rows of the parent pool, or ``None`` for random
            genomes (generation 0).
        parent_cells: ``(count,)`` archive cell of each child's parent (the class a
            ``gradient`` emitter steers it toward), or ``None`` for random genomes.
        offset: the generation row of the batch's first child.
        instructions: ``(count, k)`` the emitter's rows for these children
            (:meth:`Emitter.instructions`), or ``None``.
    """

    generation: int
    batch_index: int
    count: int
    parent_rows: np.ndarray | None
    parent_cells: np.ndarray | None = None
    offset: int = 0
    instructions: np.ndarray | None = None


class Variation:
    """Makes a task's children with the toolbox; picklable, so mutator actors run it too.

    Args:
        toolbox: the operators.
        seed: root of every random stream.
        crossover_probability: the run's ``--crossover-probability``.
        emitter: how children are made.
        device: where the toolbox's genomes live when they are tensors
            (:func:`~fooling.evo.on_device.device_toolbox`): each batch then draws from a
            :class:`~fooling.evo.on_device.DeviceRandom` of its coordinates; ``None``: numpy
            genomes and the batch's numpy generator.
    """

    def __init__(
        self,
        toolbox: base.Toolbox,
        *,
        seed: int,
        crossover_probability: float = 0.0,
        emitter: Emitter = EMITTERS["paper"],
        device: torch.device | None = None,
    ) -> None:
        self.toolbox = toolbox
        self.seed = seed
        self.crossover_probability = crossover_probability
        self.emitter = emitter
        self.device = device

    def __call__(self, task: Task, pool: GenomeBatch | None) -> GenomeBatch:
        """The children of ``task``, whose parents are ``pool.take(task.parent_rows)``."""
        rng = batch_rng(self.seed, task.generation, task.batch_index)
        if self.device is not None:
            rng = DeviceRandom(rng, self.seed, task.generation, task.batch_index, self.device)
        if task.parent_rows is None:
            return self.toolbox.random(task.count, rng)
        parents = pool.take(task.parent_rows)
        # Passed only when there are some: an emitter without instructions need not take them.
        extra = {} if task.instructions is None else {"instructions": task.instructions}
        return self.emitter.vary(
            self.toolbox,
            parents,
            rng,
            generation=task.generation,
            crossover_probability=self.crossover_probability,
            **extra,
        )

    def refine(
        self, task: Task, children: GenomeBatch, pool: GenomeBatch | None, refiner: Refiner
    ) -> GenomeBatch:
        """``children`` of ``task`` after the emitter's :meth:`Emitter.refine` (where it has one).

        Args:
            task: the batch.
            children: its children from :meth:`__call__`; may be modified in place.
            pool: the generation's parent pool (``None`` in generation 0).
            refiner: the scorer side (an :class:`~fooling.evo.evaluation.Evaluator`).
        """
        if not self.emitter.refines or task.parent_cells is None:
            return children
        return self.emitter.refine(
            children, pool.take(task.parent_rows), task.parent_cells, offset=task.offset, refiner=refiner
        )


class ParentPool:
    """A generation's distinct parents: cells of the archive as the generation found it.

    Tasks name their parents by row of :attr:`cells`. The genomes are copied out of the
    archive only when a backend asks for :attr:`genomes`; a backend whose workers keep a
    replica of the archive sends the cells and the archive's changes instead.

    Args:
        archive: the archive at the start of the generation; backends read it, never write it.
        cells: ``(n,)`` distinct parent cells, ascending.
    """

    def __init__(self, archive: ClassArchive, cells: np.ndarray) -> None:
        self.archive = archive
        self.cells = cells

    @functools.cached_property
    def genomes(self) -> GenomeBatch | TensorGenomes:
        """``(n,)`` genomes of :attr:`cells`, where the archive keeps them (copied once)."""
        return self.archive.genomes.take(self.cells)


@dataclasses.dataclass
class Candidates:
    """The rows of a scored batch that can enter the archive, with their genomes.

    What a backend whose workers keep the children returns instead of the whole batch
    (:func:`~fooling.evo.archive.candidate_rows`): every row that can win a cell is here.

    Attributes:
        rows: ``(k,)`` ascending rows of the batch.
        genomes: their ``k`` genomes.
    """

    rows: np.ndarray
    genomes: GenomeBatch


class BackendError(OSError):
    """The backend cannot go on (e.g. a Ray actor kept crashing); the archive is intact.

    An ``OSError`` so that the command line reports it as one line, exit code 2.
    """


class Backend(Protocol):
    """Where children are made and scored."""

    def run(
        self, tasks: list[Task], parents: ParentPool | None
    ) -> Iterator[tuple[GenomeBatch | Candidates, np.ndarray | BatchBest]]:
        """Yield ``(children, scores)`` for each task, in task order.

        ``parents`` are the generation's distinct parents (``None`` in generation 0).
        ``children`` is the whole batch, or the :class:`Candidates` among it. ``scores`` are
        the probabilities ``(count, num_cells)``, or, where the emitter does not learn from
        every child (:attr:`Emitter.learns`), may be their :class:`BatchBest`.
        """
        ...

    def close(self) -> None:
        """Release the backend's workers (a no-op where there are none)."""
        ...

    @property
    def scoring_devices(self) -> tuple[torch.device, ...]:
        """The kinds of device its scorers run on (what splits a task into scoring calls)."""
        ...


class LocalBackend:
    """Everything in this process, one task after the other.

    With an emitter that refines its children (:attr:`Emitter.refines`), each batch of
    varied children goes through :meth:`Variation.refine`, with the evaluator as its
    refiner, before it is scored.
    """

    def __init__(self, variation: Variation, evaluator) -> None:
        self.variation = variation
        self.evaluator = evaluator

    @property
    def scoring_devices(self) -> tuple[torch.device, ...]:
        """This process's scoring device."""
        return (self.evaluator.scorer.device,)

    def run(
        self, tasks: list[Task], parents: ParentPool | None
    ) -> Iterator[tuple[GenomeBatch, np.ndarray | BatchBest]]:
        """Vary, refine (where the emitter says) and score each task in turn; see :meth:`Backend.run`.

        The scores are each cell's best row (reduced on the scoring device) unless the emitter
        learns from every child's.
        """
        pool = None if parents is None else parents.genomes
        learns = self.variation.emitter.learns
        for task in tasks:
            children = self.variation.refine(task, self.variation(task, pool), pool, self.evaluator)
            yield children, self.evaluator.evaluate_for(children, learns)

    def close(self) -> None:
        """Nothing to release: everything ran in this process."""


class Search:
    """MAP-Elites over class cells: one call to :meth:`step` is one generation.

    Generation 0 evaluates ``population`` random genomes; every later generation
    varies ``population`` parents drawn uniformly from occupied cells (drawn from the
    archive as it was at the start of the generation), scores the children batch by
    batch and inserts each batch, in batch order, by the paper's rule.

    Args:
        archive: the archive to fill (may hold a resumed run's elites).
        backend: runs the tasks.
        seed: root of every random stream.
        population: children per generation.
        batch_size: children per task.
        generation: the next generation to run (0 for a new run).
        next_id: the next unused individual id.
        logbook: per-generation statistics so far.
        emitter: picks the parent cells (:meth:`Emitter.select_parents`); a varied child
            costs its :attr:`Emitter.evaluations_per_child` (random genomes cost 1), logged
            as ``evals``.
    """

    def __init__(
        self,
        *,
        archive: ClassArchive,
        backend: Backend,
        seed: int,
        population: int,
        batch_size: int,
        generation: int = 0,
        next_id: int = 0,
        logbook: tools.Logbook | None = None,
        emitter: Emitter = EMITTERS["paper"],
    ) -> None:
        self.archive = archive
        self.backend = backend
        self.seed = seed
        self.population = population
        self.batch_size = batch_size
        self.generation = generation
        self.next_id = next_id
        if logbook is None:
            logbook = tools.Logbook()
            logbook.header = STATS_FIELDS
        self.logbook = logbook
        self.emitter = emitter
        self.inserting = False  # True while the archive holds a half-inserted generation

    @property
    def task_sizes(self) -> list[int]:
        """Children of each of a generation's tasks, in order: ``batch_size`` each, the last what is left."""
        return [
            min(self.batch_size, self.population - start)
            for start in range(0, self.population, self.batch_size)
        ]

    def tasks(self) -> tuple[list[Task], ParentPool | None, np.ndarray]:
        """This generation's tasks, their parents, and the parent cell of each child.

        Returns:
            ``(tasks, parents, parent_cells)``: ``parents`` are the distinct parent cells
            (``None`` for random genomes), ``parent_cells`` is ``(population,)``, -1 for
            random genomes.
        """
        starts = range(0, self.population, self.batch_size)
        counts = self.task_sizes
        if len(self.archive) == 0:
            parent_cells = np.full(self.population, -1, dtype=np.int32)
            tasks = [
                Task(self.generation, i, n, None, offset=start)
                for i, (start, n) in enumerate(zip(starts, counts))
            ]
            return tasks, None, parent_cells
        rng = selection_rng(self.seed, self.generation)
        parent_cells = self.emitter.select_parents(self.archive, self.population, rng).astype(np.int32)
        instructions = self.emitter.instructions(self.archive, parent_cells, rng)
        # Many children share a parent (with 10 classes, all 8000 children of a generation
        # have at most 10 parents): copy each parent once, not once per child.
        pool_cells, parent_rows = np.unique(parent_cells, return_inverse=True)
        parent_rows = parent_rows.astype(np.int32)
        tasks = [
            Task(
                self.generation,
                i,
                n,
                parent_rows[start : start + n],
                parent_cells[start : start + n],
                offset=start,
                instructions=None if instructions is None else instructions[start : start + n],
            )
            for i, (start, n) in enumerate(zip(starts, counts))
        ]
        return tasks, ParentPool(self.archive, pool_cells), parent_cells

    def _improvement(self, results: list[tuple[GenomeBatch, np.ndarray | BatchBest]]) -> np.ndarray:
        """Each child's gain over the elites as the generation found them, for :meth:`Emitter.tell`.

        Returns:
            ``(population,)`` float64, the largest over cells (an empty cell counts 0).
        """
        if any(isinstance(scores, BatchBest) for _, scores in results):
            raise RuntimeError(
                "the backend sent each cell's best row to an emitter that learns from every child"
            )
        before = np.where(np.isfinite(self.archive.fitness), self.archive.fitness, 0).astype(np.float64)
        gains = [(probabilities.astype(np.float64) - before).max(axis=1) for _, probabilities in results]
        return np.concatenate(gains) if gains else np.zeros(0)

    def step(self) -> dict:
        """Run one generation; return its statistics record.

        Raises:
            ModelRunError: the network failed while scoring this generation (the message
                names the generation); the archive is as the previous generation left it.
        """
        started = time.perf_counter()
        # All results first, then every insertion: an interruption while waiting leaves the
        # archive, and the emitter's state, exactly as the previous generation left them.
        learnt = self.emitter.state()
        try:
            tasks, parents, parent_cells = self.tasks()
            results = list(self.backend.run(tasks, parents))
        except ModelRunError as error:  # the network failed, not the search: say when
            self.emitter.restore(learnt)
            # One line; from a Ray actor the error's text ends in its type and message.
            reason = error_line(error, limit=None, last=True).split("ModelRunError: ", 1)[-1]
            raise ModelRunError(f"generation {self.generation}: {reason}") from error
        except BaseException:
            self.emitter.restore(learnt)
            raise
        parent_ids = np.where(parent_cells >= 0, self.archive.individual_id[parent_cells], -1)
        # Only an emitter that learns from its children needs their gains: (population, cells)
        # float64 work, 3 ms per generation of 400 ImageNet children on a 2-core CPU.
        learns = parents is not None and self.emitter.learns
        improvement = self._improvement(results) if learns else None
        self.inserting = True
        start = 0
        for task, (children, probabilities) in zip(tasks, results):
            rows = slice(start, start + task.count)
            some = isinstance(children, Candidates)  # only the rows that can win came back
            self.archive.add_batch(
                children.genomes if some else children,
                probabilities,
                rows=children.rows if some else None,
                individual_id=self.next_id + np.arange(start, start + task.count, dtype=np.int64),
                generation=self.generation,
                parent_id=parent_ids[rows],
                parent_cell=parent_cells[rows],
            )
            start += task.count
        if learns:
            self.emitter.tell(self.archive, parent_cells, improvement)
        seconds = time.perf_counter() - started
        self.inserting = False
        evaluations = round(self.population * (1 if parents is None else self.emitter.evaluations_per_child))
        record = dict(
            gen=self.generation,
            evals=evaluations,
            **self.archive.stats(),
            evals_per_s=evaluations / seconds,
            seconds=seconds,
        )
        self.logbook.record(**record)
        self.next_id += self.population
        self.generation += 1
        return record
