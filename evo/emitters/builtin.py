"""The paper's emitter and four variants built on it: ``finetune``, ``gradient``, ``ascent``, ``focus``."""

from __future__ import annotations

import dataclasses
from typing import TYPE_CHECKING, ClassVar

import numpy as np
from deap import base

from fooling.encodings import GenomeBatch, UserError
from fooling.fitness.weight_ascent import FORWARD_BACKWARD_COST

from .base import Emitter, Refiner

if TYPE_CHECKING:
    from fooling.evo.archive import ClassArchive

__all__ = ["AscentEmitter", "FinetuneEmitter", "FocusEmitter", "GradientEmitter", "PaperEmitter"]


@dataclasses.dataclass(frozen=True)
class PaperEmitter(Emitter):
    """The paper's mutation of uniformly chosen elites."""

    name: ClassVar[str] = "paper"
    summary: ClassVar[str] = "the paper's mutation of a uniformly chosen elite"


@dataclasses.dataclass(frozen=True)
class FinetuneEmitter(Emitter):
    """The paper's children, then a share of them replaced by weight perturbations of their parents.

    Attributes:
        finetune_fraction: chance each child is a weight perturbation of its parent
            (``toolbox.finetune``, topology fixed) instead of its mutation.
    """

    name: ClassVar[str] = "finetune"
    summary: ClassVar[str] = (
        "half the children: every weight of the elite perturbed at a random scale, topology fixed"
    )
    needs: ClassVar[tuple[str, ...]] = ("perturb_weights",)
    finetune_fraction: float = 0.5

    def vary(
        self,
        toolbox: base.Toolbox,
        parents: GenomeBatch,
        rng: np.random.Generator,
        *,
        generation: int,
        crossover_probability: float = 0.0,
    ) -> GenomeBatch:
        """The paper's children, each then with chance ``finetune_fraction`` a perturbed parent.

        See :meth:`Emitter.vary`.
        """
        children = super().vary(
            toolbox, parents, rng, generation=generation, crossover_probability=crossover_probability
        )
        # Drawn after the mutation, so the mutated children are those of the paper's emitter.
        rows = np.flatnonzero(rng.random(len(parents)) < self.finetune_fraction)
        if rows.size:
            children.assign(rows, toolbox.finetune(parents.take(rows), rng, generation))
        return children


@dataclasses.dataclass(frozen=True)
class GradientEmitter(Emitter):
    """The paper's children, then Adam steps on the weights of some of them toward their parent's class.

    Attributes:
        gradient_steps: Adam steps on each refined child's weights.
        gradient_lr: Adam's step size, in weight units (weights live in [-10, 10]).
        refine_every: refine only every ``refine_every``-th child of a generation (rows 0, n,
            2n, ...), starting from a copy of its parent rather than from the mutated child;
            the other children are the paper's. 0: refine every child.
        keep_best: a refined child keeps its best-scoring weights along the steps, not the last.
    """

    name: ClassVar[str] = "gradient"
    summary: ClassVar[str] = (
        "the paper's child, then 2 Adam steps on its weights toward its parent's class (7 evaluations)"
    )
    needs: ClassVar[tuple[str, ...]] = ("render_differentiable",)
    gradient_steps: int = 2
    gradient_lr: float = 0.03
    refine_every: int = 0
    keep_best: bool = False

    @property
    def evaluations_per_child(self) -> float:
        """Its score (1) plus 3 per gradient step of the refined children (all, or one in ``refine_every``).

        Exact when ``refine_every`` divides the population, which :meth:`check` requires.
        """
        refined_share = 1 / self.refine_every if self.refine_every else 1
        return 1 + FORWARD_BACKWARD_COST * self.gradient_steps * refined_share

    def refined_rows(self, offset: int, count: int) -> np.ndarray:
        """Which of a batch's children take gradient steps.

        Args:
            offset: the generation row of the batch's first child.
            count: the batch's children.

        Returns:
            ``(k,)`` int64 rows in ``[0, count)``, ascending; empty without gradient steps.
        """
        if not self.gradient_steps:
            return np.zeros(0, dtype=np.int64)
        rows = np.arange(count, dtype=np.int64)
        return rows[(offset + rows) % self.refine_every == 0] if self.refine_every else rows

    def refine(
        self,
        children: GenomeBatch,
        parents: GenomeBatch,
        cells: np.ndarray,
        *,
        offset: int,
        refiner: Refiner,
    ) -> GenomeBatch:
        """The :meth:`refined_rows` replaced by ``refiner.refine`` of them (or of their parents).

        See :meth:`Emitter.refine`.
        """
        rows = self.refined_rows(offset, len(children))
        start = parents.take(rows) if self.refine_every else children.take(rows)
        children.assign(
            rows,
            refiner.refine(
                start, cells[rows], steps=self.gradient_steps, lr=self.gradient_lr, keep_best=self.keep_best
            ),
        )
        return children

    def check(self, *, workers: int, population: int | None = None) -> None:
        """Refuse a ``population`` that ``refine_every`` does not divide; see :meth:`Emitter.check`.

        Raises:
            UserError: such a population.
        """
        if population is not None and self.refine_every and population % self.refine_every:
            raise UserError(
                f"--emitter {self.name} refines one child in {self.refine_every}: "
                f"--population must be a multiple of {self.refine_every}, not {population}"
            )


@dataclasses.dataclass(frozen=True)
class AscentEmitter(GradientEmitter):
    """The paper's children, except one in 8: its parent after 10 Adam steps, keeping the best step."""

    name: ClassVar[str] = "ascent"
    summary: ClassVar[str] = (
        "the paper's children, but one in 8 is its parent elite after 10 Adam steps (lr 0.002) toward "
        "the parent's class, keeping the best step (4.75 evaluations per child on average)"
    )
    gradient_steps: int = 10
    gradient_lr: float = 0.002
    refine_every: int = 8
    keep_best: bool = True


@dataclasses.dataclass(frozen=True)
class FocusEmitter(Emitter):
    """The paper's mutation, with parents drawn among the weaker half of the cells.

    Attributes:
        focus: chance each parent is drawn among the weaker half of the occupied cells
            (elite fitness at or below the median) instead of among all of them.
    """

    name: ClassVar[str] = "focus"
    summary: ClassVar[str] = "the paper's mutation; every parent drawn among the weaker half of the cells"
    focus: float = 1.0

    def select_parents(self, archive: ClassArchive, count: int, rng: np.random.Generator) -> np.ndarray:
        """Uniform draws, each replaced with chance ``focus`` by one among the weaker half.

        The first draws are those of :meth:`Emitter.select_parents`; the weaker half is
        the first half (rounded up) of the occupied cells sorted by fitness, ties broken
        by cell index.

        Returns:
            ``(count,)`` int64 cell indices.

        Raises:
            ValueError: the archive is empty.
        """
        cells = archive.sample_parents(count, rng)
        if self.focus <= 0:
            return cells
        occupied = archive.occupied_cells()
        weakest_first = occupied[np.argsort(archive.fitness[occupied], kind="stable")]
        weak = weakest_first[: (weakest_first.size + 1) // 2]
        focused = rng.random(count) < self.focus
        return np.where(focused, weak[rng.integers(0, weak.size, size=count)], cells)
