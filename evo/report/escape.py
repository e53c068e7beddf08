"""Escaping for the pages the report writes: JSON inside ``<script>``, Markdown, the page's CSP.

Labels and run folders are untrusted (a shared run folder, a model's labels file): nothing
read from them reaches a page unescaped. HTML text and attributes go through
:func:`html.escape`; this module adds what the standard library lacks.
"""

from __future__ import annotations

import base64
import hashlib
import json
import re

# Characters that would end a script element or open a comment inside it ("</script>",
# "<!--"), and the line separators that end a JavaScript string in older engines.
_SCRIPT_UNSAFE = {
    "<": "\\u003c",
    ">": "\\u003e",
    "&": "\\u0026",
    "\u2028": "\\u2028",
    "\u2029": "\\u2029",
}
_SCRIPT_UNSAFE_PATTERN = re.compile("[<>&\u2028\u2029]")

# Markdown characters that start emphasis, code, links, tables or strikethrough; each is
# shown as itself behind a backslash (CommonMark escapes any ASCII punctuation that way).
_MARKDOWN_PUNCTUATION = frozenset("\\`*_[]|~")
_HTML_IN_MARKDOWN = {"<": "&lt;", ">": "&gt;", "&": "&amp;", '"': "&quot;"}
# Anything that would end a line (and with it a table row, a list item or a heading).
_LINE_BREAKS = re.compile("[\r\n\v\f\x1c-\x1e\x85\u2028\u2029]")


def script_json(value: object) -> str:
    r"""``value`` as compact JSON that is safe inside an HTML ``<script>`` element.

    ``<``, ``>``, ``&`` and U+2028/U+2029 are written as ``\uXXXX`` escapes (only strings
    can hold them in JSON, where the escape means the same character), so a string such as
    ``</script>`` or ``<!--<script>`` can neither close the element nor hide the rest of it.

    Args:
        value: JSON-able data (finite numbers only).

    Returns:
        The JSON text, ASCII only.

    Raises:
        ValueError: a NaN or infinite number (not JSON).
    """
    text = json.dumps(value, ensure_ascii=True, allow_nan=False, separators=(",", ":"))
    return _SCRIPT_UNSAFE_PATTERN.sub(lambda match: _SCRIPT_UNSAFE[match.group()], text)


def single_line(text: str) -> str:
    r"""``text`` with every line break (``\n``, ``\r``, U+2028, ...) replaced by a space."""
    return _LINE_BREAKS.sub(" ", text)


def markdown_text(text: str) -> str:
    """``text`` as literal Markdown inline text, safe in a table cell.

    HTML (``<``, ``>``, ``&``, ``"``) becomes character references, Markdown punctuation
    (emphasis, code, links, table pipes) is backslash-escaped, and line breaks become spaces,
    so the text renders as itself and cannot end a table row or add markup.
    """
    return "".join(
        _HTML_IN_MARKDOWN.get(char) or ("\\" + char if char in _MARKDOWN_PUNCTUATION else char)
        for char in single_line(text)
    )


def content_security_policy(script: str, *, images: str) -> str:
    """A ``<meta>`` Content-Security-Policy that runs ``script`` and no other script.

    Defence in depth behind the escaping: an inline script or event handler that got into
    the page anyway is not run, and nothing is fetched from elsewhere.

    Args:
        script: the text of the page's one script element (hashed, so only it runs).
        images: the ``img-src`` sources (e.g. ``"'self'"`` or ``"data:"``).

    Returns:
        The ``<meta http-equiv="Content-Security-Policy" ...>`` element.
    """
    digest = base64.b64encode(hashlib.sha256(script.encode()).digest()).decode()
    policy = (
        f"default-src 'none'; img-src {images}; style-src 'unsafe-inline'; "
        f"script-src 'sha256-{digest}'; base-uri 'none'; form-action 'none'"
    )
    return f'<meta http-equiv="Content-Security-Policy" content="{policy}">'
