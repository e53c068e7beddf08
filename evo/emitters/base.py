"""The emitter interface (:class:`Emitter`) and the paper's variation step (:func:`vary`)."""

from __future__ import annotations

from typing import TYPE_CHECKING, ClassVar, Protocol

import numpy as np
from deap import base

from fooling.encodings import GenomeBatch, UserError

if TYPE_CHECKING:
    from fooling.evo.archive import ClassArchive

__all__ = ["Emitter", "Refiner", "vary"]


def vary(
    toolbox: base.Toolbox,
    parents: GenomeBatch,
    rng: np.random.Generator,
    *,
    generation: int,
    crossover_probability: float = 0.0,
) -> GenomeBatch:
    """Children of ``parents``, one per row: optional crossover with a random partner, then mutation.

    Args:
        toolbox: the operators (``mutate``, optionally ``mate``; see
            :func:`~fooling.evo.toolbox.make_toolbox`).
        parents: ``batch_size`` genomes; not modified.
        rng: source of every random draw.
        generation: the current generation (for scheduled mutation rates).
        crossover_probability: chance each child is first crossed (``toolbox.mate``) with
            another parent of the batch.

    Returns:
        ``batch_size`` new genomes, row ``i`` the child of ``parents[i]``.
    """
    children = parents
    if crossover_probability > 0 and hasattr(toolbox, "mate") and len(parents) > 1:
        crossed = rng.random(len(parents)) < crossover_probability
        rows = np.flatnonzero(crossed)
        if rows.size:
            partners = parents.take(rng.integers(0, len(parents), size=rows.size))
            offspring, _ = toolbox.mate(parents.take(rows), partners, rng)
            children = parents.copy()
            children.assign(rows, offspring)
    return toolbox.mutate(children, rng, generation)


class Refiner(Protocol):
    """The scorer side an emitter's :meth:`Emitter.refine` may use.

    :class:`~fooling.evo.evaluation.Evaluator` is one.
    """

    def evaluate(self, genomes: GenomeBatch) -> np.ndarray:
        """Probabilities ``(batch_size, num_cells)`` float32 of the archive's classes."""
        ...

    def refine(
        self, genomes: GenomeBatch, cells: np.ndarray, *, steps: int, lr: float, keep_best: bool = False
    ) -> GenomeBatch:
        """Copies of ``genomes`` after ``steps`` Adam steps on their weights toward ``cells``' classes."""
        ...


