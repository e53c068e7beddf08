"""Models from outside the registry: ``timm:NAME``, ``torchvision:NAME``, model files, plugins.

What ``--model`` accepts besides the registry's names (see :func:`fooling.fitness.get_model_spec`):

* ``timm:NAME`` (``timm:resnet50.a1_in1k``): timm builds it; weights come from the local cache
  (Hugging Face hub cache or torch hub's ``checkpoints``), or are downloaded where the network
  allows (never with ``FOOLING_OFFLINE`` set). Input size, mean and std from timm's pretrained
  config; the 1,000 ImageNet names where the head has 1,000 outputs.
* ``torchvision:NAME[.WEIGHTS]`` (``torchvision:alexnet``): the classification weights enum's
  default (or named) weights, its crop size, mean, std and categories.
* a file, told apart by its suffix and checked by its contents:

  - ``PATH.pt`` / ``PATH.ts``: TorchScript (``torch.jit.save``);
  - ``PATH.pt2``: a ``torch.export`` ExportedProgram (``torch.export.save``);
  - ``PATH.onnx``: scored with ONNX Runtime (no gradients: perturb and ascent refuse it).

  Options (the CLI's ``--labels``, ``--input-size``, ``--channels``, ``--mean``, ``--std``) travel
  inside the reference string as ``PATH?labels=FILE&input-size=H,W&channels=C&mean=M&std=S``, so
  that a run's stored ``model`` rebuilds the same classifier (:func:`file_reference`).
* an installed plugin: a package declaring an entry point in the group ``fooling.models``
  whose object, called with no arguments, returns a :class:`ModelSpec`.

Loading never runs a Python pickle, nor text from the file:

* ``torch.jit.load`` reads the archive with TorchScript's own C++ deserializer; its ``data.pkl``
  and ``constants.pkl`` are read by TorchScript's restricted unpickler, which rebuilds tensors
  and TorchScript types only and never imports or calls Python objects.
* ``torch.export.load`` is *not* pickle-free on its own (checked in torch 2.14): weights stored
  with ``use_pickle`` and the sample inputs go through ``torch.load``, which falls back to
  ``weights_only=False`` when the safe load fails, and "opaque" constants go through
  ``pickle.loads``. So archives holding opaque objects are refused before loading, and
  ``TORCH_FORCE_WEIGHTS_ONLY_LOAD=1`` is set while loading, which makes every ``torch.load``
  call use the safe weights-only unpickler whatever its caller asked for.
* ``torch.export.load`` also hands text from the archive to evaluators (shape expressions to
  ``sympy.sympify``, guards to ``exec``, names into generated source, operator names looked
  up from ``torch``): every string of the archive's programs is checked against what torch
  writes in its field before torch reads anything (:func:`check_export_archive`).
* An ONNX file's external data is read here, from the model's own folder only, into a
  self-contained model (ONNX Runtime would resolve it against the current directory), and
  belongs to the model's SHA-256 (:func:`read_model`).
* timm and torchvision weights are read with the same variable set (safetensors need none).
* A plain ``torch.save`` file (a pickled state dict or module) is refused with a message
  saying how to save the model instead.

Model files reach Ray actors through the object store: a :class:`FileNetwork` pickles as the
model's bytes (an ONNX file's with its external data in them) and is rebuilt from them on the
other side, so nodes need no copy of the file.
"""

from __future__ import annotations

import contextlib
import dataclasses
import functools
import hashlib
import importlib.metadata
import importlib.util
import io
import json
import logging
import os
import pickle
import re
import site
import socket
import sysconfig
import warnings
import zipfile
from collections.abc import Iterator
from pathlib import Path, PurePosixPath, PureWindowsPath
from urllib.parse import urlparse

import numpy as np
import torch
from torch import nn

from fooling.fitness._home import offline
from fooling.fitness._names import UnknownNameError, close_names
from fooling.fitness.engine import onnx_session
from fooling.fitness.imagenet import imagenet_class_names
from fooling.fitness.images import RESAMPLING
from fooling.fitness.models import LoadedModel, ModelSpec, ModelUnavailableError, register_resolver

logger = logging.getLogger(__name__)

TIMM_PREFIX = "timm:"
TORCHVISION_PREFIX = "torchvision:"
PLUGIN_GROUP = "fooling.models"
# File suffix -> what the file must hold.
FILE_SUFFIXES = {".pt": "torchscript", ".ts": "torchscript", ".pt2": "export", ".onnx": "onnx"}
# Suffixes of pickled weights: refused with a message saying what to save instead.
PICKLE_SUFFIXES = (".pth", ".pkl", ".pickle", ".bin", ".ckpt")
KIND_NAMES = {"torchscript": "TorchScript", "export": "torch.export", "onnx": "ONNX"}
# How to save a model as a file this module reads.
SAVE_HINT = (
    "save the network with torch.jit.save(torch.jit.script(model), 'model.pt'), "
    "torch.export.save(torch.export.export(model, (example,)), 'model.pt2') or torch.onnx.export"
)
# timm's crop_pct where a pretrained config gives none (timm.data.DEFAULT_CROP_PCT).
TIMM_DEFAULT_CROP_PCT = 0.875
# Seconds a weights download may wait on the network.
DOWNLOAD_TIMEOUT_S = 30


class ModelFileError(ValueError):
    """A model file that cannot be used (missing, not a model, a pickle, bad options); one line."""


class GradientUnavailableError(ValueError):
    """A model without gradients (scored by ONNX Runtime) asked for them; one line."""


def reason(error: BaseException) -> str:
    """One line saying why ``error`` happened, at most 200 characters.

    For TorchScript's many-line errors it is the last line naming an exception
    (``RuntimeError: ...``), else the first line.
    """
    lines = [line.strip() for line in str(error).splitlines() if line.strip()]
    if not lines:
        return type(error).__name__
    if lines[0].startswith("[ONNXRuntimeError]"):  # the useful part is on the next lines
        return " ".join(lines)[:200]
    named = [line for line in lines if line.split(":", 1)[0].endswith(("Error", "Exception"))]
    line = named[-1].split(":", 1)[1].strip() if named and ":" in named[-1] else lines[0]
    return (line or lines[0])[:200]


@contextlib.contextmanager
def weights_only_loads() -> Iterator[None]:
    """While inside: every ``torch.load`` uses the safe weights-only unpickler.

    This holds even where its caller passes ``weights_only=False``
    (``TORCH_FORCE_WEIGHTS_ONLY_LOAD``, read per call).
    """
    previous = os.environ.get("TORCH_FORCE_WEIGHTS_ONLY_LOAD")
    os.environ["TORCH_FORCE_WEIGHTS_ONLY_LOAD"] = "1"
    try:
        yield
    finally:
        if previous is None:
            os.environ.pop("TORCH_FORCE_WEIGHTS_ONLY_LOAD", None)
        else:
            os.environ["TORCH_FORCE_WEIGHTS_ONLY_LOAD"] = previous


@contextlib.contextmanager
def _network_timeout(seconds: float = DOWNLOAD_TIMEOUT_S) -> Iterator[None]:
    previous = socket.getdefaulttimeout()
    socket.setdefaulttimeout(seconds)
    try:
        yield
    finally:
        socket.setdefaulttimeout(previous)


# --- file options and reference strings ----------------------------------------------------


def parse_input_size(text: str) -> tuple[int, int]:
    """``"H,W"`` (or ``"S"`` for a square) -> ``(H, W)``.

    Raises:
        ValueError: not one or two positive integers.
    """
    try:
        sides = tuple(int(part) for part in text.replace("x", ",").split(","))
    except ValueError:
        sides = ()
    if len(sides) == 1:
        sides = sides * 2
    if len(sides) != 2 or min(sides) < 1 or max(sides) > 4096:
        raise ValueError(f"--input-size expects H,W (two integers in 1..4096), got {text!r}")
    return (sides[0], sides[1])


def parse_channels(text: str) -> int:
    """``"1"`` or ``"3"`` -> the channel count.

    Raises:
        ValueError: anything else.
    """
    if text.strip() not in ("1", "3"):
        raise ValueError(f"--channels expects 1 (gray) or 3 (RGB), got {text!r}")
    return int(text)


def parse_floats(text: str, what: str) -> tuple[float, ...]:
    """``"0.5"`` or ``"0.485,0.456,0.406"`` -> finite floats.

    Raises:
        ValueError: not a comma-separated list of finite numbers.
    """
    try:
        values = tuple(float(part) for part in text.split(","))
    except ValueError:
        values = ()
    if not values or not all(np.isfinite(values)):
        raise ValueError(f"{what} expects comma-separated numbers, got {text!r}")
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
            parts.append(f"labels={self.labels}")
        if self.input_size is not None:
            parts.append(f"input-size={self.input_size[0]},{self.input_size[1]}")
        if self.channels is not None:
            parts.append(f"channels={self.channels}")
        for key in ("mean", "std"):
            value = getattr(self, key)
            if value is not None:
                parts.append(f"{key}={','.join(repr(float(v)) for v in value)}")
        return "&".join(parts)


def parse_options(query: str) -> FileOptions:
    """The inverse of :meth:`FileOptions.query`.

    Raises:
        ValueError: an unknown key or a bad value.
    """
    fields: dict = {}
    for part in filter(None, query.split("&")):
        key, _, value = part.partition("=")
        key = key.strip().lower().replace("_", "-")
        if key == "labels":
            fields["labels"] = value
        elif key == "input-size":
            fields["input_size"] = parse_input_size(value)
        elif key == "channels":
            fields["channels"] = parse_channels(value)
        elif key in ("mean", "std"):
            fields[key] = parse_floats(value, f"--{key}")
        else:
            raise ValueError(f"unknown model option {key!r} (known: labels, input-size, channels, mean, std)")
    return FileOptions(**fields)


