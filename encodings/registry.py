"""The :class:`Encoding` protocol and the one registry of encodings (``--encoding``).

Everything that needs to know the encodings asks here: the search builds a run's encoding
with :meth:`EncodingSpec.build`, checkpoints rebuild genomes through :data:`GENOME_CLASSES`,
the command line lists :func:`registered_encodings` (and :func:`color_space_help`), and the
run config checks a colour space against :attr:`EncodingSpec.color_spaces`.

Each encoding names its own ``--color-space`` choices and default, and a name means one
rendering: ``rgb`` is RGB genes (direct); a CPPN's three outputs are read as ``hsv`` (its
default), ``hls`` or ``hls-opencv``. Older versions stored ``rgb`` for CPPN runs rendered as
HSV; :attr:`EncodingSpec.renamed_color_spaces` maps such stored names when a run config is
read, so those runs still load and resume bit-identically.

Third parties register an encoding through the entry-point group ``fooling.encodings``:
the entry point's name is the ``--encoding`` name and it loads an :class:`EncodingSpec` of
that name. Adding an encoding is then a module (its genome class, its encoding class, its
spec) plus that registration. Nothing here imports the fitness, evo, Ray or pyarrow layers.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Iterator, Mapping
from typing import Any, ClassVar, Protocol, runtime_checkable

import numpy as np
import torch

from ._batch import GenomeBatch
from .cppn import CPPNEncoding
from .direct import DirectEncoding
from .plugins import PluginError, load_entry_points

__all__ = [
    "ENCODINGS",
    "ENCODING_GROUP",
    "GENOME_CLASSES",
    "Encoding",
    "EncodingSpec",
    "color_space_help",
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
        """Raise :class:`~fooling.encodings.errors.UserError` unless ``genomes`` fit this encoding.

        They may come from a file (a checkpoint being resumed), so a misfit is the file's
        damage, reported in one line.
        """
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
            ``settings`` maps run-config field names to values (``color_space`` is one of
            :attr:`color_spaces`).
        color_spaces: the ``--color-space`` values it takes, for 3-channel images (an
            encoding without colour choices keeps the one default, ``("rgb",)``).
        default_color_space: the value a run config takes when none is given (``None``, the
            default: the first of :attr:`color_spaces`).
        renamed_color_spaces: names that older versions stored for this encoding, mapped to
            the name of the same rendering now; applied when a stored run config is read
            (never to what a user types). The old names must not be among :attr:`color_spaces`.
        settings: the names of the run-config fields :attr:`build` reads from its
            ``settings`` (e.g. ``("mutation_probability", "max_nodes")``), so that a new run
            can refuse an encoding setting its encoding would ignore (``--max-nodes`` for the
            direct encoding). ``None`` (the default, for encodings that declare nothing):
            any field may be read, and none is refused.

    Raises:
        ValueError: no colour spaces, a default not among them, a renamed space that is
            still a choice or maps to no choice, or settings that are not field names.
    """

    name: str
    summary: str
    encoding_class: type
    build: EncodingBuilder
    color_spaces: tuple[str, ...] = ("rgb",)
    default_color_space: str | None = None
    renamed_color_spaces: Mapping[str, str] = dataclasses.field(default_factory=dict)
    settings: tuple[str, ...] | None = None

    def __post_init__(self) -> None:
        if self.settings is not None:
            if isinstance(self.settings, str) or not all(isinstance(name, str) for name in self.settings):
                raise ValueError(
                    f"encoding {self.name!r}: settings must be a tuple of field names, not {self.settings!r}"
                )
            object.__setattr__(self, "settings", tuple(self.settings))
        if not self.color_spaces:
            raise ValueError(f"encoding {self.name!r} declares no colour spaces")
        if self.default_color_space is None:
            object.__setattr__(self, "default_color_space", self.color_spaces[0])
        elif self.default_color_space not in self.color_spaces:
            raise ValueError(
                f"encoding {self.name!r}: default colour space {self.default_color_space!r} "
                f"is not one of {self.color_spaces}"
            )
        for old, new in self.renamed_color_spaces.items():
            if old in self.color_spaces or new not in self.color_spaces:
                raise ValueError(
                    f"encoding {self.name!r}: colour space {old!r} renamed {new!r}, "
                    f"which must be a new name of {self.color_spaces}"
                )

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
        color_space=_color_space(settings, _DIRECT_SPACES),
        init=settings.get("init", "paper"),
    )


