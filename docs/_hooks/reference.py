"""MkDocs hook: the reference pages are generated at build time, so they cannot drift.

* ``<!-- fooling-cli -->`` ... ``<!-- /fooling-cli -->`` in a page holds every command of
  ``fooling`` with its flags, read from the real parser (:func:`fooling.evo.cli.build_parser`):
  written again at every build, and kept in ``docs/cli.md`` itself for readers of the
  sources, where ``python docs/_hooks/reference.py`` (``make cli-page``) rewrites it and
  ``tests/test_docs.py`` checks it is current.
* ``<!-- fooling-api: PACKAGE -->`` becomes one mkdocstrings block per name in the ``__all__`` of
  ``PACKAGE`` and of each of its public subpackages (found on disk, so new ones appear by
  themselves); the docstrings are rendered by mkdocstrings.

The project's folders ``evo/``, ``encodings/`` and ``fitness/`` are mapped into the ``fooling``
namespace by ``package_dir`` (see ``setup.cfg``), which griffe, mkdocstrings' source reader,
cannot follow through the editable install. :func:`on_config` therefore lays out
``build/griffe-src/fooling/`` as links to the three folders; ``mkdocs.yml`` points mkdocstrings
there. Nothing is downloaded.
"""

from __future__ import annotations

import argparse
import html
import importlib
import re
import sys
from pathlib import Path

from mkdocs.plugins import event_priority

# The top-level packages and the folders that hold them (setup.cfg's package_dir).
PACKAGES = {"fooling.evo": "evo", "fooling.encodings": "encodings", "fooling.fitness": "fitness"}
# Where griffe reads the sources, relative to mkdocs.yml; mkdocs.yml's mkdocstrings paths agree.
SOURCE_LINKS = Path("build") / "griffe-src"

_CLI_MARKER = "<!-- fooling-cli -->"
_CLI_END = "<!-- /fooling-cli -->"
# The generated part of a page: the markers and what lies between them.
_CLI_REGION = re.compile(re.escape(_CLI_MARKER) + r".*?" + re.escape(_CLI_END), re.S)
CLI_PAGE = Path(__file__).resolve().parents[1] / "cli.md"
_API_MARKER = re.compile(r"<!-- fooling-api: ([\w.]+) -->")


@event_priority(100)  # before mkdocstrings reads its configuration
def on_config(config):
    """Link ``build/griffe-src/fooling/{evo,encodings,fitness}`` to the project's folders.

    Args:
        config: the MkDocs configuration.

    Returns:
        The configuration, unchanged.
    """
    root = Path(config.config_file_path).resolve().parent
    namespace = root / SOURCE_LINKS / "fooling"
    namespace.mkdir(parents=True, exist_ok=True)
    for folder in PACKAGES.values():
        link = namespace / folder
        target = root / folder
        if link.is_symlink() and link.resolve() == target:
            continue
        if link.is_symlink():
            link.unlink()
        link.symlink_to(target, target_is_directory=True)
    return config


def on_page_markdown(markdown: str, page, config, files) -> str:
    """Replace the CLI and API markers of a page by the generated Markdown.

    Args:
        markdown: the page's Markdown source.
        page: the page (unused).
        config: the MkDocs configuration.
        files: the site's files (unused).

    Returns:
        The Markdown with every marker expanded.
    """
    if _CLI_MARKER in markdown:
        from fooling.evo.cli import build_parser

        markdown = with_cli(markdown, cli_markdown(build_parser()))
    root = Path(config.config_file_path).resolve().parent
    return _API_MARKER.sub(lambda match: api_markdown(match[1], root / SOURCE_LINKS), markdown)


# Docstrings cross-reference in Sphinx's roles (:func:`name`), which mkdocstrings leaves as text
# before the code: ":func:<code>name</code>". The role (and Sphinx's "~" for a short name) goes.
_SPHINX_ROLE = re.compile(r":(?:attr|class|data|exc|func|meth|mod|obj):(<code>)~?")


def on_page_content(html: str, page, config, files) -> str:
    """Drop Sphinx role prefixes and literal-block colons (``::``) from the API pages.

    Args:
        html: the page's HTML.
        page: the page; only those under ``api/`` change.
        config: the MkDocs configuration (unused).
        files: the site's files (unused).

    Returns:
        The HTML, cleaned on API pages.
    """
    if not page.file.src_uri.startswith("api/"):
        return html
    html = _SPHINX_ROLE.sub(r"\1", html)
    return re.sub(r"(\w)::</p>", r"\1:</p>", html)