def split_reference(reference: str) -> tuple[str, FileOptions]:
    """``"PATH?options"`` -> ``(PATH, options)``.

    Raises:
        ValueError: bad options.
    """
    path, _, query = reference.partition("?")
    return path, parse_options(query)


def is_model_file(name: str) -> bool:
    """True when ``name`` names a model file: a known suffix, or a file that exists."""
    path = name.partition("?")[0]
    if not path or path.startswith((TIMM_PREFIX, TORCHVISION_PREFIX)):
        return False
    suffix = Path(path).suffix.lower()
    return suffix in FILE_SUFFIXES or suffix in PICKLE_SUFFIXES or Path(path).is_file()


def file_reference(path: str, options: FileOptions = FileOptions()) -> str:
    """The canonical reference of model file ``path`` with ``options``.

    Paths are absolute (so a run resumed from another directory finds the files) and options
    come in a fixed order.
    """
    labels = options.labels
    if labels is not None:
        labels = str(Path(labels).expanduser().absolute())
    options = dataclasses.replace(options, labels=labels)
    absolute = str(Path(path).expanduser().absolute())
    query = options.query()
    return f"{absolute}?{query}" if query else absolute


def with_options(model: str, options: FileOptions) -> str:
    """``model`` with the command line's file ``options`` folded in (files only).

    Raises:
        ValueError: options given for a model that is not a file.
    """
    if not is_model_file(model):
        if options.given():
            raise ValueError(
                f"--labels, --input-size, --channels, --mean and --std describe model files "
                f"(.pt, .ts, .pt2, .onnx), not {model!r}"
            )
        return model
    path, inline = split_reference(model)
    merged = {
        field.name: getattr(options, field.name)
        if getattr(options, field.name) is not None
        else getattr(inline, field.name)
        for field in dataclasses.fields(FileOptions)
    }
    return file_reference(path, FileOptions(**merged))


# --- reading model files safely ------------------------------------------------------------


def _zip_names(data: bytes) -> list[str] | None:
    """The member names when ``data`` is a zip archive, else ``None``."""
    try:
        with zipfile.ZipFile(io.BytesIO(data)) as archive:
            return archive.namelist()
    except zipfile.BadZipFile:
        return None


def sniff(data: bytes) -> str:
    """What a torch model file holds: ``"torchscript"``, ``"export"``, ``"pickle"`` or ``"unknown"``."""
    names = _zip_names(data)
    if names is None:
        # A legacy torch.save file is a bare pickle stream: protocol opcode 0x80 first.
        return "pickle" if data[:1] == b"\x80" else "unknown"
    stripped = {name.split("/", 1)[1] if "/" in name else name for name in names}
    if "archive_format" in stripped or any(name.startswith("models/") for name in stripped):
        return "export"
    if "data.pkl" in stripped and any(name.startswith("code/") for name in stripped):
        return "torchscript"
    if "data.pkl" in stripped:
        return "pickle"
    return "unknown"


# --- checking a torch.export archive before torch reads it ---------------------------------
#
# torch.export.load hands text from the archive to Python evaluators: every shape expression
# (``expr_str``) goes to ``sympy.sympify``, which runs Python; the ``guards_code`` strings are
# pasted into a function that ``exec`` runs; input and node names, parameter names and the keys
# of the input structure are pasted into the module's generated source; node targets are looked
# up by attribute from ``torch`` (``torch.os.system`` resolves), and the input structure may
# name a module to import. So every string the deserializer reads is checked first against
# what torch itself writes (torch 2.14), and anything else is refused before torch sees it.

# Archive members torch.export.load reads, relative to the archive's root folder. Anything else
# (compiled AOTInductor code it would load, ExecuTorch programs, the legacy format) is refused.
_EXPORT_MEMBERS = re.compile(
    r"archive_format|archive_version|byteorder|\.data/version|\.data/serialization_id"
    r"|models/\w+\.json|data/sample_inputs/\w+\.pt"
    r"|data/weights/(?:\w+_weights_config\.json|weight_\d+)"
    r"|data/constants/(?:\w+_constants_config\.json|tensor_\d+)"
    r"|extra/[\w.-]+",  # read as text into a dict, never parsed
    re.ASCII,
)
# Largest JSON member read (its text is parsed whole).
MAX_EXPORT_JSON_BYTES = 256 * 2**20
# Deepest nesting of the program's JSON, and of one expression, that is accepted.
_MAX_JSON_DEPTH = 256
_MAX_EXPRESSION_DEPTH = 64
# Longest expression accepted (torch's are a few hundred characters).
MAX_EXPRESSION_CHARS = 4096
# Largest integer literal in an expression (int64), and largest literal exponent or shift:
# ``Pow(Integer(10), Integer(10**18))`` would make sympy compute a number of 10**18 digits.
_MAX_LITERAL = 2**63
_MAX_EXPONENT = 64

# Symbols torch names its shape variables with (torch.utils._sympy.symbol.prefix_str).
_SYMBOL_NAME = re.compile(r"(?:s|u|ps|zf|zuf|tmp|idx|i|x|y|z|h|r0_|r1_|indirect|view)\d{1,9}", re.ASCII)


def _words(text: str) -> frozenset[str]:
    return frozenset(text.split())


# sympy classes sympy's srepr writes for shape expressions, and torch's own functions
# (the deserializer's ``sympy_functions``); a call of any other name is refused.
_EXPRESSION_FUNCTIONS = _words(
    "Symbol Integer Rational Float Add Mul Pow Max Min Abs Mod Equality Unequality StrictLessThan "
    "LessThan StrictGreaterThan GreaterThan And Or Not Eq Ne Lt Le Gt Ge "
    "FloorDiv ModularIndexing Where PythonMod CleanDiv CeilToInt FloorToInt CeilDiv LShift RShift "
    "PowByNatural FloatPow FloatTrueDiv IntTrueDiv IsNonOverlappingAndDenseIndicator TruncToFloat "
    "TruncToInt RoundToInt RoundDecimal ToFloat Identity"
)
# Functions whose second argument is an exponent or a shift: it must be a small literal.
_EXPONENT_FUNCTIONS = frozenset({"Pow", "PowByNatural", "FloatPow", "LShift", "RShift"})
# Names torch's Python printer writes into guards (torch.fx.experimental.symbolic_shapes).
_GUARD_FUNCTIONS = frozenset({"max", "min", "abs", "int", "float", "round"})
_MATH_NAMES = frozenset({"floor", "ceil", "trunc", "sqrt", "isnan", "inf", "nan"})
_SOURCE_METHODS = frozenset({"size", "stride", "storage_offset"})
_CONSTANTS = frozenset({"oo", "int_oo", "zoo", "nan", "true", "false", "True", "False"})
# sympy assumptions a Symbol may carry (sympy.core.assumptions._assume_defined).
_ASSUMPTIONS = _words(
    "algebraic antihermitian commutative complex composite even extended_negative extended_nonnegative "
    "extended_nonpositive extended_nonzero extended_positive extended_real finite hermitian imaginary "
    "infinite integer irrational negative noninteger nonnegative nonpositive nonzero odd polar positive "
    "prime rational real transcendental zero"
)
_EXPRESSION_TOKEN = re.compile(
    r" *(?:(?P<number>\d+(?:\.\d+)?(?:[eE][+-]?\d+)?)|(?P<name>[A-Za-z_]\w*)"
    r"|(?P<string>'[\w.+-]*')|(?P<op>\*\*|//|==|!=|<=|>=|[-+*/%<>()\[\],.=]))",
    re.ASCII,
)
_COMPARISONS = frozenset({"==", "!=", "<=", ">=", "<", ">"})

# Node targets the deserializer resolves: torch operators, and the few Python functions torch
# writes for symbolic sizes (torch._export.serde.serialize._SYM_OPS and operator.getitem).
_PYTHON_TARGETS = _words(
    " ".join(f"_operator.{name}" for name in _words(
        "getitem eq ne le ge lt gt neg pos mul add sub floordiv mod pow truediv and_ or_ lshift "
        "rshift not_ abs"
    ))
    + " math.trunc math.floor math.ceil math.sqrt "
    + " ".join(f"torch.sym_{name}" for name in _words("not int float ite max min sqrt sum"))
)  # fmt: skip
_OPERATOR_PART = r"(?!__)[A-Za-z_]\w*"
_TORCH_OPERATOR = re.compile(
    rf"torch\.ops\.(?:higher_order\.{_OPERATOR_PART}"
    rf"|(?!(?:higher_order|import_module|load_library|loaded_libraries)\.){_OPERATOR_PART}"
    rf"\.{_OPERATOR_PART}\.{_OPERATOR_PART})",
    re.ASCII,
)
# Names of values, inputs, parameters and modules: pasted into generated source as they are.
_DOTTED_NAME = re.compile(r"(?:[A-Za-z_]\w*(?:\.\w+)*)?", re.ASCII)
_IDENTIFIER = re.compile(r"[A-Za-z_]\w*", re.ASCII)
# Schema fields whose value maps names to schema objects (the keys are names, not fields).
_NAME_MAPS = frozenset(
    {"tensor_values", "sym_int_values", "sym_bool_values", "sym_float_values", "custom_obj_values",
     "range_constraints", "opset_version", "treespec_namedtuple_fields", "as_string_to_argument",
     "config"}
)  # fmt: skip
# Fields of free text: kept as data, printed into comments at most (one line each).
_TEXT_FIELDS = frozenset({"stack_trace", "metadata"})
# Fields of strings that generated code holds as quoted literals.
_LITERAL_FIELDS = frozenset({"as_string", "as_strings", "torch_version"})
# Input and output structures (pytree): the types torch writes for a model's arguments.
_TREESPEC_TYPES = frozenset(
    {None, "builtins.tuple", "builtins.list", "builtins.dict", "collections.OrderedDict"}
)


class _Refused(ValueError):
    """A string of an archive that does not have the form torch writes there."""


