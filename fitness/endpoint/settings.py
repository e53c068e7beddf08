"""How this process talks to endpoints: credentials, TLS, timeouts, retries, traffic.

None of it defines the classifier (that is the reference, :mod:`.reference`), and none of it is
stored with a run: the command line sets it for the process (:func:`configure_endpoints`) and a
resumed run is given it again. Header values (tokens) live only here, in memory: the dataclass'
``repr`` shows header names only, and :meth:`EndpointSettings.redact` blanks their values out of
any text (a server's error message may echo a request). Everything a server says that reaches a
message or a log goes through :func:`server_text`: secrets blanked, one printable line, short.
"""

from __future__ import annotations

import dataclasses
import math
import os
import re
from collections.abc import Iterable
from pathlib import Path

from fooling.encodings.errors import UserError

__all__ = [
    "SECRET_RUN",
    "TOKEN_VARIABLE",
    "EndpointSettings",
    "blank_secrets",
    "configure_endpoints",
    "endpoint_settings",
    "parse_header",
    "server_text",
]

# Environment variable holding a bearer token, sent as "Authorization: Bearer TOKEN" unless
# --header gives an Authorization header.
TOKEN_VARIABLE = "FOOLING_ENDPOINT_TOKEN"
_HEADER_NAME = re.compile(r"[A-Za-z0-9!#$%&'*+.^_`|~-]{1,100}")
# Headers the client sets itself: a user's value would break the framing (or, for
# Accept-Encoding, let a server send compressed answers, which the client refuses).
_RESERVED = {
    "accept-encoding",
    "content-length",
    "content-type",
    "host",
    "inference-header-content-length",
    "transfer-encoding",
}
# Any run of this many characters of a secret is blanked wherever it appears: a server (or a cut
# to length) may have kept only part of an echoed token. Shorter runs say too little to matter.
SECRET_RUN = 8


def blank_secrets(text: str, secrets: Iterable[str]) -> str:
    """``text`` with every secret, and every run of :data:`SECRET_RUN` characters of one, as ``***``.

    Args:
        text: any text.
        secrets: the values to blank (whole values shorter than :data:`SECRET_RUN` are blanked
            where they appear whole).
    """
    secrets = sorted(set(secrets), key=len, reverse=True)
    for secret in secrets:
        text = text.replace(secret, "***")
    grams = {s[i : i + SECRET_RUN] for s in secrets for i in range(len(s) - SECRET_RUN + 1)}
    if not grams:
        return text
    # Mark every character covered by a run found in a secret, then blank each marked stretch.
    marked = [False] * len(text)
    for start in range(len(text) - SECRET_RUN + 1):
        if text[start : start + SECRET_RUN] in grams:
            marked[start : start + SECRET_RUN] = [True] * SECRET_RUN
    parts: list[str] = []
    for index, character in enumerate(text):
        if not marked[index]:
            parts.append(character)
        elif index == 0 or not marked[index - 1]:
            parts.append("***")
    return "".join(parts)


# How much of a server's text is read at all: what lies beyond is dropped first (a secret cut
# there shows at most SECRET_RUN - 1 of its characters, and those are blanked anyway if more).
_RAW_TEXT = 4096


def server_text(value: object, limit: int = 80, secrets: Iterable[str] = ()) -> str:
    """What a server said (a name, an error text, a header), made safe to show on one line.

    Secrets are blanked first (:func:`blank_secrets`), so that cutting to ``limit`` cannot leave
    part of one; every character that is not printable (ESC, BEL, line breaks, bidirectional
    controls) becomes ``?`` after line breaks, tabs and runs of spaces became one space, so no
    terminal escape or second line reaches the screen or a log; the result is cut to ``limit``
    characters, ``...`` marking a cut.

    Args:
        value: the server's value; strings and numbers are shown, anything else by its type
            (a nested structure is never rendered).
        limit: the most characters shown.
        secrets: the values to blank (:meth:`EndpointSettings.secrets`).
    """
    if isinstance(value, str):
        text = value[:_RAW_TEXT]
    elif value is None or isinstance(value, (bool, int, float)):
        text = str(value)[:_RAW_TEXT]
    else:
        text = f"<{type(value).__name__}>"
    text = blank_secrets(text, secrets)
    text = "".join(c if c.isprintable() else "?" for c in " ".join(text.split()))
    return text if len(text) <= limit else text[: max(0, limit - 3)] + "..."


