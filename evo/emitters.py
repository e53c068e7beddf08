"""Emitters: how a generation's children are made from the archive's elites (``--emitter``).

An emitter is a class against :class:`Emitter` (in the manner of pyribs' ``EmitterBase``),
with three steps a search calls in turn:

1. :meth:`Emitter.select_parents`: the parent cell of every child of a generation, drawn
   from the archive with the generation's selection generator (driver side).
2. :meth:`Emitter.vary`: a batch of children from their parents through the DEAP toolbox,
   with the batch's generator (driver or Ray mutator actors).
3. :meth:`Emitter.refine` (optional): the children after work that needs the scorer (e.g.
   gradient steps through the network), a pure function of its arguments, run where the
   batch is scored. Ray's scorer actors do not call it yet, so an emitter that overrides
   it runs in-process only (:attr:`Emitter.runs_on_ray` follows from the class, not from a flag).

Every built-in emitter keeps the paper's MAP-Elites frame: parents are the elites of cells
drawn uniformly among the occupied ones (``focus`` excepted), every child is scored on every
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

Third-party emitters register through the entry-point group ``fooling.emitters``: the entry
point's name is the ``--emitter`` name and it loads an :class:`Emitter` subclass (built with
no arguments) or instance whose :attr:`~Emitter.name` is that name. Emitters draw every random
number from the generators they are handed, so the same seed gives the same archive and a
resumed run the archive of an uninterrupted one.
"""

from __future__ import annotations

import dataclasses
import importlib.metadata
from typing import TYPE_CHECKING, ClassVar, Protocol

import numpy as np
from deap import base

from fooling.encodings import GenomeBatch, registered_encodings
from fooling.fitness import resolve_name
from fooling.fitness.weight_ascent import FORWARD_BACKWARD_COST

if TYPE_CHECKING:
    from fooling.evo.archive import ClassArchive

__all__ = [
    "EMITTERS",
    "EMITTER_GROUP",
    "AscentEmitter",
    "Emitter",
    "FinetuneEmitter",
    "FocusEmitter",
    "GradientEmitter",
    "PaperEmitter",
    "Refiner",
    "check_emitter",
    "emitter_help",
    "get_emitter",
    "registered_emitters",
    "vary",
]

EMITTER_GROUP = "fooling.emitters"


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
    def runs_on_ray(self) -> bool:
        """Whether it runs on Ray actors (``--workers > 0``): Ray's scorers do not call :meth:`refine` yet."""
        return not self.refines

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
    ) -> GenomeBatch:
        """The children of one batch, row ``i`` the child of ``parents[i]``.

        The default: :func:`vary` (optional crossover, then mutation).

        Args:
            toolbox: the run's operators (see :func:`~fooling.evo.toolbox.make_toolbox`).
            parents: ``batch_size`` genomes; not modified.
            rng: the batch's generator (a function of seed, generation and batch index).
            generation: the current generation.
            crossover_probability: the run's ``--crossover-probability``.

        Returns:
            ``batch_size`` new genomes.
        """
        return vary(toolbox, parents, rng, generation=generation, crossover_probability=crossover_probability)

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
        calls), so that it gives the same children wherever and whenever it runs. The
        default returns ``children`` unchanged; an emitter that overrides it does not run on Ray.

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
        """Raise ``ValueError`` (one line) when this emitter cannot run with these settings.

        The default accepts everything; the encoding's :attr:`needs` and Ray are checked
        by :func:`check_emitter`.
        """


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
            ValueError: such a population.
        """
        if population is not None and self.refine_every and population % self.refine_every:
            raise ValueError(
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


# The built-in emitters, by name.
EMITTERS: dict[str, Emitter] = {
    emitter.name: emitter
    for emitter in (PaperEmitter(), FinetuneEmitter(), GradientEmitter(), AscentEmitter(), FocusEmitter())
}


def _load(entry: importlib.metadata.EntryPoint) -> Emitter:
    """The emitter of entry point ``entry``.

    Raises:
        ValueError: it fails to load, or is not an :class:`Emitter` named as the entry point.
    """
    try:
        loaded = entry.load()
        emitter = loaded() if isinstance(loaded, type) else loaded
    except Exception as error:  # a plugin's own failure: one line naming the plugin
        raise ValueError(f"emitter plugin {entry.name!r} ({entry.value}) failed to load: {error}") from error
    if not isinstance(emitter, Emitter) or emitter.name != entry.name:
        raise ValueError(
            f"emitter plugin {entry.name!r} ({entry.value}) is not an Emitter named {entry.name!r}"
        )
    return emitter


def registered_emitters() -> dict[str, Emitter]:
    """Every emitter: the built-in ones, then the plugins of :data:`EMITTER_GROUP` (read afresh).

    A plugin may not replace a built-in emitter (its entry point is ignored).

    Raises:
        ValueError: a plugin fails to load or is not an :class:`Emitter` of its entry point's name.
    """
    found = dict(EMITTERS)
    for entry in importlib.metadata.entry_points(group=EMITTER_GROUP):
        if entry.name not in found:
            found[entry.name] = _load(entry)
    return found


def emitter_help() -> str:
    """The ``--emitter`` help: every registered emitter, ``name: summary``, separated by `` | ``."""
    return "how children are made: " + " | ".join(
        f"{name}: {emitter.summary}" for name, emitter in registered_emitters().items()
    )


def get_emitter(name: str) -> Emitter:
    """The emitter called ``name`` (case-insensitive), built in or a plugin.

    Raises:
        UnknownNameError: no such emitter; the message suggests close names.
        ValueError: a plugin fails to load.
    """
    if isinstance(name, str) and name.lower() in EMITTERS:  # no plugin is loaded for a built-in one
        return EMITTERS[name.lower()]
    emitters = registered_emitters()
    return emitters[resolve_name(name, emitters, "emitter")]


def check_emitter(name: str, *, encoding: str, workers: int, population: int | None = None) -> str:
    """The canonical name of emitter ``name`` after checking it suits the run.

    Raises:
        UnknownNameError: no such emitter (close names suggested).
        ValueError: an encoding without the methods the emitter :attr:`~Emitter.needs`, an
            emitter that does not run on Ray with ``workers > 0``, or settings the emitter's
            :meth:`~Emitter.check` refuses.
    """
    emitter = get_emitter(name)
    emitter.check(workers=workers, population=population)
    classes = {other: spec.encoding_class for other, spec in registered_encodings().items()}
    missing = [need for need in emitter.needs if encoding in classes and not hasattr(classes[encoding], need)]
    if missing:
        suitable = [other for other, kind in classes.items() if all(hasattr(kind, n) for n in emitter.needs)]
        needed = " or ".join(f"--encoding {other}" for other in suitable) or "an encoding with " + ", ".join(
            missing
        )
        raise ValueError(
            f"--emitter {emitter.name} uses the encoding's {', '.join(missing)}; it needs {needed}"
        )
    if workers > 0 and not emitter.runs_on_ray:
        raise ValueError(
            f"--emitter {emitter.name} does not run on Ray yet: use --workers 0 (in-process) with it"
        )
    return emitter.name
