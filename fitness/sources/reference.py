"""The model-reference syntax: prefixes, model-file suffixes and the ``PATH?options`` of files.

A reference is what ``--model`` takes: ``timm:NAME``, ``torchvision:NAME[.WEIGHTS]``, a model
file ``PATH[?labels=FILE&input-size=H,W&channels=C&mean=M&std=S]`` (the options the file may not
say about itself travel inside the reference, so that a run's stored ``model`` rebuilds the
same classifier: :func:`file_reference`), or a name (the registry, plugins). Option values are
percent-decoded, and the file's path and the labels path are written with ``%``, ``&``, ``#``
and ``?`` escaped (``%25``, ``%26``, ``%23``, ``%3F``), so any file name can be a model or
``--labels``. Which resolver takes a reference is decided in :mod:`fooling.fitness.sources.resolve`.
"""

from __future__ import annotations

import dataclasses
import re
import urllib.parse
from pathlib import Path

import numpy as np

from fooling.encodings.errors import UserError

TIMM_PREFIX = "timm:"
TORCHVISION_PREFIX = "torchvision:"
# Reference prefix -> the kind of source it names (each kind's resolver: sources.resolve).
PREFIXES = {TIMM_PREFIX: "timm", TORCHVISION_PREFIX: "torchvision"}
# File suffix -> what the file must hold.
FILE_SUFFIXES = {".pt": "torchscript", ".ts": "torchscript", ".pt2": "export", ".onnx": "onnx"}
# Suffixes of pickled weights: refused with a message saying what to save instead.
PICKLE_SUFFIXES = (".pth", ".pkl", ".pickle", ".bin", ".ckpt")


def prefixed(reference: str) -> tuple[str, str] | None:
    """``(kind, the rest)`` of a reference with a known prefix, else ``None``.

    ``"timm:resnet50"`` -> ``("timm", "resnet50")``.
    """
    for prefix, kind in PREFIXES.items():
        if reference.startswith(prefix):
            return kind, reference[len(prefix) :]
    return None


def parse_input_size(text: str) -> tuple[int, int]:
    """``"H,W"`` (or ``"S"`` for a square) -> ``(H, W)``.

    Raises:
        UserError: not one or two positive integers.
    """
    try:
        sides = tuple(int(part) for part in text.replace("x", ",").split(","))
    except ValueError:
        sides = ()
    if len(sides) == 1:
        sides = sides * 2
    if len(sides) != 2 or min(sides) < 1 or max(sides) > 4096:
        raise UserError(f"--input-size expects H,W (two integers in 1..4096), got {text!r}")
    return (sides[0], sides[1])


def parse_channels(text: str) -> int:
    """``"1"`` or ``"3"`` -> the channel count.

    Raises:
        UserError: anything else.
    """
    if text.strip() not in ("1", "3"):
        raise UserError(f"--channels expects 1 (gray) or 3 (RGB), got {text!r}")
    return int(text)


def parse_floats(text: str, what: str) -> tuple[float, ...]:
    """``"0.5"`` or ``"0.485,0.456,0.406"`` -> finite floats.

    Raises:
        UserError: not a comma-separated list of finite numbers.
    """
    try:
        values = tuple(float(part) for part in text.split(","))
    except ValueError:
        values = ()
    if not values or not all(np.isfinite(values)):
        raise UserError(f"{what} expects comma-separated numbers, got {text!r}")
    return values


@dataclasses.dataclass(frozen=True)
class FileOptions:
    """What a model file may not say about itself.

    Attributes:
        labels: path of a text file with one class name per line (``None``: ``"0"``, ``"1"``,
            ... or the ImageNet names for 1,000 outputs).
        input_size: ``(height, width)`` (``None``: read from the file, where it holds it).
        channels: 1 or 3 (``None``: from the file, else 3).
        mean, std: per-channel (or one shared) normalisation of images in ``[0, 1]``
            (``None``: 0 and 1).
    """

    labels: str | None = None
    input_size: tuple[int, int] | None = None
    channels: int | None = None
    mean: tuple[float, ...] | None = None
    std: tuple[float, ...] | None = None

    def given(self) -> bool:
        """Whether any option is set (not ``None``)."""
        return any(getattr(self, field.name) is not None for field in dataclasses.fields(self))

    def query(self) -> str:
        """The options as ``key=value&...`` in a fixed order (empty when none are given)."""
        parts = []
        if self.labels is not None:
            parts.append(f"labels={escape_option(self.labels)}")
        if self.input_size is not None:
            parts.append(f"input-size={self.input_size[0]},{self.input_size[1]}")
        if self.channels is not None:
            parts.append(f"channels={self.channels}")
        for key in ("mean", "std"):
            value = getattr(self, key)
            if value is not None:
                parts.append(f"{key}={','.join(repr(float(v)) for v in value)}")
        return "&".join(parts)


# What a path may hold that would end its option value early (or, on an endpoint's URL, begin a
# fragment): escaped in a reference's query, "%" first. The rest stays readable.
_ESCAPES = {"%": "%25", "&": "%26", "#": "%23", "?": "%3F"}


