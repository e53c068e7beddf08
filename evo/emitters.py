"""Emitters: how a generation's children are made from the archive's elites (``--emitter``).

Every emitter keeps the paper's MAP-Elites frame: parents are the elites of cells drawn
uniformly among the occupied ones, every child is scored on every cell and takes each cell
whose elite it beats. They differ in how a parent becomes a child:

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

Emitters draw every random number from the batch generators of :mod:`.search`, so the
same seed gives the same archive and a resumed run the archive of an uninterrupted one.
"""

from __future__ import annotations

import dataclasses

from fooling.fitness import resolve_name
from fooling.fitness.weight_ascent import FORWARD_BACKWARD_COST


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
        needs_cppn: only for CPPN genomes.
        ray: runs on Ray actors too (``--workers > 0``).
    """

    name: str
    summary: str
    finetune_fraction: float = 0.0
    gradient_steps: int = 0
    gradient_lr: float = 0.0
    needs_cppn: bool = False
    ray: bool = True

    @property
    def evaluations_per_child(self) -> int:
        """Evaluations one varied child costs: its score (1) plus 3 per gradient step."""
        return 1 + FORWARD_BACKWARD_COST * self.gradient_steps


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
}


def get_emitter(name: str) -> Emitter:
    """The emitter called ``name`` (case-insensitive).

    Raises:
        UnknownNameError: no such emitter; the message suggests close names.
    """
    return EMITTERS[resolve_name(name, EMITTERS, "emitter")]


def check_emitter(name: str, *, encoding: str, workers: int) -> str:
    """The canonical name of emitter ``name`` after checking it suits the run.

    Raises:
        UnknownNameError: no such emitter (close names suggested).
        ValueError: an emitter for CPPN genomes with another encoding, or one that does not
            run on Ray with ``workers > 0``.
    """
    emitter = get_emitter(name)
    if emitter.needs_cppn and encoding != "cppn":
        raise ValueError(f"--emitter {emitter.name} varies CPPN weights; it needs --encoding cppn")
    if workers > 0 and not emitter.ray:
        raise ValueError(
            f"--emitter {emitter.name} does not run on Ray yet: use --workers 0 (in-process) with it"
        )
    return emitter.name
