"""The documentation site: strict build, the command-line page, runnable examples, README commands.

* ``mkdocs build --strict`` passes with no warning (broken links and anchors, missing references,
  docstrings that do not parse), downloads nothing and loads nothing from outside the site;
* the command-line page lists every command and every flag of the real parser;
* every fenced ``python`` block of the pages runs (a page's blocks in order, in one namespace, in a
  temporary folder, with ``generations=`` and ``population=`` shrunk), unless the line before it
  is ``<!-- not run: REASON -->``;
* every ``fooling ...`` command line of the README and the pages parses with the real parser, and
  the README's first ``evolve``, ``--resume`` and ``report`` run on a tiny budget.
"""

from __future__ import annotations

import html
import os
import re
import shlex
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
DOCS = ROOT / "docs"
README = ROOT / "README.md"
# Pages of the site: docs/ (the hooks excepted) and cluster/README.md, which docs/cluster.md includes.
PAGES = sorted(path for path in DOCS.rglob("*.md") if "_hooks" not in path.parts)
PAGES.append(ROOT / "cluster" / "README.md")

NOT_RUN = re.compile(r"<!-- not run: (.+?) -->")
TINY = ((r"generations=\d+", "generations=3"), (r"population=\d+", "population=20"))


def _name(path: Path) -> str:
    return str(path.relative_to(ROOT))


# --- the strict build -------------------------------------------------------------------------


@pytest.fixture(scope="module")
def site(tmp_path_factory) -> tuple[subprocess.CompletedProcess, Path]:
    """``mkdocs build --strict`` into a temporary folder: the finished process and the site."""
    for module in ("mkdocs", "material", "mkdocstrings_handlers.python", "mkdocs_jupyter"):
        pytest.importorskip(module, reason='the docs extra is not installed: pip install -e ".[docs]"')
    out = tmp_path_factory.mktemp("site")
    env = dict(os.environ, NO_MKDOCS_2_WARNING="1", FOOLING_OFFLINE="1")
    # Anything that tried to download during the build would fail through this proxy.
    env.update(HTTP_PROXY="http://127.0.0.1:9", HTTPS_PROXY="http://127.0.0.1:9", NO_PROXY="")
    env.update(http_proxy=env["HTTP_PROXY"], https_proxy=env["HTTPS_PROXY"], no_proxy="")
    command = [sys.executable, "-m", "mkdocs", "build", "--strict", "--config-file", str(ROOT / "mkdocs.yml")]
    build = subprocess.run(
        [*command, "--site-dir", str(out)], cwd=ROOT, env=env, capture_output=True, text=True, timeout=600
    )
    return build, out


def test_site_builds_strictly_with_no_warning(site):
    build, _ = site
    output = build.stdout + build.stderr
    warnings = [line for line in output.splitlines() if line.startswith(("WARNING", "ERROR"))]
    assert build.returncode == 0 and not warnings, "mkdocs build --strict failed:\n" + "\n".join(
        warnings or output.splitlines()[-30:]
    )


def test_site_loads_nothing_from_outside(site):
    _, out = site
    external = re.compile(r"<(?:script|img|link|iframe|source)\b[^>]*\b(?:src|href)=\"(?:https?:)?//", re.I)
    for page in out.rglob("*.html"):
        text = page.read_text(errors="replace")
        for match in external.finditer(text):
            tag = match[0]
            if tag.lower().startswith("<link") and "stylesheet" not in tag.lower():
                continue  # e.g. rel="canonical": a name, not a download
            pytest.fail(f"{page.relative_to(out)} loads {tag}...")
    for sheet in out.rglob("*.css"):
        assert not re.search(r"@import\s+url\(\s*['\"]?https?:", sheet.read_text(errors="replace")), sheet


def test_readme_links_resolve(site):
    """Every relative link of the README names a file, and its #anchor exists on the built page."""
    _, out = site
    broken = []
    for target in re.findall(r"\]\(([^)\s]+)\)", README.read_text()):
        if re.match(r"[a-z]+:", target):
            continue
        path, _, anchor = target.partition("#")
        if not (ROOT / path).exists():
            broken.append(target)
        elif anchor:
            page = out / Path(path).relative_to("docs").with_suffix("") / "index.html"
            if path.startswith("docs/") and f'id="{anchor}"' not in page.read_text():
                broken.append(target)
    assert not broken, f"README links to what does not exist: {broken}"


# --- the command-line page --------------------------------------------------------------------


def _text(fragment: str) -> str:
    return html.unescape(re.sub(r"<[^>]+>", " ", fragment))