class _ExpressionChecker:
    """A recursive-descent recogniser of the shape expressions torch writes; evaluates nothing.

    It accepts sympy's ``srepr`` form (``Mul(Integer(2), Symbol('s77', positive=True,
    integer=True))``) and the infix form (``2*s77 + FloorDiv(s77, 3)``): integers, torch's
    symbol names, ``+ - * / // % **`` (a literal exponent only), comparisons, parentheses and
    calls of the functions in ``_EXPRESSION_FUNCTIONS``. With ``guard``, also what torch's
    Python printer writes into ``guards_code``: input sizes (``L['x'].size()[0]``), ``and``,
    ``or``, ``not`` and a few functions (``max``, ``math.floor``, ...).
    """

    def __init__(self, text: str, guard: bool = False) -> None:
        self.guard = guard
        self.depth = 0
        if len(text) > MAX_EXPRESSION_CHARS:
            raise _Refused(f"{len(text)} characters long (at most {MAX_EXPRESSION_CHARS})")
        self.tokens: list[tuple[str, str]] = []
        position = 0
        while position < len(text.rstrip(" ")):
            match = _EXPRESSION_TOKEN.match(text, position)
            if match is None or match.end() == position:
                raise _Refused(f"unexpected {text[position : position + 12]!r}")
            kind = match.lastgroup
            assert kind is not None  # every alternative is a named group
            self.tokens.append((kind, match.group(kind)))
            position = match.end()
        self.position = 0

    def check(self) -> None:
        """Raise :class:`_Refused` unless the whole text is one expression."""
        self.expression()
        if self.position != len(self.tokens):
            raise _Refused(f"unexpected {self.peek()[1]!r}")

    # -- tokens

    def peek(self) -> tuple[str, str]:
        return self.tokens[self.position] if self.position < len(self.tokens) else ("end", "end of text")

    def accept(self, kind: str, *texts: str) -> str | None:
        token_kind, text = self.peek()
        if token_kind == kind and (not texts or text in texts):
            self.position += 1
            return text
        return None

    def expect(self, kind: str, *texts: str) -> str:
        text = self.accept(kind, *texts)
        if text is None:
            wanted = " or ".join(repr(text) for text in texts) if texts else kind
            raise _Refused(f"expected {wanted}, found {self.peek()[1]!r}")
        return text

    def nested(self, parse) -> None:
        self.depth += 1
        if self.depth > _MAX_EXPRESSION_DEPTH:
            raise _Refused(f"nested deeper than {_MAX_EXPRESSION_DEPTH}")
        parse()
        self.depth -= 1

    # -- grammar, loosest binding first

    def expression(self) -> None:
        self.nested(self.disjunction)

    def disjunction(self) -> None:
        self.conjunction()
        while self.guard and self.accept("name", "or"):
            self.conjunction()

    def conjunction(self) -> None:
        self.negation()
        while self.guard and self.accept("name", "and"):
            self.negation()

    def negation(self) -> None:
        if self.guard and self.accept("name", "not"):
            self.nested(self.negation)
        else:
            self.comparison()

    def comparison(self) -> None:
        self.arithmetic()
        while self.accept("op", *_COMPARISONS):
            self.arithmetic()

    def arithmetic(self) -> None:
        self.term()
        while self.accept("op", "+", "-"):
            self.term()

    def term(self) -> None:
        self.factor()
        while self.accept("op", "*", "/", "//", "%"):
            self.factor()

    def factor(self) -> None:
        if self.accept("op", "+", "-"):
            self.nested(self.factor)
        else:
            self.power()

    def power(self) -> None:
        self.primary()
        if self.accept("op", "**"):
            self.small_literal()

    def small_literal(self) -> None:
        """An integer literal of at most ``_MAX_EXPONENT`` (maybe negative, maybe ``Integer(n)``)."""
        wrapped = self.accept("name", "Integer") is not None
        if wrapped:
            self.expect("op", "(")
        self.accept("op", "-")
        if abs(int(self.number(integer=True))) > _MAX_EXPONENT:
            raise _Refused(f"an exponent or shift above {_MAX_EXPONENT}")
        if wrapped:
            self.expect("op", ")")

    def number(self, integer: bool = False) -> str:
        text = self.expect("number")
        if integer and not text.isdigit():
            raise _Refused(f"expected an integer, found {text!r}")
        if text.isdigit() and int(text) > _MAX_LITERAL:
            raise _Refused(f"an integer literal above 2**63 ({text[:20]}...)")
        return text

    def primary(self) -> None:
        kind, text = self.peek()
        if kind == "number":
            self.number()
        elif self.accept("op", "("):
            self.expression()
            self.expect("op", ")")
        elif kind == "name":
            self.position += 1
            if self.guard and text == "L":
                self.source()
            elif self.guard and text == "math":
                self.expect("op", ".")
                name = self.expect("name")
                if name not in _MATH_NAMES:
                    raise _Refused(f"math.{name} is not a function torch writes")
                if self.accept("op", "("):
                    self.arguments()
            elif self.peek() == ("op", "("):
                self.call(text)
            elif text not in _CONSTANTS and not _SYMBOL_NAME.fullmatch(text):
                raise _Refused(f"{text!r} is not a shape symbol")
        else:
            raise _Refused(f"unexpected {text!r}")

    def source(self) -> None:
        """``L['x']`` then ``[0]``, ``['k']``, ``.size()``, ``.stride()``, ``.storage_offset()``."""
        self.expect("op", "[")
        self.subscript()
        while True:
            if self.accept("op", "["):
                self.subscript()
            elif self.accept("op", "."):
                method = self.expect("name")
                if method not in _SOURCE_METHODS:
                    raise _Refused(f".{method} is not a size of an input")
                self.expect("op", "(")
                self.expect("op", ")")
            else:
                return

    def subscript(self) -> None:
        if self.peek()[0] == "string":
            key = self.expect("string")[1:-1]
            if not _IDENTIFIER.fullmatch(key):
                raise _Refused(f"input name {key!r}")
        else:
            self.number(integer=True)
        self.expect("op", "]")

    def call(self, name: str) -> None:
        if name not in _EXPRESSION_FUNCTIONS and not (self.guard and name in _GUARD_FUNCTIONS):
            raise _Refused(f"{name}(...) is not a function torch writes")
        self.expect("op", "(")
        if name == "Symbol":
            symbol = self.expect("string")[1:-1]
            if not _SYMBOL_NAME.fullmatch(symbol):
                raise _Refused(f"{symbol!r} is not a shape symbol")
            while self.accept("op", ","):
                assumption = self.expect("name")
                if assumption not in _ASSUMPTIONS:
                    raise _Refused(f"{assumption!r} is not a sympy assumption")
                self.expect("op", "=")
                self.expect("name", "True", "False")
            self.expect("op", ")")
        elif name == "Float":
            digits = self.expect("string")[1:-1]
            if not re.fullmatch(r"[-+]?\d+(?:\.\d*)?(?:[eE][-+]?\d+)?", digits):
                raise _Refused(f"{digits!r} is not a number")
            if self.accept("op", ","):
                self.expect("name", "precision")
                self.expect("op", "=")
                self.number(integer=True)
            self.expect("op", ")")
        elif name in _EXPONENT_FUNCTIONS:
            self.expression()
            self.expect("op", ",")
            self.small_literal()
            self.expect("op", ")")
        else:
            self.arguments()

    def arguments(self) -> None:
        """After ``(``: expressions separated by commas, then ``)``."""
        if self.accept("op", ")"):
            return
        self.expression()
        while self.accept("op", ","):
            self.expression()
        self.expect("op", ")")


def _check_expression(text: str, guard: bool = False) -> None:
    """Raise :class:`_Refused` unless ``text`` is a shape expression (or guard) torch writes."""
    _ExpressionChecker(text, guard).check()


def _check_operator(text: str) -> None:
    """Raise :class:`_Refused` unless ``text`` names a torch operator or a symbolic-size function."""
    if text not in _PYTHON_TARGETS and not _TORCH_OPERATOR.fullmatch(text):
        raise _Refused("not a torch operator")


def _check_treespec(text: str) -> None:
    """Raise :class:`_Refused` unless ``text`` is an input/output structure of plain containers.

    Contexts are checked to be names or indices: torch pastes the keys of keyword arguments
    into generated source, and a ``defaultdict`` or enum context names a module to import.
    """
    try:
        protocol, schema = json.loads(text)
    except (ValueError, TypeError, RecursionError):
        raise _Refused("not a serialized pytree") from None
    if protocol != 1:
        raise _Refused(f"pytree protocol {protocol!r}")

    def visit(node, depth: int) -> None:
        if depth > _MAX_JSON_DEPTH or not isinstance(node, dict):
            raise _Refused("not a serialized pytree")
        if node.get("type") not in _TREESPEC_TYPES:
            raise _Refused(f"container type {node.get('type')!r}")
        context = node.get("context")
        if context is not None:
            if not isinstance(context, str):
                raise _Refused("not a serialized pytree")
            try:
                keys = json.loads(context)
            except (ValueError, RecursionError):
                raise _Refused("not a serialized pytree") from None
            for key in keys if isinstance(keys, list) else [keys]:
                if not (
                    key is None
                    or isinstance(key, int)
                    or (isinstance(key, str) and _IDENTIFIER.fullmatch(key))
                ):
                    raise _Refused(f"argument name {key!r}")
        children = node.get("children_spec", [])
        if not isinstance(children, list):
            raise _Refused("not a serialized pytree")
        for child in children:
            visit(child, depth + 1)

    visit(schema, 0)


def _check_text(text: str, literal: bool) -> None:
    """Free text: printable lines (a carriage return would end a comment of generated source).

    With ``literal``, also one line with no quote or backslash (it becomes a quoted literal).
    """
    lines = text.split("\n")
    if not all(line.replace("\t", " ").isprintable() for line in lines):
        raise _Refused("control characters")
    if literal and (len(lines) > 1 or any(mark in text for mark in "'\"\\")):
        raise _Refused("quotes, backslashes or line breaks")


