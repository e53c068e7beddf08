"""Emitters: how a generation's children are made from the archive's elites (``--emitter``).

Every emitter keeps the paper's MAP-Elites frame: parents are the elites of cells drawn
uniformly among the occupied ones (``focus`` excepted), every child is scored on every
cell and takes each cell whose elite it beats. They differ in how a parent becomes a child:

* ``paper``: the encoding's mutation (for CPPNs: weights, activations, structure), as in
  the original code.
* ``finetune``: half the children as ``paper``; the other half keep the parent's topology
  and activations and get every weight perturbed by Gaussian noise of one scale per child,
  drawn log-uniformly (:meth:`fooling.encodings.CPPNEncoding.perturb_weights`). The paper's
  polynomial mutation moves a weight by about 1 on a [-10, 10] range; this adds the fine
  steps that hill-climb an elite. Forward passes only: one evaluation per child.
* ``gradient``: the ``paper`` child, then a few Adam steps on its weights through the
  differentiable renderer toward the log-probability of its parent's class
  (:func:`fooling.fitness.weight_ascent.ascend_parameters`). Each step is a forward and a
  backward pass (3 evaluations), the final score one more.
* ``ascent``: the ``paper`` children, except that one child in 8 (rows 0, 8, 16, ... of
  each generation) is a copy of its parent elite that takes 10 Adam steps (lr 0.002) on its
  weights toward its parent's class and keeps the weights that scored best along the way.
  Steps this small because the weight landscape is rugged: from elites, moving the whole
  weight vector by more than about 0.03 along the gradient lowers the target's probability.
  1 + 3 x 10 / 8 = 4.75 evaluations per child on average.
* ``focus``: the ``paper`` children, with every parent drawn among the weaker half of the
  occupied cells (the cells that decide the median), not among all of them.

``gradient`` and ``ascent`` run in-process only (the torch network on the driver); the
others also on Ray. Emitters draw every random number from the batch generators of
:mod:`.search` (parents from its selection generator), so the same seed gives the same
archive and a resumed run the archive of an uninterrupted one.
"""

from __future__ import annotations

import dataclasses
from typing import TYPE_CHECKING

import numpy as np

from fooling.fitness import resolve_name
from fooling.fitness.weight_ascent import FORWARD_BACKWARD_COST

if TYPE_CHECKING:
    from fooling.evo.archive import ClassArchive


@dataclasses.dataclass(frozen=True)
class Emitter:
    """How children are made.

    Attributes:
        name: the ``--emitter`` name.
        summary: one line for ``--help`` and reports.
        finetune_fraction: chance each child is a weight perturbation of its parent
            (topology fixed) instead of a mutation.
        gradient_steps: Adam steps on each child's weights toward its parent's class (0: none).
        gradient_lr: Adam's step size, in weight units (weights live in [-10, 10]).
        refine_every: with gradient steps, refine only every ``refine_every``-th child of a
            generation (rows 0, n, 2n, ...), starting from a copy of its parent rather than
            from the mutated child; the other children are the paper's. 0: refine every child.
        keep_best: a refined child keeps its best-scoring weights along the steps, not the last.
        focus: chance each parent is drawn among the weaker half of the occupied cells
            (elite fitness at or below the median) instead of among all of them.
        needs_cppn: only for CPPN genomes.
        ray: runs on Ray actors too (``--workers > 0``).
    """

    name: str
    summary: str
    finetune_fraction: float = 0.0
    gradient_steps: int = 0
    gradient_lr: float = 0.0
    refine_every: int = 0
    keep_best: bool = False
    focus: float = 0.0
    needs_cppn: bool = False
    ray: bool = True

    @property
    def evaluations_per_child(self) -> float:
        """Evaluations a varied child costs on average.

        Its score (1) plus 3 per gradient step of the refined children (all of them, or one
        in ``refine_every``; exact when ``refine_every`` divides the population, which
        :func:`check_emitter` requires).
        """
        refined_share = 1 / self.refine_every if self.refine_every else 1
        return 1 + FORWARD_BACKWARD_COST * self.gradient_steps * refined_share

    def refined_rows(self, offset: int, count: int) -> np.ndarray:
        """Which of a task's children take gradient steps.

        Args:
            offset: the generation row of the task's first child.
            count: the task's children.

        Returns:
            ``(k,)`` int64 rows in ``[0, count)``, ascending; empty without gradient steps.
        """
        if not self.gradient_steps:
            return np.zeros(0, dtype=np.int64)
        rows = np.arange(count, dtype=np.int64)
        return rows[(offset + rows) % self.refine_every == 0] if self.refine_every else rows

    def select_parents(self, archive: ClassArchive, count: int, rng: np.random.Generator) -> np.ndarray:
        """The parent cells of ``count`` children, drawn with replacement from ``rng``.

        Uniform over the occupied cells (the paper's rule, and the same draws as
        :meth:`ClassArchive.sample_parents`); with ``focus > 0`` each draw is then replaced,
        with probability ``focus``, by a cell drawn uniformly among the weaker half of the
        occupied cells (ties broken by cell index).

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


EMITTERS: dict[str, Emitter] = {
    "paper": Emitter("paper", "the paper's mutation of a uniformly chosen elite"),
    "finetune": Emitter(
        "finetune",
        "half the children: every weight of the elite perturbed at a random scale, topology fixed",
        finetune_fraction=0.5,
        needs_cppn=True,
    ),
    "gradient": Emitter(
        "gradient",
        "the paper's child, then 2 Adam steps on its weights toward its parent's class (7 evaluations)",
        gradient_steps=2,
        gradient_lr=0.03,
        needs_cppn=True,
        ray=False,
    ),
    "ascent": Emitter(
        "ascent",
        "the paper's children, but one in 8 is its parent elite after 10 Adam steps (lr 0.002) toward "
        "the parent's class, keeping the best step (4.75 evaluations per child on average)",
        gradient_steps=10,
        gradient_lr=0.002,
        refine_every=8,
        keep_best=True,
        needs_cppn=True,
        ray=False,
    ),
    "focus": Emitter(
        "focus",
        "the paper's mutation; every parent drawn among the weaker half of the cells",
        focus=1.0,
    ),
}


def get_emitter(name: str) -> Emitter:
    """The emitter called ``name`` (case-insensitive).

    Raises:
        UnknownNameError: no such emitter; the message suggests close names.
    """
    return EMITTERS[resolve_name(name, EMITTERS, "emitter")]


def check_emitter(name: str, *, encoding: str, workers: int, population: int | None = None) -> str:
    """The canonical name of emitter ``name`` after checking it suits the run.

    Raises:
        UnknownNameError: no such emitter (close names suggested).
        ValueError: an emitter for CPPN genomes with another encoding, one that does not
            run on Ray with ``workers > 0``, or one that refines one child in
            ``refine_every`` with a ``population`` that ``refine_every`` does not divide.
    """
    emitter = get_emitter(name)
    if population is not None and emitter.refine_every and population % emitter.refine_every:
        raise ValueError(
            f"--emitter {emitter.name} refines one child in {emitter.refine_every}: "
            f"--population must be a multiple of {emitter.refine_every}, not {population}"
        )
    if emitter.needs_cppn and encoding != "cppn":
        raise ValueError(f"--emitter {emitter.name} varies CPPN weights; it needs --encoding cppn")
    if workers > 0 and not emitter.ray:
        raise ValueError(
            f"--emitter {emitter.name} does not run on Ray yet: use --workers 0 (in-process) with it"
        )
    return emitter.name
