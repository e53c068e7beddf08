"""Checking a ``torch.export`` archive (``.pt2``) before torch reads any of it.

:func:`check_export_archive` refuses archives whose loading could run code: members torch
would load as compiled code, pickled or opaque payloads, and any string of the programs that
is not what torch writes in its field (shape expressions are parsed here by a strict grammar
of symbols, integers and arithmetic, never by sympy).
"""

from __future__ import annotations

import json
import re
import zipfile

from fooling.fitness.sources.common import ModelFileError
from fooling.fitness.sources.operators import open_model_archive, refused_operator

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
# Float fields: torch writes the non-finite values (a mask of -inf in attention) as these words.
_FLOAT_FIELDS = frozenset({"as_float", "as_floats"})
_NON_FINITE = frozenset({"Infinity", "-Infinity", "NaN"})
# Names of values, inputs, parameters and modules: pasted into generated source as they are.
# Parts of letters, digits and underscores between dots (nn.Sequential numbers its layers:
# "0.weight") hold no call, quote, operator or bracket: at worst a syntax error, never code.
_DOTTED_NAME = re.compile(r"(?:\w+(?:\.\w+)*)?", re.ASCII)
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


class _RefusedOperator(_Refused):
    """A well-formed operator name whose operator a model file may not call."""


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
    """Raise :class:`_Refused` unless ``text`` names an allowed torch operator or a size function.

    Allowed operators are those :func:`~fooling.fitness.sources.operators.refused_operator`
    lets a model file call: tensor arithmetic, never ``aten.from_file`` and the like.
    """
    if text in _PYTHON_TARGETS:
        return
    if not _TORCH_OPERATOR.fullmatch(text):
        raise _Refused("not a torch operator")
    parts = text.split(".")[2:]  # torch.ops.NAMESPACE.NAME[.OVERLOAD]
    namespace, name = parts[0], parts[1]
    why = refused_operator(namespace, name, parts[2] if len(parts) > 2 else "default")
    if why is not None:
        raise _RefusedOperator(why)


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
    elif field in _FLOAT_FIELDS:
        if text not in _NON_FINITE:
            raise _Refused("not a number")
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
    with open_model_archive(data, shown, "torch.export") as archive:
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
            except _RefusedOperator as refused:
                raise ModelFileError(
                    f"{shown} calls {refused.text} ({refused}); refused: a model file may only "
                    "compute on tensors"
                ) from None
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