def _check_string(text: str, field: str) -> None:
    """Check one string of the program by the schema field it stands in."""
    if field == "expr_str":
        _check_expression(text)
    elif field == "guards_code":
        _check_expression(text, guard=True)
    elif field in ("target", "as_operator"):
        _check_operator(text)
    elif field in ("in_spec", "out_spec"):
        _check_treespec(text)
    elif field in _TEXT_FIELDS or field in _LITERAL_FIELDS:
        _check_text(text, literal=field in _LITERAL_FIELDS)
    elif not _DOTTED_NAME.fullmatch(text):
        raise _Refused("not a name")


def _check_json(value, field: str, depth: int = 0) -> None:
    """Check every string under ``value`` (a part of the program's JSON under schema ``field``).

    Raises:
        _Refused: a string that does not have the form torch writes for its field; its
            ``field`` attribute names the field.
    """
    if depth > _MAX_JSON_DEPTH:
        raise _Refused(f"nested deeper than {_MAX_JSON_DEPTH}")
    try:
        if isinstance(value, str):
            _check_string(value, field)
        elif isinstance(value, list):
            for item in value:
                _check_json(item, field, depth + 1)
        elif isinstance(value, dict):
            for key, item in value.items():
                # Keys are names (of values, parameters, metadata) or schema fields: never code.
                if not (_DOTTED_NAME if field in _NAME_MAPS else _IDENTIFIER).fullmatch(key):
                    raise _Refused(f"key {key!r}")
                if field == "metadata":
                    if not isinstance(item, str):
                        raise _Refused("metadata that is not text")
                    _check_text(item, literal=False)
                else:
                    _check_json(item, "" if field in _NAME_MAPS else key, depth + 1)
    except _Refused as refused:
        if not hasattr(refused, "field"):
            refused.field = field  # type: ignore[attr-defined]
            refused.text = value if isinstance(value, str) else None  # type: ignore[attr-defined]
        raise


def check_export_archive(data: bytes, shown: str) -> None:
    """Refuse a ``.pt2`` archive whose loading could run code or unpickle Python objects.

    Checks, before torch reads anything: that the archive holds only the members
    ``torch.export.load`` reads for an ExportedProgram (no compiled AOTInductor code); that
    weights and constants are raw tensors (no pickles, no custom or opaque objects); and that
    every string of every program (``models/*.json``) and payload config has the form torch
    writes in its field (see the comment above ``_EXPORT_MEMBERS``).

    Raises:
        ModelFileError: damaged, or anything above does not hold (one line).
    """
    try:
        archive = zipfile.ZipFile(io.BytesIO(data))
    except (zipfile.BadZipFile, ValueError, OSError):
        raise ModelFileError(f"{shown}: damaged torch.export archive (not a zip file)") from None
    with archive:
        infos = [info for info in archive.infolist() if not info.is_dir()]
        root = infos[0].filename.split("/", 1)[0] if infos else ""
        members: dict[str, zipfile.ZipInfo] = {}
        for info in infos:
            if not info.filename.startswith(root + "/"):
                raise ModelFileError(
                    f"{shown}: damaged torch.export archive (members outside {root + '/'!r})"
                )
            members[info.filename[len(root) + 1 :]] = info
        for member in members:
            if not _EXPORT_MEMBERS.fullmatch(member):
                what = (
                    "compiled code, which loading would run"
                    if member.startswith("data/aotinductor/")
                    else "a member torch.export.load would read and this loader does not accept"
                )
                raise ModelFileError(f"{shown} holds {member[:100]!r} ({what}); refused")
        if not any(member.startswith("models/") for member in members):
            raise ModelFileError(f"{shown}: damaged torch.export archive (no models/*.json)")
        for member, info in members.items():
            if not member.endswith(".json") or member.startswith("extra/"):
                continue  # extra files are handed back as text, never parsed
            if info.file_size > MAX_EXPORT_JSON_BYTES:
                raise ModelFileError(f"{shown}: {member} is {info.file_size} bytes, over the limit")
            try:
                document = json.loads(archive.read(info))
            except (ValueError, RecursionError, zipfile.BadZipFile, OSError):
                raise ModelFileError(f"{shown}: damaged torch.export archive ({member})") from None
            if member.startswith("models/"):
                field = ""
            else:
                _check_payload_config(document, member, shown)
                field = "config_file"
            try:
                _check_json(document, field)
            except _Refused as refused:
                text = getattr(refused, "text", None)
                shown_text = f" {text[:60]!r}{'...' if len(text) > 60 else ''}" if text is not None else ""
                raise ModelFileError(
                    f"{shown}: {member} holds{shown_text} under {getattr(refused, 'field', '?')!r}, "
                    f"which is not what torch.export writes there ({refused}); refused, since loading "
                    "would hand it to a Python evaluator"
                ) from None


def _check_payload_config(document, member: str, shown: str) -> None:
    """Refuse weights or constants that loading would unpickle (or build Python objects from).

    Raises:
        ModelFileError: a pickled, custom or opaque payload, or a config of another form.
    """
    entries = document.get("config") if isinstance(document, dict) else None
    if not isinstance(entries, dict):
        raise ModelFileError(f"{shown}: damaged torch.export archive ({member})")
    prefix = "weight_" if member.startswith("data/weights/") else "tensor_"
    for entry in entries.values():
        path = str(entry.get("path_name", "")) if isinstance(entry, dict) else ""
        if not isinstance(entry, dict) or entry.get("use_pickle") or not re.fullmatch(rf"{prefix}\d+", path):
            raise ModelFileError(
                f"{shown} holds pickled Python objects ({path or member}); loading it could run "
                "arbitrary code, so it is refused (export the model without custom objects)"
            )


@contextlib.contextmanager
def _torch_export_log() -> Iterator[list[logging.LogRecord]]:
    """While inside: what torch.export's loggers say is kept in the list yielded, not printed.

    ``torch.export.load`` logs a whole traceback (on torch's own stderr handler) before it
    raises on a damaged archive; the error the user sees is one line made from it instead.
    """
    records: list[logging.LogRecord] = []

    class Keep(logging.Handler):
        def emit(self, record: logging.LogRecord) -> None:
            records.append(record)

    handler = Keep()
    loggers = [logging.getLogger(name) for name in ("torch.export", "torch._export")]
    previous = [logger.propagate for logger in loggers]
    for logger in loggers:
        logger.addHandler(handler)
        logger.propagate = False
    try:
        yield records
    finally:
        for logger, propagate in zip(loggers, previous, strict=True):
            logger.removeHandler(handler)
            logger.propagate = propagate


def _input_from_export(program) -> tuple[tuple[int | None, ...], str]:
    """``(shape with None for dynamic dims, input name)`` of an ExportedProgram's one user input."""
    inputs = list(program.graph_signature.user_inputs)
    if len(inputs) != 1:
        raise ModelFileError(f"takes {len(inputs)} inputs; a classifier takes one batch of images")
    node = next(node for node in program.graph.nodes if node.op == "placeholder" and node.name == inputs[0])
    value = node.meta.get("val")
    shape = tuple(dim if isinstance(dim, int) else None for dim in value.shape) if value is not None else ()
    return shape, inputs[0]


def _input_from_onnx(session) -> tuple[tuple[int | None, ...], str]:
    """``(shape with None for symbolic dims, input name)`` of an ONNX Runtime session's one input."""
    inputs = session.get_inputs()
    if len(inputs) != 1:
        raise ModelFileError(f"takes {len(inputs)} inputs; a classifier takes one batch of images")
    if inputs[0].type != "tensor(float)":
        raise ModelFileError(f"takes {inputs[0].type} input; expected float32 images")
    shape = tuple(dim if isinstance(dim, int) and dim > 0 else None for dim in inputs[0].shape)
    return shape, inputs[0].name


