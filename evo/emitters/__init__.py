"""Emitters: how a generation's children are made from the archive's elites (``--emitter``).

An emitter is a class against :class:`Emitter` (in the manner of pyribs' ``EmitterBase``),
with three steps a search calls in turn:

1. :meth:`Emitter.select_parents`: the parent cell of every child of a generation, drawn
   from the archive with the generation's selection generator (driver side).
2. :meth:`Emitter.vary`: a batch of children from their parents through the DEAP toolbox,
   with the batch's generator (driver or Ray mutator actors).
3. :meth:`Emitter.refine` (optional): the children after work that needs the scorer (e.g.
   gradient steps through the network), a pure function of its arguments, run where the
   batch is scored (in-process, or on Ray's scorer actors).

A stateful emitter (one that learns across generations, such as ``cma-me``) adds two
driver-side steps and its state: :meth:`Emitter.instructions` (per-child rows computed once
per generation, e.g. sampled weight vectors, sliced into the batches that :meth:`Emitter.vary`
receives wherever it runs), :meth:`Emitter.tell` (each child's improvement of the archive,
after the generation is inserted) and :meth:`Emitter.state` / :meth:`Emitter.restore` (a JSON
object stored in every checkpoint, so ``--resume`` continues bit for bit). Every emitter
runs on Ray: what each step needs travels with the batch.

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
* ``cma-me``: CMA-ME (Fontaine et al. 2020) on CPPN weights: the emitter adopts the topology
  of a uniformly drawn elite and runs a separable CMA-ES (``cmaes.SepCMA``) on its weights,
  every child a sample of it, ranked by how much it improves the archive (the largest gain
  over any cell's elite, an empty cell counting 0); it restarts from another elite when no
  child improved the archive for ``patience`` generations or the CMA-ES stops.

Third-party emitters register through the entry-point group ``fooling.emitters``: the entry
point's name is the ``--emitter`` name and it loads an :class:`Emitter` subclass (built with
no arguments) or instance whose :attr:`~Emitter.name` is that name. Emitters draw every random
number from the generators they are handed, so the same seed gives the same archive and a
resumed run the archive of an uninterrupted one.
"""

from __future__ import annotations

import copy

from fooling.encodings import UserError, registered_encodings
from fooling.encodings.plugins import instance, load_entry_points
from fooling.fitness import resolve_name

from .base import Emitter, Refiner, vary
from .builtin import AscentEmitter, FinetuneEmitter, FocusEmitter, GradientEmitter, PaperEmitter
from .cma_me import CMAMEEmitter

__all__ = [
    "EMITTERS",
    "EMITTER_GROUP",
    "AscentEmitter",
    "CMAMEEmitter",
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


# The built-in emitters, by name: templates; :func:`get_emitter` hands out copies, since a
# stateful emitter learns during its run.
EMITTERS: dict[str, Emitter] = {
    emitter.name: emitter
    for emitter in (
        PaperEmitter(),
        FinetuneEmitter(),
        GradientEmitter(),
        AscentEmitter(),
        FocusEmitter(),
        CMAMEEmitter(),
    )
}


def registered_emitters() -> dict[str, Emitter]:
    """Every emitter: the built-in ones, then the plugins of :data:`EMITTER_GROUP` (read afresh).

    A plugin may not replace a built-in emitter (its entry point is ignored).

    Raises:
        PluginError: a plugin fails to load or is not an :class:`Emitter` of its entry point's name.
    """
    plugins = load_entry_points(EMITTER_GROUP, "emitter", Emitter, make=instance, skip=EMITTERS)
    return {**EMITTERS, **plugins}


def emitter_help() -> str:
    """The ``--emitter`` help: every registered emitter, ``name: summary``, separated by `` | ``."""
    return "how children are made: " + " | ".join(
        f"{name}: {emitter.summary}" for name, emitter in registered_emitters().items()
    )


def get_emitter(name: str) -> Emitter:
    """A fresh copy of the emitter called ``name`` (case-insensitive), built in or a plugin.

    Raises:
        UnknownNameError: no such emitter; the message suggests close names.
        PluginError: a plugin fails to load.
    """
    if isinstance(name, str) and name.lower() in EMITTERS:  # no plugin is loaded for a built-in one
        return copy.deepcopy(EMITTERS[name.lower()])
    emitters = registered_emitters()
    return copy.deepcopy(emitters[resolve_name(name, emitters, "emitter")])


def check_emitter(name: str, *, encoding: str, workers: int, population: int | None = None) -> str:
    """The canonical name of emitter ``name`` after checking it suits the run.

    Raises:
        UnknownNameError: no such emitter (close names suggested).
        UserError: an encoding without the methods the emitter :attr:`~Emitter.needs`, or
            settings the emitter's :meth:`~Emitter.check` refuses.
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
        raise UserError(
            f"--emitter {emitter.name} uses the encoding's {', '.join(missing)}; it needs {needed}"
        )
    return emitter.name
