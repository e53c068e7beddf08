"""The :class:`Encoding` protocol and the one registry of encodings (``--encoding``).

Everything that needs to know the encodings asks here: the search builds a run's encoding
with :meth:`EncodingSpec.build`, checkpoints rebuild genomes through :data:`GENOME_CLASSES`,
the command line lists :func:`registered_encodings`, and the run config checks a colour space
against :attr:`EncodingSpec.color_spaces`.

Third parties register an encoding through the entry-point group ``fooling.encodings``:
the entry point's name is the ``--encoding`` name and it loads an :class:`EncodingSpec` of
that name. Adding an encoding is then a module (its genome class, its encoding class, its
spec) plus that registration. Nothing here imports the fitness, evo, Ray or pyarrow layers.
"""

from __future__ import annotations

import dataclasses
import importlib.metadata
from collections.abc import Callable, Iterator, Mapping
from typing import Any, ClassVar, Protocol, runtime_checkable

import numpy as np
import torch

from ._batch import GenomeBatch
from .cppn import CPPNEncoding
from .direct import DirectEncoding

__all__ = [
    "ENCODINGS",
    "ENCODING_GROUP",
    "GENOME_CLASSES",
    "Encoding",
    "EncodingSpec",
    "encoding_help",
    "registered_encodings",
]

ENCODING_GROUP = "fooling.encodings"


@runtime_checkable
class Encoding(Protocol):
    """What the search needs of an encoding: batches in, batches (or images) out.

    Every method is batch-first and takes its randomness from an explicit generator, so a
    run is a function of its seed. Optional methods, used where present: ``mate(first,
    second, rng) -> (children, children)`` (crossover, ``--crossover-probability``),
    ``perturb_weights(genomes, rng, generation)`` (the ``finetune`` emitter) and
    ``render_differentiable(genomes, weights)`` (the ``gradient`` and ``ascent`` emitters).

    Attributes:
        genome_class: the :class:`GenomeBatch` subclass of its genomes (its class name is
            what checkpoints store, so it must be unique among the registered encodings).
        shape: ``(channels, height, width)`` of the rendered images.
    """

    genome_class: ClassVar[type[GenomeBatch]]
    shape: tuple[int, int, int]

    def random(self, count: int, rng: np.random.Generator) -> GenomeBatch:
        """``count`` new genomes."""
        ...

    def mutate(self, genomes: GenomeBatch, rng: np.random.Generator, generation: int = 0) -> GenomeBatch:
        """Mutated copies of ``genomes`` (not modified), one per row."""
        ...

    def render(self, genomes: GenomeBatch, device: torch.device | str = "cpu") -> torch.Tensor:
        """Images ``(batch_size, channels, height, width)`` float32 in ``[0, 1]`` on ``device``."""
        ...

    def validate(self, genomes: GenomeBatch) -> None:
        """Raise ``ValueError`` unless ``genomes`` fit this encoding (they may come from a file)."""
        ...


# Builds an encoding from the run's settings (the run config's fields by name), the model's
# image channels (1 or 3) and the evolved images' (height, width).
EncodingBuilder = Callable[[Mapping[str, Any], int, tuple[int, int]], Encoding]


@dataclasses.dataclass(frozen=True)
class EncodingSpec:
    """A registered encoding.

    Attributes:
        name: the ``--encoding`` name (lower case).
        summary: one line for ``--help``.
        encoding_class: the class :attr:`build` makes (its methods say which optional
            operators the encoding has, see :class:`Encoding`).
        build: ``build(settings, channels, (height, width))`` -> the run's encoding;
            ``settings`` maps run-config field names to values.
        color_spaces: the ``--color-space`` values it accepts (the first one the config
            default ``rgb``, which every encoding must accept).
    """

    name: str
    summary: str
    encoding_class: type
    build: EncodingBuilder
    color_spaces: tuple[str, ...] = ("rgb",)

    @property
    def genome_class(self) -> type[GenomeBatch]:
        """The genome class of :attr:`encoding_class`."""
        return self.encoding_class.genome_class