class FileNetwork(nn.Module):
    """A classifier read from a model file, giving the logits of normalised images.

    It maps ``(batch, channels, H, W)`` normalised images to ``(batch, classes)`` logits.

    Pickles as the file's bytes (a Ray object), rebuilt by loading them again on the other
    side. A file that takes a fixed batch size is run in chunks of that size (the last one
    padded). The file's SHA-256 is a buffer, so :func:`fooling.fitness.weights_hash` changes
    whenever any byte of the file (or of an ONNX file's external data) does.

    Args:
        kind: ``"torchscript"``, ``"export"`` or ``"onnx"``.
        data: the file's bytes; for ONNX, self-contained (external data read in by
            :func:`read_model`: ONNX Runtime would look for it relative to the current directory).
        shown: how to name the file in messages.
        sha256: the model's SHA-256 as :func:`read_model` computes it (default: of ``data``).

    Raises:
        ModelFileError: not a model of that kind, a pickle, an archive whose loading could run
            code it carries, an ONNX model still naming external data, or several inputs.
    """

    def __init__(self, kind: str, data: bytes, shown: str, sha256: str | None = None) -> None:
        super().__init__()
        self.kind = kind
        self.shown = shown
        self.sha256 = sha256 or hashlib.sha256(data).hexdigest()
        self.register_buffer(
            "file_digest", torch.frombuffer(bytearray.fromhex(self.sha256), dtype=torch.uint8)
        )
        self._data = data
        self._session = None
        self.inner: nn.Module | None = None
        self.input_shape: tuple[int | None, ...] = ()
        self.input_name = "input"
        try:
            self._load(data)
        except ModelFileError as error:
            raise ModelFileError(
                f"{shown}: {error}" if not str(error).startswith(shown) else str(error)
            ) from None
        self.fixed_batch: int | None = self.input_shape[0] if self.input_shape else None
        for parameter in self.parameters():
            parameter.requires_grad_(False)

    def _load(self, data: bytes) -> None:
        shown = self.shown
        if self.kind == "onnx":
            self._load_onnx(data)
            return
        found = sniff(data)
        if found == "pickle":
            raise ModelFileError(
                f"{shown} is a pickle (torch.save of a state dict or module), which could run arbitrary "
                f"code when loaded and is refused; {SAVE_HINT}"
            )
        if found == "unknown":
            raise ModelFileError(f"{shown} is not a TorchScript or torch.export file; {SAVE_HINT}")
        self.kind = found  # the contents decide: a .pt may hold an ExportedProgram
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # torch.jit's deprecation notices
            if found == "torchscript":
                try:
                    self.inner = torch.jit.load(io.BytesIO(data), map_location="cpu")
                except Exception as error:
                    raise ModelFileError(f"{shown}: cannot read TorchScript ({reason(error)})") from None
                return
            check_export_archive(data, shown)
            with _torch_export_log() as logged:
                try:
                    with weights_only_loads():
                        program = torch.export.load(io.BytesIO(data))
                        self.input_shape, self.input_name = _input_from_export(program)
                        self.inner = program.module()
                except pickle.UnpicklingError:
                    raise ModelFileError(
                        f"{shown} holds pickled Python objects that the safe (weights-only) loader "
                        "refuses; loading them could run arbitrary code"
                    ) from None
                except ModelFileError:
                    raise
                except Exception as error:
                    # torch logs the error that broke the archive, then raises another one
                    # ("check the warnings above"): the logged one says what is wrong.
                    first = next((r.exc_info[1] for r in logged if r.exc_info and r.exc_info[1]), error)
                    raise ModelFileError(
                        f"{shown}: cannot read the torch.export archive ({reason(first)})"
                    ) from None

    def _load_onnx(self, data: bytes) -> None:
        if onnx_external_data(data):
            raise ModelFileError(
                f"{self.shown} keeps tensors in external files; load it from its path, which reads them "
                "from the model's own folder"
            )
        try:
            self._session = _onnx_session(data)
        except ModuleNotFoundError:
            raise ModelFileError(f"{self.shown}: scoring ONNX files needs the onnxruntime package") from None
        except Exception as error:
            raise ModelFileError(
                f"{self.shown} is not an ONNX model ONNX Runtime can run ({reason(error)})"
            ) from None
        self.input_shape, self.input_name = _input_from_onnx(self._session)

    @property
    def differentiable(self) -> bool:
        """False for ONNX files: ONNX Runtime computes no gradients."""
        return self.kind != "onnx"

    def train(self, mode: bool = True) -> FileNetwork:
        """Sets only this wrapper's flag, never the file's module's.

        Files are saved in eval mode (and an ExportedProgram's module refuses ``eval()``).
        """
        self.training = mode
        return self

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        """``(batch, channels, H, W)`` normalised images -> ``(batch, classes)`` logits.

        Raises:
            GradientUnavailableError: gradients asked of an ONNX file.
        """
        batch = images.shape[0]
        if self.fixed_batch is None or batch == self.fixed_batch:
            return self._run(images)
        outputs = []
        for start in range(0, batch, self.fixed_batch):
            chunk = images[start : start + self.fixed_batch]
            missing = self.fixed_batch - chunk.shape[0]
            if missing:
                chunk = torch.cat([chunk, chunk.new_zeros((missing, *chunk.shape[1:]))])
            outputs.append(self._run(chunk)[: self.fixed_batch - missing])
        return torch.cat(outputs)

    def _run(self, images: torch.Tensor) -> torch.Tensor:
        if torch.jit.is_tracing() and (self.kind == "onnx" or self.fixed_batch is not None):
            # A trace would record ONNX Runtime's answer as a constant, or the chunks of one batch size.
            raise ValueError(f"{self.shown} cannot be traced; see onnx_probabilities")
        if self.kind != "onnx":
            return self.inner(images)
        if images.requires_grad and torch.is_grad_enabled():
            raise GradientUnavailableError(
                f"{self.shown} is scored with ONNX Runtime, which computes no gradients: perturb and "
                "ascent need a TorchScript (.pt), torch.export (.pt2), timm: or torchvision: model"
            )
        if self._session is None:
            self._session = _onnx_session(self._data)
        array = images.detach().to("cpu", torch.float32).contiguous().numpy()
        logits = self._session.run(None, {self.input_name: array})[0]
        return torch.from_numpy(np.ascontiguousarray(logits)).to(images.device)

    def onnx_probabilities(self, spec: ModelSpec) -> bytes:
        """For the ONNX Runtime engine: this network as an ONNX graph of images to probabilities.

        The graph takes images in ``[0, 1]`` named ``images`` ``(batch, channels, H, W)`` and
        gives softmax ``probabilities`` ``(batch, classes)`` (see :func:`probabilities_graph`).
        An ONNX file's own graph is used; TorchScript and torch.export files are exported
        (opset 17, dynamic batch).

        Raises:
            ValueError: a file that takes a fixed batch size (scored by torch instead).
            Exception: whatever the exporter raises for a network it cannot export.
        """
        if self.fixed_batch is not None:
            raise ValueError(f"{self.shown} takes batches of exactly {self.fixed_batch} image(s)")
        if self.kind == "onnx":
            return probabilities_graph(self._data, spec.mean, spec.std)
        buffer = io.BytesIO()
        example = torch.zeros(2, spec.channels, *spec.input_size)
        with warnings.catch_warnings(), torch.no_grad():
            warnings.simplefilter("ignore")  # the legacy exporter's deprecation notice
            torch.onnx.export(
                # A ScriptModule exports as it is; an ExportedProgram's module only through this
                # wrapper (its module refuses the exporter's train(False)).
                self.inner if self.kind == "torchscript" else self,
                (example,),
                buffer,
                opset_version=17,
                dynamo=False,
                input_names=["input"],
                output_names=["logits"],
                dynamic_axes={"input": {0: "batch"}, "logits": {0: "batch"}},
            )
        return probabilities_graph(buffer.getvalue(), spec.mean, spec.std)

    def __reduce__(self):
        # The model's bytes travel (to Ray actors: through the object store) with their SHA-256,
        # checked on arrival, the model's own SHA-256 (which, with external data, covers more
        # than these bytes) and the batch size the driver found the file to take.
        sent = hashlib.sha256(self._data).hexdigest()
        return (
            _rebuild_file_network,
            (self.kind, self._data, self.shown, sent, self.fixed_batch, self.sha256),
        )


def _rebuild_file_network(
    kind: str, data: bytes, shown: str, sent: str, fixed_batch: int | None, sha256: str | None = None
) -> FileNetwork:
    """Unpickling a :class:`FileNetwork`: check the shipped bytes, then load them again.

    Raises:
        ModelFileError: the bytes do not have the SHA-256 the sender computed (damaged on the way).
    """
    arrived = hashlib.sha256(data).hexdigest()
    if arrived != sent:
        raise ModelFileError(
            f"{shown} arrived damaged (SHA-256 {arrived[:12]}..., sent {sent[:12]}...); "
            "the model file did not reach this process intact"
        )
    network = FileNetwork(kind, data, shown, sha256)
    network.fixed_batch = fixed_batch
    return network


def _onnx_session(data: bytes):
    """An ONNX Runtime CPU session of ``data`` (the engine's settings and thread count)."""
    return onnx_session(data)


def probabilities_graph(data: bytes, mean: tuple[float, ...], std: tuple[float, ...]) -> bytes:
    """A user's ONNX classifier wrapped as the engine's graphs are.

    Input ``images`` ``(batch, channels, H, W)`` in ``[0, 1]``, normalised inside the graph with
    ``mean`` and ``std``; output ``probabilities`` ``(batch, classes)``, the softmax of the logits.

    Raises:
        ValueError: the graph has not exactly one input and one output.
    """
    import onnx  # heavy: only for ONNX files
    from onnx import helper, numpy_helper

    model = onnx.load_model_from_string(data)
    graph = model.graph
    initialisers = {tensor.name for tensor in graph.initializer}
    inputs = [value for value in graph.input if value.name not in initialisers]
    if len(inputs) != 1 or len(graph.output) != 1:
        raise ValueError(f"expected one input and one output, not {len(inputs)} and {len(graph.output)}")
    for reserved in ("images", "probabilities"):
        _rename(graph, reserved, f"user_{reserved}")
    source, logits = inputs[0], graph.output[0]
    channels = len(mean)
    shape = [
        dim.dim_value if dim.HasField("dim_value") else None for dim in source.type.tensor_type.shape.dim
    ]
    shape = ["batch", *shape[1:]] if shape else ["batch", channels, None, None]
    scale = (
        np.asarray(mean, np.float32).reshape(1, -1, 1, 1),
        np.asarray(std, np.float32).reshape(1, -1, 1, 1),
    )
    graph.initializer.extend(
        [numpy_helper.from_array(scale[0], "fooling_mean"), numpy_helper.from_array(scale[1], "fooling_std")]
    )
    prologue = [
        helper.make_node("Sub", ["images", "fooling_mean"], ["fooling_centred"], name="fooling_sub"),
        helper.make_node("Div", ["fooling_centred", "fooling_std"], [source.name], name="fooling_div"),
    ]
    epilogue = helper.make_node("Softmax", [logits.name], ["probabilities"], name="fooling_softmax", axis=1)
    nodes = [*prologue, *graph.node, epilogue]
    del graph.node[:]
    graph.node.extend(nodes)
    graph.input.remove(source)
    graph.input.insert(0, helper.make_tensor_value_info("images", onnx.TensorProto.FLOAT, shape))
    graph.output.remove(logits)
    graph.output.append(
        helper.make_tensor_value_info("probabilities", onnx.TensorProto.FLOAT, ["batch", None])
    )
    return model.SerializeToString()


def _rename(graph, old: str, new: str) -> None:
    """Rename value ``old`` to ``new`` everywhere in ``graph`` (not inside subgraphs)."""
    for node in graph.node:
        node.input[:] = [new if name == old else name for name in node.input]
        node.output[:] = [new if name == old else name for name in node.output]
    for value in (*graph.input, *graph.output, *graph.value_info, *graph.initializer):
        if value.name == old:
            value.name = new


