"""One dataclass describes a run; CLI flags map to its fields and checkpoints store it."""

from __future__ import annotations

import dataclasses
import json
import math
import numbers
import operator
import os
import re
from collections.abc import Callable
from typing import Any

import numpy as np

from fooling.encodings import EncodingSpec, UserError, registered_encodings
from fooling.encodings.direct import DIRECT_INITS
from fooling.evo.emitters import check_emitter
from fooling.evo.on_device import VARY_ON
from fooling.fitness import close_names, resolve_name
from fooling.fitness.engine import check_engine
from fooling.fitness.limits import check_image_size, check_seed, normalise_device

# Fields a resumed run may change; every other field must stay as the checkpoint says,
# or the resumed run would not be the same search.
RESUMABLE_OVERRIDES = (
    "generations",
    "checkpoint_every",
    "keep_checkpoints",
    "workers",
    "scorers",
    "address",
    "device",
    "engine",
    "vary_on",
    "max_queries",  # a run stopped by its query budget goes on with a larger one
)


# Named sets of field values. "paper": the original ImageNet CPPN experiment (Nguyen et al.
# 2015, Sferes2 + Caffe code): 256 px images scored as the softmax averaged over 10 crops,
# raw pixel coordinates, bytes read as OpenCV 8-bit HLS, split connections keeping the old
# weight, 400 random genomes then 400 children per generation for 5,000 generations, every
# class a cell. The capacity stands in for "no caps": far above what 5,000 generations grow.
PRESETS: dict[str, dict[str, Any]] = {
    "paper": {
        "encoding": "cppn",
        "generations": 5000,
        "population": 400,
        "mutation_probability": 0.1,
        "mutation_eta": 15.0,
        "color_space": "hls-opencv",
        "coordinates": "pixel",
        "split_weight": "old",
        "max_nodes": 256,
        "max_edges": 1024,
        "image_size": 256,
        "crops": 10,
        "classes": None,
        "checkpoint_every": 100,
    },
}


# Upper bounds of the count fields, checked before anything is allocated (a checkpoint is
# untrusted input: a stored population of 10**12 must be one line, not a failed allocation).
# The paper's runs: 400 children per generation, 20,000 generations; these leave room far beyond.
MAX_POPULATION = 1_000_000  # children per generation (their genomes are held at once)
MAX_GENERATIONS = 1_000_000_000
MAX_ACTORS = 4096  # Ray workers or scorers
MAX_NODES = 65_536  # CPPN capacity in nodes (the paper preset: 256)
MAX_EDGES = 1_048_576  # CPPN capacity in connections (the paper preset: 1,024)
# Each count field's bound; every other field's kind comes from its annotation.
COUNT_BOUNDS: dict[str, int] = {
    "generations": MAX_GENERATIONS,
    "population": MAX_POPULATION,
    "checkpoint_every": MAX_GENERATIONS,
    "keep_checkpoints": MAX_GENERATIONS,
    "batch_size": MAX_POPULATION,
    "halve_mutation_every": MAX_GENERATIONS,
    "max_nodes": MAX_NODES,
    "max_edges": MAX_EDGES,
    "workers": MAX_ACTORS,
    "scorers": MAX_ACTORS,
}
_KINDS: dict[str, tuple[str, Callable[[Any], bool]]] = {
    "int": ("an integer", lambda v: isinstance(v, numbers.Integral) and not isinstance(v, bool)),
    "float": ("a number", lambda v: isinstance(v, numbers.Real) and not isinstance(v, bool)),
    "str": ("text", lambda v: isinstance(v, str)),
    "list[str]": (
        "a list of class names",
        lambda v: isinstance(v, (list, tuple)) and all(isinstance(item, str) for item in v),
    ),
}


