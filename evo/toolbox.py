"""The DEAP toolbox through which the loop varies genomes, so users can swap operators."""

from __future__ import annotations

import numpy as np
from deap import base

from fooling.encodings import GenomeBatch
from fooling.evo.config import RunConfig
from fooling.evo.evaluation import make_encoding
from fooling.fitness import get_model_spec


def make_toolbox(encoding) -> base.Toolbox:
    """A toolbox with the encoding's operators registered under fixed names.

    Args:
        encoding: an encoding (e.g. :class:`fooling.encodings.DirectEncoding`), or a
            :class:`fooling.evo.config.RunConfig`, whose encoding is made for its model.

    Registered (all batch-first, all taking an explicit ``numpy.random.Generator``):
        ``random(count, rng)``: ``count`` new genomes.
        ``mutate(genomes, rng, generation)``: mutated copies.
        ``mate(first, second, rng)``: two batches of children (encodings with crossover).
        ``finetune(genomes, rng, generation)``: weight-perturbed copies, topology kept
        (encodings with ``perturb_weights``; the ``finetune`` emitter uses it).

    Replace any of them the DEAP way, e.g.
    ``toolbox.register("mutate", my_mutation)``, before handing the toolbox to a search.
    """
    if isinstance(encoding, RunConfig):
        encoding = make_encoding(encoding, get_model_spec(encoding.model))
    toolbox = base.Toolbox()
    toolbox.register("random", encoding.random)
    toolbox.register("mutate", encoding.mutate)
    if hasattr(encoding, "mate"):
        toolbox.register("mate", encoding.mate)
    if hasattr(encoding, "perturb_weights"):
        toolbox.register("finetune", encoding.perturb_weights)
    return toolbox


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
        toolbox: the operators (``mutate``, optionally ``mate``; see :func:`make_toolbox`).
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