def read_labels(path: str) -> tuple[str, ...]:
    """Class names, one per line (blank lines at the ends ignored).

    Raises:
        ModelFileError: missing, unreadable, empty, or a name given twice.
    """
    try:
        text = Path(path).read_text(encoding="utf-8")
    except FileNotFoundError:
        raise ModelFileError(f"--labels {path}: no such file") from None
    except (OSError, UnicodeDecodeError) as error:
        raise ModelFileError(f"--labels {path}: cannot read it ({reason(error)})") from None
    names = tuple(line.strip() for line in text.strip().splitlines())
    if not names or not all(names):
        raise ModelFileError(f"--labels {path}: expected one class name per line, with no blank lines")
    seen: set[str] = set()
    for name in names:
        if name.lower() in seen:
            raise ModelFileError(f"--labels {path} names {name!r} twice")
        seen.add(name.lower())
    return names


def read_model_file(path: str) -> bytes:
    """The bytes of model file ``path``.

    Raises:
        ModelFileError: missing, a folder, unreadable, or of a suffix this module does not read.
    """
    file = Path(path)
    suffix = file.suffix.lower()
    if suffix in PICKLE_SUFFIXES:
        raise ModelFileError(
            f"{path}: {suffix} files are pickles, which could run arbitrary code when loaded and are "
            f"refused; {SAVE_HINT}"
        )
    if suffix not in FILE_SUFFIXES:
        raise ModelFileError(
            f"{path}: model files end in .pt or .ts (TorchScript), .pt2 (torch.export) or .onnx"
        )
    if not file.exists():
        raise ModelFileError(f"model file {path} does not exist")
    if not file.is_file():
        raise ModelFileError(f"model file {path} is not a file")
    try:
        return file.read_bytes()
    except OSError as error:
        raise ModelFileError(f"model file {path}: cannot read it ({reason(error)})") from None


# --- ONNX external data -----------------------------------------------------------------------
#
# An ONNX tensor may keep its bytes in another file (``data_location = EXTERNAL``, with a
# ``location`` relative to the model). ONNX Runtime, given the model's bytes, resolves that
# location against the current directory, so a model could read any file the user's shell
# stands beside (``etc/passwd`` from ``/``). The files are read here instead, only from the
# model's own folder, into a self-contained model that ONNX Runtime never looks past; they
# belong to the model's SHA-256.


def _onnx_tensors(model) -> Iterator:
    """Every TensorProto of an ONNX model: initializers, sparse tensors, node attributes, subgraphs."""

    def sparse(tensor) -> Iterator:
        yield tensor.values
        yield tensor.indices

    def of_nodes(nodes) -> Iterator:
        for node in nodes:
            for attribute in node.attribute:
                if attribute.HasField("t"):
                    yield attribute.t
                yield from attribute.tensors
                if attribute.HasField("sparse_tensor"):
                    yield from sparse(attribute.sparse_tensor)
                for tensor in attribute.sparse_tensors:
                    yield from sparse(tensor)
                if attribute.HasField("g"):
                    yield from of_graph(attribute.g)
                for graph in attribute.graphs:
                    yield from of_graph(graph)

    def of_graph(graph) -> Iterator:
        yield from graph.initializer
        for tensor in graph.sparse_initializer:
            yield from sparse(tensor)
        yield from of_nodes(graph.node)

    yield from of_graph(model.graph)
    for function in model.functions:
        yield from of_nodes(function.node)


def _parse_onnx(data: bytes):
    """The ModelProto of ``data``, or ``None`` when it is not one (ONNX Runtime then says why)."""
    import onnx  # heavy: only for ONNX files

    try:
        return onnx.load_model_from_string(data)
    except Exception:  # protobuf's DecodeError and friends: not an ONNX model
        return None


def onnx_external_data(data: bytes) -> bool:
    """Whether the ONNX model ``data`` names any tensor data kept in another file."""
    model = _parse_onnx(data)
    return model is not None and any(_is_external(tensor) for tensor in _onnx_tensors(model))


def _is_external(tensor) -> bool:
    import onnx  # heavy: only for ONNX files

    return tensor.data_location == onnx.TensorProto.EXTERNAL or len(tensor.external_data) > 0


def _external_file(location: str, folder: Path, shown: str, tensor: str) -> Path:
    """The file an external ``location`` names inside ``folder`` (resolved).

    Raises:
        ModelFileError: empty, absolute, with ``..``, leading outside ``folder`` through a
            symlink, missing, or not a file.
    """
    where = f"{shown}: tensor {tensor[:60]!r} keeps its data in {location[:100]!r}"
    parts = PurePosixPath(location).parts
    if not location or "\0" in location:
        raise ModelFileError(f"{where}, which names no file")
    if "\\" in location or PurePosixPath(location).is_absolute() or PureWindowsPath(location).drive:
        raise ModelFileError(f"{where}: an absolute path; external data must lie in the model's folder")
    if ".." in parts:
        raise ModelFileError(f"{where}: '..' leads out of the model's folder, which is refused")
    root = folder.resolve()
    file = (folder / location).resolve()
    if not file.is_relative_to(root):
        raise ModelFileError(f"{where}, which leads outside the model's folder ({str(file)!r}); refused")
    if not file.exists():
        raise ModelFileError(f"{where}, which does not exist in {folder}")
    if not file.is_file():
        raise ModelFileError(f"{where}, which is not a file")
    return file


def _inline_external_data(data: bytes, path: Path, shown: str) -> tuple[bytes, str]:
    """``(self-contained model bytes, SHA-256)`` of the ONNX file ``path`` whose bytes are ``data``.

    Every external tensor's bytes are read from the model's folder (:func:`_external_file`)
    into the model. The SHA-256 is the file's own where it has no external data; else it also
    covers each external file's name and contents.

    Raises:
        ModelFileError: a location refused by :func:`_external_file`, an unreadable file, an
            offset or length outside it, or a model too large to hold in one piece (2 GiB).
    """
    import onnx  # heavy: only for ONNX files

    model = _parse_onnx(data)
    external = (
        [tensor for tensor in _onnx_tensors(model) if _is_external(tensor)] if model is not None else []
    )
    if not external:
        return data, hashlib.sha256(data).hexdigest()
    folder = path.expanduser().absolute().parent
    contents: dict[str, bytes] = {}
    for tensor in external:
        fields = {entry.key: entry.value for entry in tensor.external_data}
        location = fields.get("location", "")
        where = f"{shown}: tensor {tensor.name[:60]!r} keeps its data in {location[:100]!r}"
        if location not in contents:
            file = _external_file(location, folder, shown, tensor.name)
            try:
                contents[location] = file.read_bytes()
            except OSError as error:
                raise ModelFileError(f"{where}, which cannot be read ({reason(error)})") from None
        blob = contents[location]
        try:
            offset = int(fields.get("offset", "0"))
            length = int(fields["length"]) if "length" in fields else len(blob) - offset
        except ValueError:
            raise ModelFileError(f"{where} at a malformed offset or length") from None
        if offset < 0 or length < 0 or offset + length > len(blob):
            raise ModelFileError(
                f"{where} at bytes {offset}..{offset + length}, outside the file's {len(blob)} bytes"
            )
        tensor.raw_data = blob[offset : offset + length]
        del tensor.external_data[:]
        tensor.data_location = onnx.TensorProto.DEFAULT
    digest = hashlib.sha256(data)
    for location in sorted(contents):
        digest.update(b"\0" + location.encode() + b"\0" + hashlib.sha256(contents[location]).digest())
    try:
        inlined = model.SerializeToString()
    except ValueError as error:  # protobuf refuses messages over 2 GiB
        raise ModelFileError(
            f"{shown} with its external data is too large to load ({reason(error)})"
        ) from None
    return inlined, digest.hexdigest()


def read_model(path: str) -> tuple[bytes, str]:
    """``(bytes to load, SHA-256)`` of model file ``path``.

    The bytes are the file's; for ONNX, with any external data read in from the model's own
    folder (:func:`_inline_external_data`). The SHA-256 covers the external files too.

    Raises:
        ModelFileError: see :func:`read_model_file` and :func:`_inline_external_data`.
    """
    data = read_model_file(path)
    if FILE_SUFFIXES[Path(path).suffix.lower()] == "onnx":
        return _inline_external_data(data, Path(path), path)
    return data, hashlib.sha256(data).hexdigest()


def _broadcast(
    values: tuple[float, ...] | None, default: float, channels: int, what: str
) -> tuple[float, ...]:
    if values is None:
        return (default,) * channels
    if len(values) == 1:
        return values * channels
    if len(values) != channels:
        raise ModelFileError(f"{what} gives {len(values)} values for a model of {channels} channel(s)")
    return values


def _probe(network: FileNetwork, shape: tuple[int, ...], hint: str) -> int:
    """Run zeros of ``shape`` through ``network``; return its number of outputs.

    Raises:
        ModelFileError: the network rejects that input, or does not give ``(batch, classes)``.
    """
    try:
        with torch.no_grad():
            logits = network(torch.zeros(shape))
    except GradientUnavailableError:
        raise
    except Exception as error:
        raise ModelFileError(
            f"{network.shown} rejects images of shape {tuple(shape)} ({hint}): {reason(error)}"
        ) from None
    if not isinstance(logits, torch.Tensor) or logits.ndim != 2 or logits.shape[0] != shape[0]:
        got = tuple(logits.shape) if isinstance(logits, torch.Tensor) else type(logits).__name__
        raise ModelFileError(
            f"{network.shown} returns {got} for {shape[0]} image(s); a classifier must return one "
            "(batch, classes) tensor of logits"
        )
    if logits.shape[1] < 2:
        raise ModelFileError(f"{network.shown} has {logits.shape[1]} output; a classifier needs at least 2")
    rows = logits.float()
    if bool((rows >= 0).all()) and torch.allclose(rows.sum(1), torch.ones(rows.shape[0]), atol=1e-3):
        logger.warning(
            "%s seems to output probabilities; fooling applies a softmax to its outputs, so it should "
            "output logits",
            network.shown,
        )
    return int(logits.shape[1])