def escape_option(value: str) -> str:
    """``value`` as a reference's query holds it (the inverse of ``urllib.parse.unquote``).

    ``"/data/cats&dogs.txt"`` -> ``"/data/cats%26dogs.txt"``.
    """
    return "".join(_ESCAPES.get(character, character) for character in value)


# The keys of a reference's options (``PATH?labels=FILE&input-size=H,W...``), as its query spells them.
FILE_OPTION_KEYS = ("labels", "input-size", "channels", "mean", "std")


def parse_file_option(key: str, value: str) -> tuple[str, object]:
    """``(FileOptions field, value)`` of option ``key`` (one of :data:`FILE_OPTION_KEYS`).

    Raises:
        UserError: a bad value.
        KeyError: ``key`` is no file option (the caller says what it knows).
    """
    if key == "labels":
        return "labels", value
    if key == "input-size":
        return "input_size", parse_input_size(value)
    if key == "channels":
        return "channels", parse_channels(value)
    if key in ("mean", "std"):
        return key, parse_floats(value, f"--{key}")
    raise KeyError(key)


def parse_options(query: str) -> FileOptions:
    """The inverse of :meth:`FileOptions.query`.

    Raises:
        UserError: an unknown key or a bad value.
    """
    fields: dict = {}
    for part in filter(None, query.split("&")):
        key, _, value = part.partition("=")
        key = urllib.parse.unquote(key).strip().lower().replace("_", "-")
        value = urllib.parse.unquote(value)  # see escape_option
        if key not in FILE_OPTION_KEYS:
            raise UserError(f"unknown model option {key!r} (known: {', '.join(FILE_OPTION_KEYS)})")
        name, parsed = parse_file_option(key, value)
        fields[name] = parsed
    return FileOptions(**fields)


# The escapes of _ESCAPES, which a reference's path is written with (file_reference); no other
# "%XX" in a path is one.
_PATH_ESCAPE = re.compile("|".join(_ESCAPES.values()), re.IGNORECASE)
_UNESCAPES = {escape: character for character, escape in _ESCAPES.items()}


def _path_and_query(reference: str) -> tuple[str, str]:
    """``(PATH, options text)`` of ``"PATH?options"``, PATH decoded (see :func:`file_reference`)."""
    path, _, query = reference.partition("?")
    return _PATH_ESCAPE.sub(lambda match: _UNESCAPES[match[0].upper()], path), query


def _typed_path(name: str) -> str | None:
    """The file that ``name``, as a user types it, names whole (``~`` expanded); ``None``: none does.

    A path that holds ``?`` is typed as it is; only a stored reference is written escaped.
    """
    expanded = str(Path(name).expanduser()) if name.startswith("~") else name
    return expanded if _is_file(expanded) else None


def _is_file(path: str) -> bool:
    try:
        return Path(path).is_file()
    except OSError:  # a name too long for the system
        return False


def split_reference(reference: str) -> tuple[str, FileOptions]:
    """``"PATH?options"`` -> ``(PATH, options)``.

    ``%``, ``&``, ``#`` and ``?`` in PATH are written ``%25``, ``%26``, ``%23``, ``%3F``, as
    :func:`file_reference` writes them (what a user types goes through :func:`with_options`).

    Raises:
        UserError: bad options.
    """
    path, query = _path_and_query(reference)
    return path, parse_options(query)


def is_model_file(name: str) -> bool:
    """True when ``name`` names a model file: a known suffix, or a file that exists.

    ``name`` is a reference, or a path as a user types it (:func:`with_options`).
    """
    if _typed_path(name) is not None:
        return True
    path = _path_and_query(name)[0]
    if not path or prefixed(path) is not None:
        return False
    suffix = Path(path).suffix.lower()
    return suffix in FILE_SUFFIXES or suffix in PICKLE_SUFFIXES or _is_file(path)


def file_reference(path: str, options: FileOptions = FileOptions()) -> str:
    """The canonical reference of model file ``path`` with ``options``.

    Paths are absolute (so a run resumed from another directory finds the files), written with
    ``%``, ``&``, ``#`` and ``?`` escaped (:func:`escape_option`), and options come in a fixed order.
    """
    labels = options.labels
    if labels is not None:
        labels = str(Path(labels).expanduser().absolute())
    options = dataclasses.replace(options, labels=labels)
    absolute = escape_option(str(Path(path).expanduser().absolute()))
    query = options.query()
    return f"{absolute}?{query}" if query else absolute


def with_options(model: str, options: FileOptions) -> str:
    """``model`` with the command line's file ``options`` folded in (files only).

    ``model`` is what a user typed: the path of an existing file is taken whole, whatever it
    holds (``~`` expanded); otherwise it is read as a reference, ``PATH?options``.

    Raises:
        UserError: options given for a model that is not a file.
    """
    if not is_model_file(model):
        if options.given():
            raise UserError(
                f"--labels, --input-size, --channels, --mean and --std describe model files "
                f"(.pt, .ts, .pt2, .onnx), not {model!r}"
            )
        return model
    typed = _typed_path(model)
    path, inline = (typed, FileOptions()) if typed is not None else split_reference(model)
    merged = {
        field.name: getattr(options, field.name)
        if getattr(options, field.name) is not None
        else getattr(inline, field.name)
        for field in dataclasses.fields(FileOptions)
    }
    return file_reference(path, FileOptions(**merged))