def parse_header(text: str) -> tuple[str, str]:
    """``"Name: value"`` -> ``(name, value)``.

    Raises:
        UserError: no ``:``, a bad or reserved name, or a value with a line break; the
            message never repeats the value.
    """
    name, colon, value = text.partition(":")
    name, value = name.strip(), value.strip()
    if not colon or not _HEADER_NAME.fullmatch(name):
        raise UserError("--header expects 'Name: value' (a header name, a colon, its value)")
    if name.lower() in _RESERVED:
        raise UserError(f"--header {name}: the client sets this header itself")
    if any(character in value for character in "\r\n\0"):
        raise UserError(f"--header {name}: the value holds a line break")
    return name, value


@dataclasses.dataclass(frozen=True)
class EndpointSettings:
    """How requests are sent.

    Attributes:
        headers: ``(name, value)`` pairs sent with every request (values are secrets).
        ca_bundle: a PEM file of certificates to verify HTTPS servers with (``None``: the
            system's); verification is never turned off.
        timeout_s: seconds one try of a request may take in all (connecting, sending, the whole
            answer, however slowly a server trickles it), then it is tried again.
        retries: retries of one request after a connection error, a timeout, HTTP 429, 5xx,
            a redirect (never followed) or an unreadable answer; then one error line.
        backoff_s: first wait before a retry (doubling each time, with jitter, up to
            ``max_backoff_s``); a ``Retry-After`` answer is honoured up to ``max_backoff_s``.
        max_backoff_s: longest wait between two tries.
        concurrency: requests in flight at once (per scoring process).
        request_batch: images per request (at most what the model's metadata allows).
        max_rate: images per second at most (per scoring process; ``None``: no limit).
        max_answer_bytes: the largest answer read; a longer one is an error.
    """

    headers: tuple[tuple[str, str], ...] = ()
    ca_bundle: str | None = None
    timeout_s: float = 30.0
    retries: int = 5
    backoff_s: float = 0.2
    max_backoff_s: float = 10.0
    concurrency: int = 4
    request_batch: int = 50
    max_rate: float | None = None
    max_answer_bytes: int = 64 << 20

    def __post_init__(self) -> None:
        finite = all(math.isfinite(v) for v in (self.timeout_s, self.backoff_s, self.max_backoff_s))
        if not finite or self.timeout_s <= 0 or self.backoff_s < 0 or self.max_backoff_s < 0:
            raise UserError("the endpoint timeout must be a positive number and the backoff not negative")
        if self.retries < 0 or self.concurrency < 1 or self.request_batch < 1 or self.max_answer_bytes < 1:
            raise UserError("--retries must be >= 0; --concurrency, --request-batch >= 1")
        if self.max_rate is not None and not self.max_rate > 0:
            raise UserError("--max-rate must be a positive number of images per second")
        if self.ca_bundle is not None and not Path(self.ca_bundle).is_file():
            raise UserError(f"--ca-bundle {self.ca_bundle}: no such file")

    def __repr__(self) -> str:  # never the header values
        shown = {f.name: getattr(self, f.name) for f in dataclasses.fields(self) if f.name != "headers"}
        names = [name for name, _ in self.headers]
        return f"EndpointSettings(headers={names}, " + ", ".join(f"{k}={v!r}" for k, v in shown.items()) + ")"

    def all_headers(self) -> dict[str, str]:
        """The headers to send: ``headers``, plus the token of :data:`TOKEN_VARIABLE` where set.

        The variable is read now (each process: Ray workers inherit it or get it with the
        settings), never stored.
        """
        headers = dict(self.headers)
        token = os.environ.get(TOKEN_VARIABLE, "").strip()
        if token and not any(name.lower() == "authorization" for name in headers):
            headers["Authorization"] = f"Bearer {token}"
        return headers

    def secrets(self) -> set[str]:
        """Every header value (and the token variable's), and their words, for :meth:`redact`."""
        values = [value for value in self.all_headers().values() if len(value) >= 4]
        parts = [part for value in values for part in value.split() if len(part) >= 8]
        return {*values, *parts}  # blank_secrets orders them

    def redact(self, text: str) -> str:
        """``text`` with every secret, and any run of 8 characters of one, replaced by ``***``."""
        return blank_secrets(text, self.secrets())

    def server_text(self, value: object, limit: int = 80) -> str:
        """:func:`server_text` of ``value`` with these settings' secrets blanked."""
        return server_text(value, limit, self.secrets())


_settings = EndpointSettings()


def configure_endpoints(settings: EndpointSettings) -> EndpointSettings:
    """Make ``settings`` this process's endpoint settings (read when an endpoint model is built)."""
    global _settings
    _settings = settings
    return settings


def endpoint_settings() -> EndpointSettings:
    """This process's endpoint settings (defaults until :func:`configure_endpoints`)."""
    return _settings