def _load_file_network(path: str, expected_sha256: str | None = None) -> FileNetwork:
    data, sha256 = read_model(path)
    network = FileNetwork(FILE_SUFFIXES[Path(path).suffix.lower()], data, Path(path).name, sha256)
    if expected_sha256 is not None and network.sha256 != expected_sha256:
        raise ModelFileError(f"{path} changed while it was being loaded; try again")
    return network


def file_spec(reference: str) -> ModelSpec:
    """The spec of the model file ``reference`` names (``PATH[?options]``).

    Loads the file once, runs a batch of zeros through it to learn the number of outputs and
    to check that the input size fits.

    Raises:
        ModelFileError: missing file, not a model, a pickle, bad options, labels that do not
            match the outputs, or an input size the model rejects.
    """
    path, options = split_reference(reference)
    network = _load_file_network(path)
    shape = network.input_shape
    known_size = tuple(shape[2:4]) if len(shape) == 4 and None not in shape[2:4] else None
    input_size = options.input_size or known_size
    if input_size is None:
        raise ModelFileError(
            f"{network.shown} does not record its input size: give --input-size H,W "
            f"({KIND_NAMES[network.kind]} file)"
        )
    channels = options.channels or (shape[1] if len(shape) == 4 and shape[1] is not None else 3)
    batch = network.fixed_batch or 2
    hint = f"--input-size {input_size[0]},{input_size[1]}, --channels {channels}"
    try:
        outputs = _probe(network, (batch, channels, *input_size), hint)
    except ModelFileError:
        if network.fixed_batch is not None or network.kind == "onnx":
            raise
        outputs = _probe(network, (1, channels, *input_size), hint)  # a file fixed to batches of 1
        network.fixed_batch = 1
    if options.labels is not None:
        names = read_labels(options.labels)
        if len(names) != outputs:
            raise ModelFileError(
                f"{network.shown} has {outputs} outputs but --labels {options.labels} names "
                f"{len(names)} classes"
            )
    else:
        names = imagenet_class_names() if outputs == 1000 else tuple(str(index) for index in range(outputs))
    mean = _broadcast(options.mean, 0.0, channels, "--mean")
    std = _broadcast(options.std, 1.0, channels, "--std")
    if min(std) <= 0:
        raise ModelFileError(f"--std must be positive, not {','.join(map(str, std))}")
    fixed_batch = network.fixed_batch
    return ModelSpec(
        name=network.shown,
        channels=channels,
        input_size=(int(input_size[0]), int(input_size[1])),
        mean=mean,
        std=std,
        class_names=names,
        build=functools.partial(_build_file, path, network.sha256, fixed_batch),
        description=f"{KIND_NAMES[network.kind]} file {path} (SHA-256 {network.sha256[:12]})",
    )


def _build_file(path: str, sha256: str, fixed_batch: int | None) -> FileNetwork:
    network = _load_file_network(path, sha256)
    network.fixed_batch = fixed_batch
    return network


# --- timm ---------------------------------------------------------------------------------


def _timm_names() -> list[str]:
    import timm  # heavy: only for timm: models

    return timm.list_models(pretrained=True)


def timm_config(name: str):
    """The timm pretrained config of ``name`` (``ARCH`` or ``ARCH.TAG``) and its full tagged name.

    Raises:
        UnknownNameError: no pretrained timm model of that name; suggests close names.
    """
    from timm.models import get_pretrained_cfg  # heavy: only for timm: models

    tagged = _timm_names()
    architectures = sorted({full.split(".", 1)[0] for full in tagged})
    if name not in tagged and name not in architectures:
        raise UnknownNameError(
            f"unknown timm model {name!r}{close_names(name, tagged + architectures)} "
            "(timm.list_models(pretrained=True) lists them)"
        )
    config = get_pretrained_cfg(name)
    full = name if "." in name else f"{name}.{config.tag}"
    return config, full


def _timm_cached_weights(config) -> Path | None:
    """The local copy of a timm model's weights: the Hugging Face cache, then torch hub's."""
    if config.hf_hub_id:
        from huggingface_hub import try_to_load_from_cache  # heavy: only for timm: models

        repo = config.hf_hub_id.split("@", 1)[0]
        filenames = [config.hf_hub_filename] if config.hf_hub_filename else []
        for filename in [*filenames, "model.safetensors", "pytorch_model.bin"]:
            found = try_to_load_from_cache(repo, filename)
            if isinstance(found, str) and Path(found).is_file():
                return Path(found)
    if config.url:
        local = Path(torch.hub.get_dir()) / "checkpoints" / Path(urlparse(config.url).path).name
        if local.is_file():
            return local
    return None


def timm_spec(name: str) -> ModelSpec:
    """The spec of ``timm:NAME`` (no weights are read until ``build``).

    Raises:
        UnknownNameError: no such pretrained timm model (suggests close names).
    """
    config, full = timm_config(name)
    channels, height, width = config.input_size
    outputs = config.num_classes
    if config.label_names and len(config.label_names) == outputs:
        names = tuple(config.label_names)
    elif outputs == 1000:
        names = imagenet_class_names()
    else:
        names = tuple(str(index) for index in range(outputs))
    return ModelSpec(
        name=TIMM_PREFIX + full,
        channels=channels,
        input_size=(height, width),
        mean=tuple(config.mean),
        std=tuple(config.std),
        class_names=names,
        build=functools.partial(_build_timm, full),
        description=f"timm {full} ({config.interpolation} resize, crop {config.crop_pct})",
        crop_pct=float(config.crop_pct or TIMM_DEFAULT_CROP_PCT),
        interpolation=config.interpolation if config.interpolation in RESAMPLING else "bicubic",
    )


def _build_timm(full: str) -> nn.Module:
    import timm  # heavy: only for timm: models

    config, _ = timm_config(full)
    cached = _timm_cached_weights(config)
    if cached is None and offline():
        raise ModelUnavailableError(
            f"timm:{full}: weights are not in the local cache (Hugging Face hub {config.hf_hub_id or '-'}, "
            f"or {Path(torch.hub.get_dir()) / 'checkpoints'}) and FOOLING_OFFLINE is set; "
            "fetch them once where the network is reachable"
        )
    overlay = {"file": str(cached), "source": None} if cached is not None else None
    try:
        with weights_only_loads(), _network_timeout(), warnings.catch_warnings():
            warnings.simplefilter("ignore")
            network = timm.create_model(full, pretrained=True, pretrained_cfg_overlay=overlay)
    except Exception as error:
        where = f"from {cached}" if cached is not None else "(downloading; no network?)"
        raise ModelUnavailableError(
            f"timm:{full}: cannot load the weights {where}: {reason(error)}"
        ) from None
    return network.eval()


# --- torchvision --------------------------------------------------------------------------


def _torchvision_weights(name: str):
    """``(architecture, weights enum member)`` of ``torchvision:ARCH[.WEIGHTS]``.

    Raises:
        UnknownNameError: no such classification model or weights (suggests close names).
    """
    import torchvision.models as models  # heavy: only for torchvision: models

    architecture, _, tag = name.partition(".")
    known = models.list_models(module=models)
    if architecture not in known:
        raise UnknownNameError(
            f"unknown torchvision model {architecture!r}{close_names(architecture, known)} "
            "(torchvision.models.list_models() lists them)"
        )
    weights_enum = models.get_model_weights(architecture)
    members = [member.name for member in weights_enum]
    if not tag:
        return architecture, weights_enum.DEFAULT
    if tag not in members:
        raise UnknownNameError(
            f"torchvision:{architecture} has no weights {tag!r}{close_names(tag, members)} "
            f"(known: {', '.join(members)})"
        )
    return architecture, weights_enum[tag]


def torchvision_spec(name: str) -> ModelSpec:
    """The spec of ``torchvision:ARCH[.WEIGHTS]`` (no weights are read until ``build``).

    Raises:
        UnknownNameError: no such classification model or weights (suggests close names).
    """
    architecture, weights = _torchvision_weights(name)
    transform = weights.transforms()
    crop = list(getattr(transform, "crop_size", [224]))
    height, width = (crop[0], crop[0]) if len(crop) == 1 else (crop[0], crop[1])
    # Photos: the shorter side resized to resize_size, then the centre crop (crop_pct = crop/resize).
    resize = list(getattr(transform, "resize_size", None) or [height])
    interpolation = getattr(getattr(transform, "interpolation", None), "value", "bilinear")
    return ModelSpec(
        name=f"{TORCHVISION_PREFIX}{architecture}.{weights.name}",
        channels=3,
        input_size=(height, width),
        mean=tuple(transform.mean),
        std=tuple(transform.std),
        class_names=tuple(weights.meta["categories"]),
        build=functools.partial(_build_torchvision, architecture, weights.name),
        description=f"torchvision {architecture} with {weights.name} weights",
        crop_pct=min(height, width) / resize[0],
        interpolation=interpolation if interpolation in RESAMPLING else "bilinear",
    )


def _build_torchvision(architecture: str, tag: str) -> nn.Module:
    import torchvision.models as models  # heavy: only for torchvision: models

    weights = models.get_model_weights(architecture)[tag]
    cached = Path(torch.hub.get_dir()) / "checkpoints" / Path(urlparse(weights.url).path).name
    if not cached.is_file() and offline():
        raise ModelUnavailableError(
            f"torchvision:{architecture}: weights {tag} are not in the local cache ({cached}) and "
            "FOOLING_OFFLINE is set; fetch them once where the network is reachable"
        )
    try:
        with weights_only_loads(), _network_timeout():
            network = models.get_model(architecture, weights=weights)
    except Exception as error:
        raise ModelUnavailableError(
            f"torchvision:{architecture}: cannot load weights {tag} (no network?): {reason(error)}"
        ) from None
    return network.eval()