def _cppn(settings: Mapping[str, Any], channels: int, size: tuple[int, int]) -> CPPNEncoding:
    return CPPNEncoding(
        outputs=channels,
        height=size[0],
        width=size[1],
        color_space=_color_space(settings, _CPPN_SPACES),
        coordinates=settings["coordinates"],
        split_weight=settings["split_weight"],
        max_nodes=settings["max_nodes"],
        max_edges=settings["max_edges"],
        weight_probability=settings["mutation_probability"],
        weight_eta=settings["mutation_eta"],
    )


def _color_space(settings: Mapping[str, Any], choices: tuple[str, ...]) -> str:
    """``settings["color_space"]``, one of ``choices`` (the run config checked it; ``None``: the first).

    Raises:
        ValueError: another name (a caller that skipped the run config's checks and mapping).
    """
    space = settings.get("color_space") or choices[0]
    if space not in choices:
        raise ValueError(f"colour space {space!r} is not one of {choices}")
    return space


# Direct genomes are the colours themselves, read as RGB or as HSV (the paper's ImageNet runs).
_DIRECT_SPACES = ("rgb", "hsv")
# A CPPN's three outputs |o| in [0, 1] read as HSV (the paper's text), HLS, or the original
# code's bytes read as OpenCV 8-bit HLS.
_CPPN_SPACES = ("hsv", "hls", "hls-opencv")

# The run-config fields each built-in builder reads (what a new run must not set for the other).
_DIRECT_SETTINGS = (
    "mutation_probability",
    "mutation_eta",
    "halve_mutation_every",
    "crossover_eta",
    "color_space",
    "init",
)
_CPPN_SETTINGS = (
    "mutation_probability",
    "mutation_eta",
    "color_space",
    "coordinates",
    "split_weight",
    "max_nodes",
    "max_edges",
)

# The built-in encodings, by name.
ENCODINGS: dict[str, EncodingSpec] = {
    "direct": EncodingSpec(
        "direct",
        "one gene per pixel and channel, polynomial mutation, optional SBX crossover",
        DirectEncoding,
        _direct,
        color_spaces=_DIRECT_SPACES,
        settings=_DIRECT_SETTINGS,
    ),
    "cppn": EncodingSpec(
        "cppn",
        "a compositional pattern-producing network per image, NEAT-style mutation "
        "(--color-space hls-opencv: the original code's colours)",
        CPPNEncoding,
        _cppn,
        color_spaces=_CPPN_SPACES,
        # Before each encoding named its own colour spaces, the run config's default "rgb"
        # meant HSV outputs for CPPNs (the paper's text); runs stored so still read as HSV.
        renamed_color_spaces={"rgb": "hsv"},
        settings=_CPPN_SETTINGS,
    ),
}


def registered_encodings() -> dict[str, EncodingSpec]:
    """Every encoding: the built-in ones, then the plugins of :data:`ENCODING_GROUP` (read afresh).

    A plugin may not replace a built-in encoding (its entry point is ignored).

    Raises:
        PluginError: a plugin fails to load, is not an :class:`EncodingSpec` of its entry
            point's name, or its genome class's name is another encoding's; one line.
    """
    found = dict(ENCODINGS)
    for name, spec in load_entry_points(ENCODING_GROUP, "encoding", EncodingSpec, skip=ENCODINGS).items():
        taken = {other.genome_class.__name__ for other in found.values()}
        if spec.genome_class.__name__ in taken:
            raise PluginError(
                f"encoding plugin {name!r}: genome class name {spec.genome_class.__name__} is "
                "another encoding's (checkpoints name genomes by class name)"
            )
        found[name] = spec
    return found


def encoding_help() -> str:
    """The ``--encoding`` help: every registered encoding, ``name: summary``, separated by `` | ``."""
    return "genome encoding: " + " | ".join(
        f"{name}: {spec.summary}" for name, spec in registered_encodings().items()
    )


def color_space_help() -> str:
    """The ``--color-space`` help: each registered encoding's choices, its default first.

    ``name: default, other, ...`` per encoding, separated by `` | ``.
    """
    return "colour of 3-channel images, by encoding (the first is its default): " + " | ".join(
        f"{name}: {', '.join(dict.fromkeys((spec.default_color_space, *spec.color_spaces)))}"
        for name, spec in registered_encodings().items()
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