def _reference_hook():
    """``docs/_hooks/reference.py``, the hook that writes the reference pages, as a module."""
    import importlib.util

    pytest.importorskip("mkdocs", reason='the docs extra is not installed: pip install -e ".[docs]"')
    spec = importlib.util.spec_from_file_location("reference_hook", DOCS / "_hooks" / "reference.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_the_cli_page_in_the_sources_is_current():
    """docs/cli.md keeps the generated reference for readers of the sources: it must be the parser's."""
    from fooling.evo.cli import build_parser

    hook = _reference_hook()
    page = (DOCS / "cli.md").read_text()
    committed = hook.cli_region(page)
    assert committed is not None, "docs/cli.md lost its <!-- fooling-cli --> ... <!-- /fooling-cli --> part"
    current = hook.cli_region(hook.with_cli(page, hook.cli_markdown(build_parser())))
    written_with = re.search(r"<!-- written with Python (\d+\.\d+) -->", committed)[1]
    if written_with != hook.python_version():  # argparse's usage lines differ between versions
        committed, current = (
            [line for line in text.splitlines() if line.startswith(("|", "#"))]
            for text in (committed, current)
        )
    assert committed == current, "docs/cli.md is not the parser's: run make cli-page"


def test_cli_page_lists_every_command_and_flag(site):
    import argparse

    from fooling.evo.cli import build_parser

    _, out = site
    page = (out / "cli" / "index.html").read_text()
    parser = build_parser()
    # The sections, one per <h2 id="...">, up to the next <h2.
    sections = dict(re.findall(r'<h2 id="([^"]+)".*?>(.*?)(?=<h2 |$)', page, flags=re.S))
    top = _text(sections["fooling"])
    subcommands = next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction)).choices
    missing = []
    for name, command in [("fooling", parser), *subcommands.items()]:
        anchor = "fooling" if command is parser else f"fooling-{name}"
        if anchor not in sections:
            missing.append(f"section {anchor}")
            continue
        text = _text(sections[anchor])
        if command is not parser and name not in top:
            missing.append(f"{name} in the table of commands")
        for action in command._actions:
            if isinstance(action, (argparse._HelpAction, argparse._SubParsersAction)):
                continue
            for flag in action.option_strings or [action.dest]:
                if not re.search(rf"(?<![\w-]){re.escape(flag)}(?![\w-])", text):
                    missing.append(f"{anchor}: {flag}")
    assert not missing, "the command-line page lacks: " + ", ".join(missing)


# --- fenced python blocks ---------------------------------------------------------------------


def python_blocks(path: Path) -> list[tuple[int, str, str | None]]:
    """``(line, code, reason not run or None)`` of every fenced ``python`` block of a page."""
    text = path.read_text()
    blocks = []
    for match in re.finditer(r"^```python[^\n]*\n(.*?)^```", text, flags=re.S | re.M):
        before = [line for line in text[: match.start()].splitlines() if line.strip()]
        marker = NOT_RUN.search(before[-1]) if before else None
        line = text.count("\n", 0, match.start()) + 1
        blocks.append((line, match[1], marker[1].strip() if marker else None))
    return blocks


PAGES_WITH_CODE = [path for path in PAGES if python_blocks(path)]


def test_some_pages_have_python_examples():
    assert PAGES_WITH_CODE, "no page has a fenced python block: is the pattern still right?"


@pytest.mark.parametrize("path", PAGES_WITH_CODE, ids=_name)
def test_python_blocks_run(path, fooling_home, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    namespace: dict = {"__name__": "__docs__"}
    for line, code, reason in python_blocks(path):
        if reason is not None:
            assert len(reason) > 3, f"{_name(path)}:{line}: say why the block is not run"
            continue
        for pattern, tiny in TINY:
            code = re.sub(pattern, tiny, code)
        try:
            exec(compile(code, f"{_name(path)}:{line}", "exec"), namespace)  # noqa: S102 (our own docs)
        except Exception as error:
            raise AssertionError(f"the python block at {_name(path)}:{line} fails: {error!r}") from error


# --- command lines ----------------------------------------------------------------------------


def command_lines(path: Path) -> list[tuple[int, list[str]]]:
    """``(line, arguments after "fooling")`` of each ``fooling`` command in a page's shell blocks.

    Continuation lines are joined, comments dropped; lines with ``...`` are sketches, skipped.
    """
    text = path.read_text()
    commands = []
    for match in re.finditer(r"^```(?:bash|sh|shell|console)\n(.*?)^```", text, flags=re.S | re.M):
        first = text.count("\n", 0, match.start()) + 2
        logical, start = "", first
        for number, raw in enumerate(match[1].splitlines(), start=first):
            if not logical:
                start = number
            if raw.rstrip().endswith("\\"):
                logical += raw.rstrip()[:-1] + " "
                continue
            words = shlex.split(logical + raw, comments=True)
            logical = ""
            if words[:1] == ["fooling"] and not any("..." in word for word in words):
                commands.append((start, words[1:]))
    return commands


DOCUMENTED = [(path, line, words) for path in [README, *PAGES] for line, words in command_lines(path)]


def test_readme_shows_the_first_five_commands():
    shown = {words[0] + (" --resume" if "--resume" in words else "") for _, words in command_lines(README)}
    assert {"evolve", "evolve --resume", "report", "audit", "perturb"} <= shown


@pytest.mark.parametrize(
    ("path", "line", "words"), DOCUMENTED, ids=[f"{_name(path)}:{line}" for path, line, _ in DOCUMENTED]
)
def test_documented_commands_parse(path, line, words):
    from fooling.evo.cli import build_parser

    build_parser().parse_args(words)  # raises UsageError, in one line, on a flag that no longer exists


def test_readme_first_commands_run(fooling_home, tmp_path, monkeypatch):
    from fooling.evo.cli import main

    monkeypatch.chdir(tmp_path)
    tiny = {"--generations": {"200": "3", "400": "5"}, "--population": {"200": "20"}}
    ran = []
    for _, words in command_lines(README):
        if words[0] not in ("evolve", "report") or "--model" in words and "mnist-lenet" not in words:
            continue
        words = [tiny.get(before, {}).get(word, word) for before, word in zip(["", *words], words)]
        assert main(words) == 0, f"fooling {shlex.join(words)} failed"
        ran.append(words[0] + (" --resume" if "--resume" in words else ""))
    assert ran == ["evolve", "evolve --resume", "report"]
    runs = [path.parent.parent for path in tmp_path.rglob("checkpoints/LATEST")]
    assert len(runs) == 1 and (runs[0] / "elites.png").is_file()