# --- plugins --------------------------------------------------------------------------------


def plugin_entry_points() -> dict[str, importlib.metadata.EntryPoint]:
    """Installed entry points of the group ``fooling.models``, by name (read afresh each call)."""
    return {entry.name: entry for entry in importlib.metadata.entry_points(group=PLUGIN_GROUP)}


def plugin_spec(name: str) -> ModelSpec | None:
    """The spec an installed plugin declares under ``name``, or ``None`` when none does.

    Raises:
        ModelUnavailableError: the entry point fails to load or to make its spec, or returns
            something other than a :class:`ModelSpec`.
    """
    entry = plugin_entry_points().get(name)
    if entry is None:
        return None
    try:
        spec = entry.load()()
    except Exception as error:
        raise ModelUnavailableError(
            f"plugin model {name!r} ({entry.value}) failed: {type(error).__name__}: {reason(error)}"
        ) from None
    if not isinstance(spec, ModelSpec):
        raise ModelUnavailableError(
            f"plugin model {name!r} ({entry.value}) returned {type(spec).__name__}, not a ModelSpec"
        )
    return dataclasses.replace(spec, build=functools.partial(_build_plugin, name, entry.value, spec.build))


def _build_plugin(name: str, where: str, build) -> nn.Module:
    try:
        network = build()
    except ModelUnavailableError:
        raise
    except Exception as error:
        raise ModelUnavailableError(
            f"plugin model {name!r} ({where}) failed to build: {type(error).__name__}: {reason(error)}"
        ) from None
    if not isinstance(network, nn.Module):
        raise ModelUnavailableError(
            f"plugin model {name!r} ({where}) built {type(network).__name__}, not a torch.nn.Module"
        )
    return network.eval()


def plugin_name(spec: ModelSpec) -> str | None:
    """The entry point name of the plugin that made ``spec`` (see :func:`plugin_spec`), else ``None``."""
    build = spec.build
    if isinstance(build, functools.partial) and build.func is _build_plugin:
        return str(build.args[0])
    return None


def _interpreter_folders() -> set[Path]:
    """The folders every process of this interpreter searches anyway: stdlib and site-packages."""
    folders = {Path(path) for path in sysconfig.get_paths().values()}
    folders.update(Path(path) for path in site.getsitepackages())
    folders.add(Path(site.getusersitepackages()))
    return {folder.resolve() for folder in folders}


def plugin_import_paths(spec: ModelSpec) -> tuple[str, ...]:
    """The folders, beyond this interpreter's own site-packages, that hold the plugin which made ``spec``.

    They are where its distribution metadata (``*.dist-info``, so that its entry points
    resolve) and its module live. Other processes (Ray workers) put them on their
    ``sys.path`` to import the plugin as this process does. Empty for a spec of no plugin, and
    for a plugin installed in site-packages, which every worker of the same environment sees.
    """
    name = plugin_name(spec)
    entry = plugin_entry_points().get(name) if name is not None else None
    if entry is None:
        return ()
    roots: list[Path] = []
    with contextlib.suppress(Exception):  # a distribution not read from a folder (a zip, a custom finder)
        roots.append(Path(entry.dist.locate_file("")))
    with contextlib.suppress(ImportError, ValueError, AttributeError):
        found = importlib.util.find_spec(entry.module)
        if found is not None and found.origin and Path(found.origin).is_file():
            origin = Path(found.origin)
            depth = entry.module.count(".") + (1 if origin.name == "__init__.py" else 0)
            roots.append(origin.parents[depth])
    own = _interpreter_folders()
    paths: list[str] = []
    for root in roots:
        resolved = str(root.resolve())
        if root.resolve() not in own and resolved not in paths:
            paths.append(resolved)
    return tuple(paths)


# --- the resolver and what a checkpoint records -----------------------------------------------


def resolve_source(name: str) -> ModelSpec | None:
    """The spec of ``timm:``, ``torchvision:`` and file references; ``None`` for other names.

    Raises:
        UnknownNameError, ModelFileError: see :func:`timm_spec`, :func:`torchvision_spec`,
            :func:`file_spec`.
    """
    if name.startswith(TIMM_PREFIX):
        return timm_spec(name[len(TIMM_PREFIX) :])
    if name.startswith(TORCHVISION_PREFIX):
        return torchvision_spec(name[len(TORCHVISION_PREFIX) :])
    if is_model_file(name):
        return file_spec(name)
    return None


def source_kind(reference: str) -> str:
    """``"timm"``, ``"torchvision"``, ``"file"``, ``"plugin"`` or ``"registry"``."""
    if reference.startswith(TIMM_PREFIX):
        return "timm"
    if reference.startswith(TORCHVISION_PREFIX):
        return "torchvision"
    if is_model_file(reference):
        return "file"
    return "plugin" if reference in plugin_entry_points() else "registry"


def describe_model(reference: str, model: LoadedModel) -> dict:
    """How to rebuild ``model`` (JSON-able, stored in checkpoints).

    The record holds the reference string, its kind, the file's SHA-256 (files), labels,
    preprocessing and the weights hash.
    """
    record = {
        "reference": reference,
        "kind": source_kind(reference),
        "name": model.spec.name,
        "channels": model.spec.channels,
        "input_size": list(model.spec.input_size),
        "mean": list(model.spec.mean),
        "std": list(model.spec.std),
        "crop_pct": model.spec.crop_pct,
        "interpolation": model.spec.interpolation,
        "labels": list(model.spec.class_names),
        "weights_hash": model.weights_hash,
        "differentiable": differentiable(model),
    }
    if isinstance(model.network, FileNetwork):
        record["file_format"] = model.network.kind
        record["sha256"] = model.network.sha256
    return record


def differentiable(model: LoadedModel) -> bool:
    """False when the model cannot give gradients (an ONNX file)."""
    return bool(getattr(model.network, "differentiable", True))


def require_gradients(model: LoadedModel, command: str) -> None:
    """Raise :class:`GradientUnavailableError` for a model without gradients."""
    if not differentiable(model):
        raise GradientUnavailableError(
            f"{command} follows gradients, and {model.spec.name} is scored with ONNX Runtime, which "
            "computes none: use a TorchScript (.pt), torch.export (.pt2), timm: or torchvision: model"
        )


register_resolver(resolve_source, first=True)
register_resolver(plugin_spec, names=lambda: list(plugin_entry_points()))


def _labels_change(recorded: dict, names: tuple[str, ...], where: str) -> str | None:
    """How ``names`` differ from the class names ``recorded`` holds, as a sentence; ``None`` if not."""
    then = recorded.get("labels")
    if not isinstance(then, list) or not all(isinstance(name, str) for name in then):
        return None  # a record without (readable) labels: nothing to compare
    if tuple(then) == names:
        return None
    first = next((i for i, (a, b) in enumerate(zip(then, names, strict=False)) if a != b), None)
    detail = (
        f"class {first} was {then[first][:40]!r}, is {names[first][:40]!r}"
        if first is not None
        else f"{len(then)} classes then, {len(names)} now"
    )
    return f"{where} changed since the run was made ({detail})"


def _digest_change(recorded: dict, sha256: str, path: str) -> str | None:
    before = str(recorded["sha256"])
    if before == sha256:
        return None
    if not re.fullmatch(r"[0-9a-f]{64}", before):  # a record written by hand: shown, not trusted
        before = repr(before[:20])
    return f"{path} changed since the run was made (SHA-256 {before[:12]}... then, {sha256[:12]}... now)"


def source_change(recorded: dict | None, reference: str) -> str | None:
    """What changed in the files of model ``reference`` since ``recorded`` was made; loads nothing.

    Compares the model file's SHA-256 (for ONNX, with its external data: :func:`read_model`)
    and the class names of its ``--labels`` file with the record, so that a resumed run
    refuses a changed (or planted) file before loading it, which is where such a file could
    act. ``None`` when nothing changed, and for records or references naming no file (older
    records without a SHA-256 are checked after loading, by :func:`model_change`).

    Args:
        recorded: a :func:`describe_model` record (a checkpoint's ``model_source``).
        reference: the model reference the run is about to load.

    Raises:
        ModelFileError: the model or labels file is missing or unreadable, or its external
            data is refused (see :func:`read_model`).
    """
    if not isinstance(recorded, dict) or not is_model_file(reference):
        return None
    path, options = split_reference(reference)
    if "sha256" in recorded:
        changed = _digest_change(recorded, read_model(path)[1], path)
        if changed:
            return changed
    if options.labels is not None:
        return _labels_change(recorded, read_labels(options.labels), f"--labels {options.labels}")
    return None


def model_change(recorded: dict | None, model: LoadedModel) -> str | None:
    """What changed in a model file, or its labels, since ``recorded`` was made, as a sentence.

    ``recorded`` is a :func:`describe_model` record. ``None`` when the record names no file, or
    its SHA-256 and class names still match.
    """
    if not isinstance(recorded, dict) or not isinstance(model.network, FileNetwork):
        return None
    reference = str(recorded.get("reference", model.spec.name))
    path, options = split_reference(reference)
    if "sha256" in recorded:
        changed = _digest_change(recorded, model.network.sha256, path)
        if changed:
            return changed
    where = f"--labels {options.labels}" if options.labels is not None else f"the class names of {path}"
    return _labels_change(recorded, model.spec.class_names, where)


def require_extensible(model: LoadedModel, command: str) -> None:
    """Raise :class:`ModelFileError` for a model read from a file.

    Its graph is fixed, so no output unit can be added to it (the fooling class of ``retrain``).
    """
    if isinstance(model.network, FileNetwork):
        raise ModelFileError(
            f"{command} adds an output unit to the network, which a {KIND_NAMES[model.network.kind]} file "
            f"({model.spec.name}) cannot take: use a timm:, torchvision: or plugin model"
        )
