"""The endpoint reference: ``http(s)://HOST[:PORT]/v2/models/NAME[/versions/V][?options]``.

What defines the classifier behind an endpoint travels inside the reference, as the options of
model files do (see :mod:`fooling.fitness.sources.reference`), so that a run's stored ``model``
rebuilds the same scorer: ``labels``, ``input-size``, ``channels``, ``mean``, ``std``,
``output`` (the output tensor read), ``scores`` (``probabilities``, ``logits`` or ``auto``) and
``top-k``. Credentials never do: a URL with a user name or password in it is refused (headers
come from :mod:`fooling.fitness.endpoint.settings`, at run time), and an unknown option is
named by its key only, never its value (it might be a token pasted in the wrong place).
"""

from __future__ import annotations

import dataclasses
import re
import urllib.parse
from pathlib import Path

from fooling.encodings.errors import UserError
from fooling.fitness.sources.reference import FILE_OPTION_KEYS, FileOptions, parse_file_option

__all__ = [
    "SCORES",
    "EndpointOptions",
    "EndpointReference",
    "endpoint_reference",
    "is_endpoint",
    "parse_endpoint",
]

SCHEMES = ("http://", "https://")
# How the answers are read: detected (probabilities when every row is a distribution), or forced.
SCORES = ("auto", "probabilities", "logits")
# Model and version names the protocol's paths may hold (no "/", "?", "#", "..").
_NAME = re.compile(r"(?!\.+$)[A-Za-z0-9_.\-]{1,200}")  # not "." or "..": the URL would leave the path
_PATH = re.compile(r"/v2/models/([^/]+)(?:/versions/([^/]+))?/?")


def is_endpoint(reference: str) -> bool:
    """True when ``reference`` names a model behind an HTTP(S) endpoint."""
    return isinstance(reference, str) and reference.lower().startswith(SCHEMES)


def _positive(text: str, what: str, maximum: int) -> int:
    try:
        value = int(text)
    except ValueError:
        value = 0
    if not 1 <= value <= maximum:
        raise UserError(f"{what} expects an integer in 1..{maximum}, got {text[:20]!r}")
    return value


@dataclasses.dataclass(frozen=True)
class EndpointOptions:
    """What an endpoint's metadata may not say, and how its answers are read.

    Attributes:
        file: ``labels``, ``input_size``, ``channels``, ``mean``, ``std`` as for model files
            (``input_size`` and ``channels`` are read from the metadata where it gives them).
        output: the output tensor read (``None``: the only or first one).
        scores: ``"auto"`` (probabilities when every row is a distribution, else logits, which
            get a softmax), ``"probabilities"`` or ``"logits"``.
        top_k: ask for (and accept) only the best ``top_k`` classes per image (``None``: all).
    """

    file: FileOptions = FileOptions()
    output: str | None = None
    scores: str = "auto"
    top_k: int | None = None

    def query(self) -> str:
        """The options as ``key=value&...`` in a fixed order (empty when none are given)."""
        parts = [self.file.query()] if self.file.given() else []
        if self.output is not None:
            parts.append(f"output={self.output}")
        if self.scores != "auto":
            parts.append(f"scores={self.scores}")
        if self.top_k is not None:
            parts.append(f"top-k={self.top_k}")
        return "&".join(parts)


def _parse_options(query: str) -> EndpointOptions:
    file: dict = {}
    fields: dict = {}
    for part in filter(None, query.split("&")):
        key, _, value = part.partition("=")
        key = urllib.parse.unquote(key).strip().lower().replace("_", "-")
        value = urllib.parse.unquote(value)
        if key in FILE_OPTION_KEYS:
            name, parsed = parse_file_option(key, value)
            file[name] = parsed
        elif key == "output":
            if not _NAME.fullmatch(value):
                raise UserError("--output expects a tensor name (letters, digits, '_', '.', '-')")
            fields["output"] = value
        elif key == "scores":
            if value not in SCORES:
                raise UserError(f"--scores expects one of {', '.join(SCORES)}, got {value[:20]!r}")
            fields["scores"] = value
        elif key == "top-k":
            fields["top_k"] = _positive(value, "--top-k", 100_000)
        else:  # the key only: the value may be a secret pasted into the URL
            raise UserError(
                f"unknown endpoint option {key[:40]!r} in the model URL (known: labels, input-size, "
                "channels, mean, std, output, scores, top-k; credentials go in --header)"
            )
    options = EndpointOptions(FileOptions(**file), **fields)
    if options.top_k is not None and options.scores == "logits":
        raise UserError(
            "--top-k reads the best classes' probabilities; it cannot be used with --scores logits"
        )
    return options