def _direct(settings: Mapping[str, Any], channels: int, size: tuple[int, int]) -> DirectEncoding:
    return DirectEncoding(
        channels=channels,
        height=size[0],
        width=size[1],
        mutation_probability=settings["mutation_probability"],
        mutation_eta=settings["mutation_eta"],
        halve_mutation_every=settings["halve_mutation_every"] or None,
        crossover_eta=settings["crossover_eta"],
        color_space="rgb" if settings["color_space"] == "rgb" else "hsv",
    )


def _cppn(settings: Mapping[str, Any], channels: int, size: tuple[int, int]) -> CPPNEncoding:
    return CPPNEncoding(
        outputs=channels,
        height=size[0],
        width=size[1],
        # The paper's text says HSV; "rgb" (the config default) is taken to mean that.
        color_space="hsv" if settings["color_space"] == "rgb" else settings["color_space"],
        coordinates=settings["coordinates"],
        split_weight=settings["split_weight"],
        max_nodes=settings["max_nodes"],
        max_edges=settings["max_edges"],
        weight_probability=settings["mutation_probability"],
        weight_eta=settings["mutation_eta"],
    )


# The built-in encodings, by name.
ENCODINGS: dict[str, EncodingSpec] = {
    "direct": EncodingSpec(
        "direct",
        "one gene per pixel and channel, polynomial mutation, optional SBX crossover",
        DirectEncoding,
        _direct,
        color_spaces=("rgb", "hsv"),
    ),
    "cppn": EncodingSpec(
        "cppn",
        "a compositional pattern-producing network per image, NEAT-style mutation "
        "(--color-space rgb means HSV outputs, as the paper's text)",
        CPPNEncoding,
        _cppn,
        color_spaces=("rgb", "hsv", "hls", "hls-opencv"),
    ),
}


def _load(entry: importlib.metadata.EntryPoint) -> EncodingSpec:
    """The encoding of entry point ``entry``.

    Raises:
        ValueError: it fails to load, or is not an :class:`EncodingSpec` named as the entry point.
    """
    try:
        spec = entry.load()
    except Exception as error:  # a plugin's own failure: one line naming the plugin
        raise ValueError(f"encoding plugin {entry.name!r} ({entry.value}) failed to load: {error}") from error
    if not isinstance(spec, EncodingSpec) or spec.name != entry.name:
        raise ValueError(
            f"encoding plugin {entry.name!r} ({entry.value}) is not an EncodingSpec named {entry.name!r}"
        )
    return spec


def registered_encodings() -> dict[str, EncodingSpec]:
    """Every encoding: the built-in ones, then the plugins of :data:`ENCODING_GROUP` (read afresh).

    A plugin may not replace a built-in encoding (its entry point is ignored).

    Raises:
        ValueError: a plugin fails to load, is not an :class:`EncodingSpec` of its entry
            point's name, or its genome class's name is another encoding's.
    """
    found = dict(ENCODINGS)
    for entry in importlib.metadata.entry_points(group=ENCODING_GROUP):
        if entry.name in found:
            continue
        spec = _load(entry)
        taken = {other.genome_class.__name__ for other in found.values()}
        if spec.genome_class.__name__ in taken:
            raise ValueError(
                f"encoding plugin {entry.name!r}: genome class name {spec.genome_class.__name__} is "
                "another encoding's (checkpoints name genomes by class name)"
            )
        found[entry.name] = spec
    return found


def encoding_help() -> str:
    """The ``--encoding`` help: every registered encoding, ``name: summary``, separated by `` | ``."""
    return "genome encoding: " + " | ".join(
        f"{name}: {spec.summary}" for name, spec in registered_encodings().items()
    )


class _GenomeClasses(Mapping[str, type[GenomeBatch]]):
    """Genome class name -> class of every registered encoding, read from the registry at each use."""

    def _classes(self) -> dict[str, type[GenomeBatch]]:
        return {spec.genome_class.__name__: spec.genome_class for spec in registered_encodings().values()}

    def __getitem__(self, name: str) -> type[GenomeBatch]:
        return self._classes()[name]

    def __iter__(self) -> Iterator[str]:
        return iter(self._classes())

    def __len__(self) -> int:
        return len(self._classes())

    def __repr__(self) -> str:
        return f"GENOME_CLASSES({sorted(self._classes())})"


# The genome classes a checkpoint may name (plugins included); loading never builds anything else.
GENOME_CLASSES: Mapping[str, type[GenomeBatch]] = _GenomeClasses()