def _plain(kind: str, value: Any) -> Any:
    """``value`` as Python's own type of field kind ``kind``, where it is another type of that kind.

    numpy's scalars (``np.int64(8)``, ``np.float32(0.1)``, ``np.str_``) and a tuple or a 1-D
    array of class names become ``int``, ``float``, ``str`` and a list of ``str``: the config
    is stored as JSON. Values of another kind are returned as they are (refused by the checks).
    """
    accepts = _KINDS[kind][1]
    if kind == "int" and accepts(value):
        return operator.index(value)
    if kind == "float" and accepts(value) and not isinstance(value, int):  # ints stay as JSON has them
        return float(value)
    if kind == "str" and isinstance(value, str):
        return str(value)
    sequence = isinstance(value, (list, tuple)) or (isinstance(value, np.ndarray) and value.ndim == 1)
    if kind == "list[str]" and sequence:
        return [str(item) if isinstance(item, str) else item for item in list(value)]
    return value


# An encoding's name as the registry and entry points give them. A stored config's encoding
# may name a plugin not installed here, so the name is not looked up; but it reaches reports
# (transfer, ablation), so it must be a name, never markup.
_ENCODING_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]{0,99}")


def _flag(name: str) -> str:
    return f"--{name.replace('_', '-')}"


def _shown(value: Any) -> str:
    """``repr(value)`` cut to 60 characters, for a one-line message about untrusted input."""
    text = repr(value)
    return text if len(text) <= 60 else text[:57] + "..."


def _named(field: str, message: str) -> bool:
    """Whether ``message`` names the flag of ``field``."""
    return re.search(rf"{re.escape(_flag(field))}(?![\w-])", message) is not None


def _preset_clash(preset: str, fields: dict[str, Any], message: str) -> str:
    """``message`` about a config of ``preset`` and ``fields``, saying which values the preset set.

    A value the user never typed (the preset's) is named as the preset's, with what to do:
    give that flag too, or leave out the flag of theirs that clashes with it.
    """
    from_preset = [key for key in PRESETS[preset] if key not in fields and _named(key, message)]
    if not from_preset:
        return message
    sets = ", ".join(f"{_flag(key)} {PRESETS[preset][key]}" for key in from_preset)
    flags = " / ".join(_flag(key) for key in from_preset)
    given = [f"{_flag(key)} {value}" for key, value in fields.items() if _named(key, message)]
    remedy = f"give {flags} yourself to override the preset's" + (
        f", or leave out {' and '.join(given)}" if given else ""
    )
    return f"--preset {preset} sets {sets}, and {message}: {remedy}"


def _check_choice(flag: str, value: str, choices: tuple[str, ...]) -> None:
    """Raise :class:`UserError` naming ``--flag``'s choices and the close ones unless ``value`` is one."""
    if value not in choices:
        hint = close_names(str(value), choices, count=2)
        raise UserError(f"--{flag} must be {', '.join(choices[:-1])} or {choices[-1]}, not {value!r}{hint}")


def _encoding_spec(name: Any, encodings: dict[str, EncodingSpec] | None = None) -> EncodingSpec | None:
    """The registered encoding called ``name`` (any case), or ``None`` (unknown, or not a name)."""
    if not isinstance(name, str):
        return None
    encodings = registered_encodings() if encodings is None else encodings
    return {key.lower(): spec for key, spec in encodings.items()}.get(name.lower())


def check_cluster_choice(address: str | None, workers: int) -> None:
    """Refuse a Ray cluster ``address`` for a run without Ray workers.

    Called by the commands that start runs, not by :class:`RunConfig` itself: checkpoints
    written before this check may hold such a pair, and must still read and resume (a resumed
    run never takes its address from the checkpoint anyway).

    Raises:
        UserError: ``address`` with ``workers == 0``: the search would run in this process
            and leave the cluster the user named idle.
    """
    if address and workers == 0:
        raise UserError(
            f"--address {address} names a Ray cluster, but --workers is 0 (everything in "
            "this process); add --workers N or drop --address"
        )


# The run-config fields only encodings read: a new run refuses a value other than the default (or
# its preset's) of one its encoding does not read (:attr:`EncodingSpec.settings`). The colour
# space, ``init`` and ``crossover_probability`` are checked on their own, with their own words.
ENCODING_SETTINGS = (
    "mutation_probability",
    "mutation_eta",
    "halve_mutation_every",
    "crossover_eta",
    "coordinates",
    "split_weight",
    "max_nodes",
    "max_edges",
)


