"""The DEAP toolbox through which the loop varies genomes, so users can swap operators."""

from __future__ import annotations

from deap import base

from fooling.encodings import Encoding
from fooling.evo.config import RunConfig
from fooling.evo.emitters import vary
from fooling.evo.evaluation import make_encoding
from fooling.fitness import get_model_spec

__all__ = ["make_toolbox", "vary"]  # vary lives with the emitters, whose default variation it is


def make_toolbox(encoding: Encoding | RunConfig) -> base.Toolbox:
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