# --- the command line -------------------------------------------------------------------------


def _cell(text: str) -> str:
    """``text`` as the inside of a Markdown table cell: HTML and Markdown syntax escaped."""
    text = html.escape(" ".join(text.split()), quote=False)
    return re.sub(r"([\\`*_\[\]|{}])", r"\\\1", text)


def _commands(parser: argparse.ArgumentParser) -> dict[str, tuple[str, argparse.ArgumentParser]]:
    """``{name: (one-line help, parser)}`` of the parser's subcommands, in the parser's order."""
    commands: dict[str, tuple[str, argparse.ArgumentParser]] = {}
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            helps = {choice.dest: choice.help or "" for choice in action._choices_actions}
            for name, subparser in action.choices.items():
                commands[name] = (helps.get(name, ""), subparser)
    return commands


def _formatter(parser: argparse.ArgumentParser) -> argparse.HelpFormatter:
    """A help formatter of fixed width, so the page does not depend on the terminal."""
    return argparse.HelpFormatter(parser.prog, width=100, max_help_position=40)


def _usage(parser: argparse.ArgumentParser) -> str:
    formatter = _formatter(parser)
    formatter.add_usage(parser.usage, parser._actions, parser._mutually_exclusive_groups)
    return formatter.format_help().strip()


def _value(parser: argparse.ArgumentParser, action: argparse.Action) -> str:
    """What follows the flag, as ``--help`` writes it (``N``, ``{small,medium,large}``)."""
    if action.nargs == 0:
        return ""
    formatter = _formatter(parser)
    if not action.option_strings:
        return formatter._format_args(action, formatter._get_default_metavar_for_positional(action))
    return formatter._format_args(action, formatter._get_default_metavar_for_optional(action))


def _default(action: argparse.Action) -> str:
    default = action.default
    if default in (None, False, argparse.SUPPRESS) or action.nargs == 0:
        return ""
    if isinstance(default, float):
        return f"{default:.6g}"
    return str(default)


def _options_table(parser: argparse.ArgumentParser, skip: set[str]) -> list[str]:
    """One Markdown table per argument group of ``parser`` (its help and ``skip`` left out)."""
    lines: list[str] = []
    for group in parser._action_groups:
        actions = [
            action
            for action in group._group_actions
            if not isinstance(action, (argparse._HelpAction, argparse._SubParsersAction))
            and not (action.option_strings and set(action.option_strings) <= skip)
        ]
        if not actions:
            continue
        lines += ["", f"**{_cell(group.title or 'options')}**", ""]
        lines += ["| argument | value | default | help |", "|---|---|---|---|"]
        for action in actions:
            names = ", ".join(f"`{name}`" for name in (action.option_strings or [action.dest]))
            value = _value(parser, action)
            text = _formatter(parser)._expand_help(action) if action.help else ""
            lines.append(
                f"| {names} | {f'`{value}`' if value else ''} | {_cell(_default(action))} | {_cell(text)} |"
            )
    return lines


def cli_markdown(parser: argparse.ArgumentParser) -> str:
    """Every command of ``parser`` with its usage and a table of its arguments, as Markdown.

    Args:
        parser: the ``fooling`` parser.

    Returns:
        Markdown with one ``##`` section per command, ``## fooling COMMAND``, after a section
        for the options of the program itself.
    """
    commands = _commands(parser)
    common = {name for action in parser._actions for name in action.option_strings} - {"-h", "--help"}
    common_list = ", ".join(
        "/".join(f"`{name}`" for name in action.option_strings)
        for action in parser._actions
        if action.option_strings and set(action.option_strings) <= common
    )
    lines = [
        f"## {parser.prog}",
        "",
        _cell(parser.description or ""),
        "",
        "```text",
        _usage(parser),
        "```",
        "",
        "| command | what it does |",
        "|---|---|",
    ]
    for name, (text, _) in commands.items():
        lines.append(f"| [`{name}`](#{parser.prog}-{name}) | {_cell(text)} |")
    lines += _options_table(parser, skip=set())
    lines += ["", f"These options are also accepted after the command: {common_list}."]
    for text, subparser in commands.values():
        lines += ["", f"## {subparser.prog}", "", _cell(text)]
        if subparser.description:
            lines += ["", _cell(subparser.description)]
        lines += ["", "```text", _usage(subparser), "```"]
        lines += _options_table(subparser, skip=common)
        lines += ["", f"And the options of every command: {common_list}."]
    return "\n".join(lines) + "\n"