def check_encoding_settings(config: RunConfig) -> None:
    """Refuse a setting of ``config`` that its encoding does not read (and would silently ignore).

    Called for new runs only, not by :class:`RunConfig` itself: a stored run may hold such
    settings (ignored then as now), and must still read and resume. A field counts as set
    when it differs from its default, or from its preset's value where the run's preset sets
    it. An encoding that declares no :attr:`~fooling.encodings.EncodingSpec.settings` (a
    plugin's ``None``) reads every field, and nothing is refused; so is an unknown encoding
    (reported, with close names, when it is made).

    Raises:
        UserError: e.g. ``--max-nodes 64 applies to the cppn encoding only; --encoding direct
            ignores it, drop it``.
    """
    encodings = registered_encodings()
    own = _encoding_spec(config.encoding, encodings)
    if own is None or own.settings is None:
        return
    defaults = {field.name: field.default for field in dataclasses.fields(RunConfig)}
    if config.preset in PRESETS:
        defaults.update(PRESETS[config.preset])
    for name in ENCODING_SETTINGS:
        value = getattr(config, name)
        if name in own.settings or value == defaults[name]:
            continue
        readers = [key for key, spec in encodings.items() if name in (spec.settings or ())]
        applies = (
            f"applies to the {' and '.join(readers)} encoding{'s' if len(readers) > 1 else ''} only"
            if readers
            else "applies to no registered encoding"
        )
        raise UserError(f"{_flag(name)} {value} {applies}; --encoding {own.name} ignores it, drop it")