class Emitter:
    """How a generation's children are made; subclass it and override what differs.

    Subclasses are usually frozen dataclasses (picklable, so Ray mutator actors receive
    them) whose fields are the emitter's settings. The default steps are the paper's:
    uniform parents, the toolbox's crossover and mutation, no refinement.

    Attributes:
        name: the ``--emitter`` name (lower case).
        summary: one line for ``--help`` and reports.
        needs: attributes (methods) the encoding must have, e.g. ``("perturb_weights",)``;
            :func:`check_emitter` refuses encodings without them.
    """

    name: ClassVar[str] = ""
    summary: ClassVar[str] = ""
    needs: ClassVar[tuple[str, ...]] = ()

    @property
    def evaluations_per_child(self) -> float:
        """Evaluations a varied child costs on average (its score: 1)."""
        return 1.0

    @property
    def refines(self) -> bool:
        """Whether this emitter refines children on the scorer's side (overrides :meth:`refine`)."""
        return type(self).refine is not Emitter.refine

    @property
    def learns(self) -> bool:
        """Whether this emitter learns from its children's gains (overrides :meth:`tell`)."""
        return type(self).tell is not Emitter.tell

    def select_parents(self, archive: ClassArchive, count: int, rng: np.random.Generator) -> np.ndarray:
        """The parent cells of ``count`` children, drawn with replacement from ``rng``.

        The default: uniform over the occupied cells (the paper's rule,
        :meth:`ClassArchive.sample_parents`).

        Args:
            archive: the archive as it was at the start of the generation (not modified).
            count: children of the generation.
            rng: the generation's selection generator.

        Returns:
            ``(count,)`` int64 cell indices.

        Raises:
            ValueError: the archive is empty.
        """
        return archive.sample_parents(count, rng)

    def vary(
        self,
        toolbox: base.Toolbox,
        parents: GenomeBatch,
        rng: np.random.Generator,
        *,
        generation: int,
        crossover_probability: float = 0.0,
        instructions: np.ndarray | None = None,
    ) -> GenomeBatch:
        """The children of one batch, row ``i`` the child of ``parents[i]``.

        The default: :func:`vary` (optional crossover, then mutation).

        Args:
            toolbox: the run's operators (see :func:`~fooling.evo.toolbox.make_toolbox`).
            parents: ``batch_size`` genomes; not modified.
            rng: the batch's generator (a function of seed, generation and batch index).
            generation: the current generation.
            crossover_probability: the run's ``--crossover-probability``.
            instructions: ``(batch_size, k)`` rows of what :meth:`instructions` returned for
                this batch's children; passed only when it returned an array.

        Returns:
            ``batch_size`` new genomes.
        """
        return vary(toolbox, parents, rng, generation=generation, crossover_probability=crossover_probability)

    def instructions(
        self, archive: ClassArchive, cells: np.ndarray, rng: np.random.Generator
    ) -> np.ndarray | None:
        """Per-child rows computed on the driver once per generation, after :meth:`select_parents`.

        Row ``i`` goes with child ``i`` to :meth:`vary` (on whichever process varies its
        batch). The default: ``None`` (nothing to send).

        Args:
            archive: the archive at the start of the generation (not modified).
            cells: ``(count,)`` parent cells from :meth:`select_parents`.
            rng: the generation's selection generator, after :meth:`select_parents` drew from it.

        Returns:
            ``(count, k)`` float64, or ``None``.
        """
        return None

    def tell(self, archive: ClassArchive, cells: np.ndarray, improvement: np.ndarray) -> None:
        """What the generation's children did, after they were inserted (driver side).

        The default ignores it (a stateless emitter); the search calls it only where
        :attr:`learns`.

        Args:
            archive: the archive after the generation (not modified).
            cells: ``(count,)`` parent cell of each child.
            improvement: ``(count,)`` float64, each child's largest gain over any cell's
                elite at the start of the generation (an empty cell counts 0; below 0: it
                improved nothing).
        """

    def state(self) -> dict:
        """What this emitter learnt so far, as a JSON object (stored in every checkpoint).

        The default: ``{}`` (a stateless emitter).
        """
        return {}

    def restore(self, state: dict) -> None:
        """Continue from :meth:`state` as a checkpoint stored it (``--resume``).

        Raises:
            UserError: ``state`` is not what this emitter writes (a damaged checkpoint).
        """
        if state:
            raise UserError(f"the checkpoint holds a state for --emitter {self.name}, which keeps none")

    def refine(
        self,
        children: GenomeBatch,
        parents: GenomeBatch,
        cells: np.ndarray,
        *,
        offset: int,
        refiner: Refiner,
    ) -> GenomeBatch:
        """The children of one batch after work on the scorer's side, just before they are scored.

        Must be a pure function of its arguments (no random draws, no state kept between
        calls), so that it gives the same children wherever and whenever it runs (in-process
        or on a Ray scorer actor). The default returns ``children`` unchanged.

        Args:
            children: ``batch_size`` children from :meth:`vary`; may be modified in place.
            parents: ``batch_size`` genomes, row ``i`` the parent of ``children[i]``; not modified.
            cells: ``(batch_size,)`` archive cell of each child's parent.
            offset: the generation row of ``children[0]``.
            refiner: the scorer side (e.g. :meth:`~fooling.evo.evaluation.Evaluator.refine`).

        Returns:
            ``batch_size`` genomes to score.
        """
        return children

    def check(self, *, workers: int, population: int | None = None) -> None:
        """Raise ``UserError`` (one line) when this emitter cannot run with these settings.

        The default accepts everything; the encoding's :attr:`needs` are checked by
        :func:`check_emitter`.
        """