@dataclasses.dataclass(frozen=True)
class EndpointReference:
    """A parsed endpoint reference.

    Attributes:
        origin: ``scheme://host:port`` (lower-case scheme and host), where every request goes.
        model: the model's name on the server.
        version: its version, or ``None`` (the server's default).
        options: see :class:`EndpointOptions`.
    """

    origin: str
    model: str
    version: str | None
    options: EndpointOptions

    @property
    def model_url(self) -> str:
        """``origin/v2/models/NAME[/versions/V]``: the model's metadata; ``/infer`` is appended to infer."""
        url = f"{self.origin}/v2/models/{self.model}"
        return f"{url}/versions/{self.version}" if self.version else url

    @property
    def shown(self) -> str:
        """How messages name the endpoint (no options)."""
        return self.model_url

    def canonical(self) -> str:
        """The reference string that rebuilds this (options in a fixed order, label path absolute)."""
        labels = self.options.file.labels
        if labels is not None:
            labels = str(Path(labels).expanduser().absolute())
        options = dataclasses.replace(
            self.options, file=dataclasses.replace(self.options.file, labels=labels)
        )
        query = options.query()
        return f"{self.model_url}?{query}" if query else self.model_url


def parse_endpoint(reference: str) -> EndpointReference:
    """Parse ``http(s)://HOST[:PORT]/v2/models/NAME[/versions/V][?options]``.

    Raises:
        UserError: not that form, a user name or password in the URL, a fragment, or bad
            options (named by key; a value is never repeated, as it may be a secret).
    """
    url, _, query = reference.partition("?")
    try:
        parts = urllib.parse.urlsplit(url)
        port = parts.port
    except ValueError:
        raise UserError("the model URL is not a valid http(s) URL (bad host or port)") from None
    if parts.scheme.lower() not in ("http", "https") or not parts.hostname:
        raise UserError("an endpoint model is http(s)://HOST[:PORT]/v2/models/NAME[/versions/V]")
    if parts.username is not None or parts.password is not None:
        raise UserError(
            "the model URL holds a user name or password, which would be stored with the run: "
            "give credentials with --header 'Authorization: ...' or FOOLING_ENDPOINT_TOKEN instead"
        )
    if "#" in reference:
        raise UserError("the model URL has a fragment ('#'); give http(s)://HOST[:PORT]/v2/models/NAME")
    match = _PATH.fullmatch(parts.path)
    if not match or not _NAME.fullmatch(match[1]) or (match[2] is not None and not _NAME.fullmatch(match[2])):
        raise UserError(
            f"the model URL's path {parts.path[:80]!r} is not /v2/models/NAME[/versions/V] "
            "(the Open Inference Protocol's REST path)"
        )
    host = parts.hostname.lower()
    if ":" in host:  # an IPv6 literal
        host = f"[{host}]"
    scheme = parts.scheme.lower()
    origin = f"{scheme}://{host}" + (f":{port}" if port is not None else "")
    return EndpointReference(origin, match[1], match[2], _parse_options(query))


def endpoint_reference(
    reference: str,
    options: FileOptions = FileOptions(),  # noqa: B008 (frozen: a shared default is safe)
    *,
    output: str | None = None,
    scores: str | None = None,
    top_k: int | None = None,
) -> str:
    """``reference`` with the command line's options folded in (flags win over inline options).

    Raises:
        UserError: see :func:`parse_endpoint`.
    """
    parsed = parse_endpoint(reference)
    inline = parsed.options
    file = FileOptions(**{
        field.name: getattr(options, field.name)
        if getattr(options, field.name) is not None
        else getattr(inline.file, field.name)
        for field in dataclasses.fields(FileOptions)
    })  # fmt: skip
    query = EndpointOptions(
        file,
        output if output is not None else inline.output,
        scores if scores is not None else inline.scores,
        top_k if top_k is not None else inline.top_k,
    ).query()
    # Parsed once more: --top-k with --scores logits is refused whichever way they came.
    return parse_endpoint(f"{parsed.model_url}?{query}" if query else parsed.model_url).canonical()