def python_version() -> str:
    """``3.11``: argparse's usage lines differ a little between Python versions."""
    return f"{sys.version_info.major}.{sys.version_info.minor}"


def with_cli(markdown: str, generated: str) -> str:
    """``markdown`` with its generated part (between the CLI markers) replaced by ``generated``.

    Args:
        markdown: a page holding the markers.
        generated: :func:`cli_markdown`'s text.

    Returns:
        The page; the region records the Python version that wrote it.
    """
    region = f"{_CLI_MARKER}\n<!-- written with Python {python_version()} -->\n\n{generated}\n{_CLI_END}"
    if _CLI_REGION.search(markdown):
        return _CLI_REGION.sub(lambda _: region, markdown, count=1)
    return markdown.replace(_CLI_MARKER, region, 1)


def cli_region(markdown: str) -> str | None:
    """The generated part of ``markdown`` (markers included); ``None`` without the markers."""
    match = _CLI_REGION.search(markdown)
    return match[0] if match else None


def write_cli_page() -> None:
    """Rewrite the generated part of ``docs/cli.md`` from the parser."""
    from fooling.evo.cli import build_parser

    CLI_PAGE.write_text(with_cli(CLI_PAGE.read_text(), cli_markdown(build_parser())))


# --- the Python API ---------------------------------------------------------------------------


def public_packages(package: str) -> list[str]:
    """``package`` and its public subpackages (folders with an ``__init__.py``), depth first.

    Args:
        package: a dotted package name, e.g. ``fooling.evo``.

    Returns:
        The dotted names, ``package`` first.
    """
    module = importlib.import_module(package)
    names = [package]
    for folder in sorted(Path(next(iter(module.__path__))).iterdir()):
        if folder.name.startswith(("_", ".")) or not (folder / "__init__.py").is_file():
            continue
        names += public_packages(f"{package}.{folder.name}")
    return names


def _kind(value) -> int:
    """Sort key: classes first, then functions, then everything else (constants)."""
    if isinstance(value, type):
        return 0
    if callable(value):
        return 1
    return 2


def api_paths(package: str, source: Path) -> list[str]:
    """The identifiers mkdocstrings renders for the names in ``package.__all__``.

    A name bound in the package's ``__init__.py`` is referenced through the package
    (``fooling.evo.RunConfig``). A name the package imports only on first use (PEP 562
    ``__getattr__``), or one shadowed by a submodule of the same name, is referenced where
    it is defined (its ``__module__``), found by importing it.

    Args:
        package: a dotted package name.
        source: the folder holding ``fooling/`` for griffe.

    Returns:
        One identifier per name of ``__all__``: classes, then functions, then constants, each
        group sorted by name. Empty when the package has no ``__all__``.
    """
    import griffe

    module = importlib.import_module(package)
    exported = list(getattr(module, "__all__", []))
    static = griffe.load(package, search_paths=[str(source)], resolve_aliases=False)
    paths = []
    for name in sorted(exported, key=lambda name: (_kind(getattr(module, name)), name.lower())):
        value = getattr(module, name)
        member = static.members.get(name)
        shadowed = member is not None and member.is_module and not isinstance(value, type(module))
        defined = getattr(value, "__module__", None), getattr(value, "__qualname__", None)
        if (member is None or shadowed) and all(defined):
            paths.append(".".join(defined))
        else:
            paths.append(f"{package}.{name}")
    return paths


def api_markdown(package: str, source: Path) -> str:
    """The API reference of ``package`` and its public subpackages, as mkdocstrings blocks.

    Args:
        package: a dotted package name, e.g. ``fooling.evo``.
        source: the folder holding ``fooling/`` for griffe.

    Returns:
        Markdown: per package, its docstring (``##``) and one ``###`` block per public name.
    """
    lines: list[str] = []
    for name in public_packages(package):
        lines += [
            f"::: {name}",
            "    options:",
            "      members: false",
            "      heading_level: 2",
            "      show_root_full_path: true",
            "",
        ]
        paths = api_paths(name, source)
        if not paths:
            lines += [f"`{name}` has no `__all__`: its modules are internal for now.", ""]
        for path in paths:
            lines += [f"::: {path}", "    options:", "      heading_level: 3", ""]
    return "\n".join(lines)


if __name__ == "__main__":
    write_cli_page()