@dataclasses.dataclass(frozen=True)
class RunConfig:
    """Everything that defines a MAP-Elites run.

    Frozen: every field is checked when the config is made, so a changed copy is made with
    :func:`dataclasses.replace` (checked again), never by assigning to a field. numpy's
    numbers (``np.int64(8)``) and a tuple or array of class names are taken as Python's.

    Attributes:
        model: the classifier: a registry name (``"mnist-lenet"``), ``timm:NAME``,
            ``torchvision:NAME``, an endpoint's URL, or a model file's reference
            (``PATH[?labels=...]``, its ``%``, ``&``, ``#``, ``?`` written escaped:
            :func:`fooling.fitness.sources.file_reference` writes one from a path).
        encoding: the name of a registered encoding (the built-in ``"direct"`` and ``"cppn"``,
            or a plugin of the entry-point group ``fooling.encodings``; see
            :mod:`fooling.encodings.registry`). A new run refuses a setting its encoding
            does not read (see :func:`check_encoding_settings`).
        generations: total generations, counting the random initial one (generation 0).
        population: children evaluated per generation (paper: 200 for MNIST).
        seed: every random draw derives from (seed, generation, batch index).
        out: run folder (local path or pyarrow filesystem URI).
        checkpoint_every: write a checkpoint every this many generations (0: only at the end).
        keep_checkpoints: keep this many newest readable checkpoints, deleting older ones
            (0: keep all); the newest good one is never deleted.
        batch_size: children per variation/scoring batch (0: the whole population);
            part of the random streams, so fixed for a run.
        mutation_probability: per-gene (direct) or per-weight (CPPN) mutation rate.
        mutation_eta: polynomial mutation's eta.
        halve_mutation_every: halve the direct encoding's rate every this many generations (0: never).
        crossover_probability: chance a child comes from SBX of two parents (direct only).
        crossover_eta: SBX eta.
        color_space: how 3-channel images get their colours, one of the encoding's
            :attr:`~fooling.encodings.EncodingSpec.color_spaces`: direct ``"rgb"`` (default)
            or ``"hsv"`` genes; CPPN outputs read as ``"hsv"`` (default), ``"hls"`` or
            ``"hls-opencv"`` (the original code's bytes as OpenCV 8-bit HLS). ``None`` (the
            default) becomes the encoding's
            :attr:`~fooling.encodings.EncodingSpec.default_color_space` when the config is
            made; stored configs of older versions are mapped by :meth:`from_json` (a CPPN
            run's ``"rgb"``, which meant HSV outputs, reads as ``"hsv"``).
        coordinates: CPPN inputs x, y: ``"unit"`` ([-1, 1]) or ``"pixel"`` (raw column and row).
        split_weight: CPPN add-node weights: ``"one"`` (NEAT) or ``"old"`` (the original code).
        max_nodes: capacity of a CPPN genome in nodes (inputs and outputs included).
        max_edges: capacity of a CPPN genome in connections.
        preset: name of the preset the run started from (see :data:`PRESETS`), or ``None``.
        image_size: side of the evolved images in pixels (0: the model's input size).
        crops: 1, or 10 for the paper's 10-crop averaged ImageNet fitness.
        classes: class names (or ``None`` for all) that get an archive cell; at least one.
        workers: mutator actors (0: everything in this process, no Ray).
        scorers: scorer actors (Ray only).
        address: Ray cluster address (``None``: start a local instance).
        device: scoring device (``None``: CUDA when present, else CPU).
        engine: scoring engine: ``"auto"`` (ONNX Runtime on the CPU, torch on CUDA), ``"torch"``
            or ``"onnxruntime"``. Archives are bit-identical for a fixed engine and device.
        vary_on: where children are made: ``"host"`` (numpy; mutator actors on Ray),
            ``"scorer"`` (torch, on the scoring device: genomes, variation, rendering and
            insertion never leave it; see :mod:`fooling.evo.on_device`) or ``"auto"`` (the
            scorer when it is a CUDA GPU, else the host). Each has its own random streams.
        max_queries: images the run may send its model in all (an endpoint's query budget),
            ``None``: no limit; counted in every checkpoint and continued on resume.
        emitter: how children are made: the name of a registered emitter (the built-in
            ``paper``, ``finetune``, ``gradient``, ``ascent``, ``focus``, or a plugin of the
            entry-point group ``fooling.emitters``; see :mod:`fooling.evo.emitters`).
        init: how the direct encoding draws generation 0: ``"paper"`` (every gene uniform;
            other encodings take only this) or ``"multiscale"`` (smooth noise of a random
            scale and gamma per image, for models that answer only their best class; see
            :meth:`fooling.encodings.DirectEncoding.random`). Its own random streams.
    """

    model: str = "mnist-lenet"
    encoding: str = "direct"
    generations: int = 200
    population: int = 200
    seed: int = 0
    out: str = "runs/run"
    checkpoint_every: int = 50
    keep_checkpoints: int = 5
    batch_size: int = 0
    mutation_probability: float = 0.1
    mutation_eta: float = 15.0
    halve_mutation_every: int = 0
    crossover_probability: float = 0.0
    crossover_eta: float = 10.0
    color_space: str | None = None
    coordinates: str = "unit"
    split_weight: str = "one"
    max_nodes: int = 48
    max_edges: int = 160
    image_size: int = 0
    crops: int = 1
    classes: list[str] | None = None
    workers: int = 0
    scorers: int = 1
    address: str | None = None
    device: str | None = None
    engine: str = "auto"
    preset: str | None = None
    emitter: str = "paper"
    vary_on: str = "auto"
    # Images the run may send its model at most, over all its generations and resumes (None: no
    # limit); the run stops with a checkpoint before a generation that would exceed it.
    max_queries: int | None = None
    init: str = "paper"

    def __post_init__(self) -> None:
        # Frozen: the normalised values are set once, here, before the checks.
        def set_field(name: str, value: Any) -> None:
            object.__setattr__(self, name, value)

        for field in dataclasses.fields(self):  # numpy's numbers, a tuple of classes: Python's own
            set_field(field.name, _plain(str(field.type).removesuffix(" | None"), getattr(self, field.name)))
        if isinstance(self.device, str):  # anything else is refused by validate
            set_field("device", normalise_device(self.device))
        if isinstance(self.out, os.PathLike):  # a pathlib.Path from Python callers
            set_field("out", os.fspath(self.out))
        if self.color_space is None:  # the encoding's own default (none for an unknown encoding)
            spec = _encoding_spec(self.encoding)
            set_field("color_space", spec.default_color_space if spec is not None else None)
        self.validate()

    def _check_kinds(self) -> None:
        """Raise :class:`UserError` naming the first field whose value is not of its annotated kind.

        Configs come from checkpoints too (untrusted JSON): a string, a bool or a list where a
        count belongs must be one line here, not an error deep inside the search.
        """
        for field in dataclasses.fields(self):
            value = getattr(self, field.name)
            kind = str(field.type)
            if value is None and kind.endswith(" | None"):
                continue
            description, accepts = _KINDS[kind.removesuffix(" | None")]
            if not accepts(value):
                raise UserError(f"{_flag(field.name)} must be {description}, not {_shown(value)}")

    def validate(self) -> None:
        """Raise :class:`UserError` naming the first field of the wrong kind or out of range.

        Also ``UnknownNameError`` (a :class:`UserError`) for an unknown engine or emitter.
        """
        self._check_kinds()
        if not _ENCODING_NAME.fullmatch(self.encoding):
            raise UserError(
                f"--encoding must be a name (letters, digits, '.', '_', '-'), not {_shown(self.encoding)}"
            )
        if not str(self.out).strip():
            raise UserError("--out is empty; give a folder")
        for name, most in COUNT_BOUNDS.items():
            value = getattr(self, name)
            least = 1 if name in ("generations", "population", "scorers", "max_nodes", "max_edges") else 0
            if not least <= value <= most:
                raise UserError(f"{_flag(name)} must be in [{least}, {most:,}], not {value:,}")
        if self.image_size < 0:
            raise UserError(f"--image-size must be >= 0, not {self.image_size}")
        for name in ("mutation_probability", "crossover_probability"):
            value = getattr(self, name)
            if not 0.0 <= value <= 1.0:
                raise UserError(f"{_flag(name)} must be in [0, 1], not {value}")
        for name in ("mutation_eta", "crossover_eta"):
            value = getattr(self, name)
            if not (value > 0 and math.isfinite(value)):
                raise UserError(f"{_flag(name)} must be a positive number, not {value}")
        self._check_color_space()
        _check_choice("coordinates", self.coordinates, ("unit", "pixel"))
        _check_choice("split-weight", self.split_weight, ("one", "old"))
        _check_choice("vary-on", self.vary_on, tuple(VARY_ON))
        _check_choice("init", self.init, DIRECT_INITS)
        spec = _encoding_spec(self.encoding)  # an unknown encoding is reported when it is made
        if self.init != "paper" and spec is not None and spec.name != "direct":
            raise UserError(
                f"--init {self.init} is for --encoding direct; --encoding {spec.name} takes paper"
            )
        # The smallest CPPN: 4 inputs, 3 outputs, every input connected to every output.
        if self.max_nodes < 7 or self.max_edges < 12:
            raise UserError(
                f"--max-nodes must be >= 7 and --max-edges >= 12, not {self.max_nodes} and {self.max_edges}"
            )
        if self.preset is not None and self.preset not in PRESETS:
            raise UserError(f"--preset {self.preset!r}: no such preset (known: {', '.join(PRESETS)})")
        if self.max_queries is not None and not 1 <= self.max_queries <= 1 << 62:
            raise UserError(f"--max-queries must be a positive number of images, not {self.max_queries}")
        if self.crops not in (1, 10):
            raise UserError(f"--crops must be 1 or 10, not {self.crops}")
        check_engine(self.engine)  # UnknownNameError with close names
        check_emitter(self.emitter, encoding=self.encoding, workers=self.workers, population=self.population)
        check_seed(self.seed)
        check_image_size(self.image_size)
        if self.classes is not None:
            if not self.classes:
                raise UserError("--classes is empty; give at least one class, or leave classes unset for all")
            seen = {name.lower() for name in self.classes}
            if len(seen) != len(self.classes):
                duplicate = next(n for i, n in enumerate(self.classes) if n.lower() in
                                 {m.lower() for m in self.classes[:i]})  # fmt: skip
                raise UserError(f"--classes names {duplicate!r} twice; give each class once")

    def _check_color_space(self) -> None:
        """Raise :class:`UserError` unless the run's encoding takes ``color_space``.

        Only a registered encoding is asked (an unknown one is reported, with close names,
        when the encoding is made); then any registered encoding's colour space passes.
        """
        if self.color_space is None:  # an unknown encoding: no default to take
            return
        encodings = registered_encodings()
        own = _encoding_spec(self.encoding, encodings)
        if own is not None and self.color_space in own.color_spaces:
            return
        spaces = tuple(dict.fromkeys(space for spec in encodings.values() for space in spec.color_spaces))
        if own is None or self.color_space not in (*spaces, *own.renamed_color_spaces):
            _check_choice("color-space", self.color_space, spaces)  # a name no encoding has
        if own is not None:
            takers = " or ".join(f"--encoding {name}" for name, spec in encodings.items()
                                 if self.color_space in spec.color_spaces)  # fmt: skip
            *others, last = own.color_spaces
            takes = f"{', '.join(others)} or {last}" if others else last
            is_for = f"is for {takers}" if takers else "is no colour space now"
            renamed = own.renamed_color_spaces.get(self.color_space)
            old_name = f" ({self.color_space} was its old name for {renamed})" if renamed else ""
            raise UserError(
                f"--color-space {self.color_space} {is_for}; --encoding {own.name} takes {takes}{old_name}"
            )

    @classmethod
    def from_preset(cls, preset: str | None, **fields: Any) -> RunConfig:
        """A config of ``preset``'s values, with ``fields`` (explicit choices) taking precedence.

        Raises:
            UnknownNameError: no such preset (close names suggested).
            UserError: a value out of range, said to come from the preset where it does.
        """
        if preset is None:
            return cls(**fields)
        name = resolve_name(preset, PRESETS, "preset")
        try:
            return cls(**{**PRESETS[name], **fields, "preset": name})
        except UserError as error:
            message = _preset_clash(name, fields, str(error))
            if message == str(error):  # the preset had no part in it: the error as it is
                raise
            raise UserError(message) from None

    @property
    def effective_batch_size(self) -> int:
        """Children per variation/scoring batch: ``batch_size``, or the population when it is 0."""
        return self.batch_size or self.population

    def to_json(self) -> str:
        """Every field as a JSON object with sorted keys (what :meth:`from_json` reads back)."""
        return json.dumps(dataclasses.asdict(self), sort_keys=True)

    @classmethod
    def from_json(cls, text: str) -> RunConfig:
        """Rebuild a config, ignoring keys this version does not know.

        Configs stored by older versions read as the same run: one stored before the engine
        was a setting was scored by torch, and a colour space an encoding has since renamed
        (:attr:`~fooling.encodings.EncodingSpec.renamed_color_spaces`: a CPPN run's ``"rgb"``,
        which meant HSV outputs) reads as its name now, so the run resumes bit-identically.
        An empty list of classes, which meant all classes before it was refused, reads as ``None``.

        Raises:
            UserError: not a JSON object, or a value out of range.
        """
        try:
            data: Any = json.loads(text)
        except ValueError as error:
            raise UserError(f"run config is not valid JSON ({error})") from None
        if not isinstance(data, dict):
            raise UserError("run config is not a JSON object")
        known = {field.name for field in dataclasses.fields(cls)}
        # Runs stored before the engine was a setting were scored by torch.
        data.setdefault("engine", "torch")
        spec = _encoding_spec(data.get("encoding", cls.encoding))
        space = data.get("color_space")
        if spec is not None and isinstance(space, str):
            data["color_space"] = spec.renamed_color_spaces.get(space, space)
        if data.get("classes") == []:  # stored before an empty list was refused: it meant all classes
            data["classes"] = None
        return cls(**{key: value for key, value in data.items() if key in known})

    def describe(self) -> str:
        """One line per field, for the start of a run's log."""
        return "\n".join(f"  {key:22} {value}" for key, value in dataclasses.asdict(self).items())
