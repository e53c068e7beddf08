"""Pages built from untrusted run folders and labels: fields are type-checked, text stays text.

A run folder may be someone else's, and labels come from the user's model: a checkpoint
field or a class name holding HTML must neither run a script in the gallery or the audit
page nor break the page's own script, and report.md must show it as text.
"""

from __future__ import annotations

import hashlib
import html
import io
import json
import re
import shutil
import struct
from html.parser import HTMLParser
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import torch
from PIL import Image
from small_setups import CHROMIUM, chromium, torchscript_reference

from fooling.encodings import UserError
from fooling.evo.cli import main
from fooling.evo.config import RunConfig
from fooling.evo.experiments.elites import load_elites
from fooling.evo.experiments.transfer import transfer
from fooling.evo.report.audit_page import png_data_uri, write_html, write_markdown
from fooling.evo.report.cells import UntrustedFieldError, checked_rows
from fooling.evo.report.escape import markdown_text, script_json
from fooling.evo.report.figures import write_report
from fooling.evo.report.gallery import write_gallery
from fooling.evo.run import evolve
from fooling.evo.store.checkpoint import METADATA_CHECKSUM_KEY, METADATA_KEY

# Five class names, each an attack on the page that shows it.
HOSTILE_LABELS = (
    "<!--<script>",
    "</script><script>document.title='pwned'</script>",
    "<img src=x onerror=\"document.title='pwned'\">",
    "a | b `c` *d* [e](javascript:alert(1)) &amp;",
    "cat",
)
PAYLOAD = "<img src=x onerror=\"document.title='pwned'\">"


def png(size: tuple[int, int] = (8, 8)) -> bytes:
    buffer = io.BytesIO()
    Image.new("RGB", size, (200, 30, 30)).save(buffer, format="PNG")
    return buffer.getvalue()


def good_row(**changes) -> dict:
    row = {"class_id": 3, "class_name": "owl", "fitness": 0.5, "individual_id": 7, "parent_id": -1,
           "parent_cell": -1, "birth_generation": 2, "image_png": png()}  # fmt: skip
    return {**row, **changes}


class _Elements(HTMLParser):
    """Every element of a page: ``(tag, attributes)``, and the title's text."""

    def __init__(self) -> None:
        super().__init__()
        self.elements: list[tuple[str, dict[str, str | None]]] = []
        self.title = ""
        self._in_title = False

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        self.elements.append((tag, dict(attrs)))
        self._in_title = tag == "title"

    def handle_endtag(self, tag: str) -> None:
        self._in_title = False

    def handle_data(self, data: str) -> None:
        if self._in_title:
            self.title += data


def injected(dom: str) -> list[str]:
    """Elements and attributes in a page's DOM that only an injection could have made."""
    parser = _Elements()
    parser.feed(dom)
    found = [f"{tag} {name}" for tag, attrs in parser.elements for name in attrs if name.startswith("on")]
    found += [f"img src={attrs.get('src')}" for tag, attrs in parser.elements
              if tag == "img" and not re.fullmatch(r"thumbs/[0-9a-f]{24}\.png|data:image/png;base64,.*",
                                                   attrs.get("src") or "")]  # fmt: skip
    return found + (["title set by a payload"] if parser.title == "pwned" else [])


# --- checkpoint fields -------------------------------------------------------------------------


def oversized_png() -> bytes:
    data = bytearray(png())
    data[16:24] = struct.pack(">II", 100_000, 100_000)  # declared, never decoded
    return bytes(data)


@pytest.mark.parametrize(
    ("field", "value"),
    [
        ("birth_generation", PAYLOAD),
        ("birth_generation", -1),
        ("birth_generation", 2.0),
        ("class_id", PAYLOAD),
        ("class_id", True),
        ("class_name", PAYLOAD.encode()),
        ("class_name", "x" * 5000),
        ("fitness", float("nan")),
        ("fitness", PAYLOAD),
        ("individual_id", PAYLOAD),
        ("image_png", PAYLOAD),
        ("image_png", b"<svg xmlns='http://www.w3.org/2000/svg' onload='alert(1)'/>"),
        ("image_png", oversized_png()),
    ],
)
def test_a_checkpoint_field_of_the_wrong_kind_is_refused_in_one_line(field, value):
    with pytest.raises(UntrustedFieldError) as caught:
        checked_rows([good_row(class_id=0), good_row(**{field: value})], "run/checkpoints/gen-000002.parquet")
    message = str(caught.value)
    assert "\n" not in message and "<" not in message  # one line, without the hostile content
    assert f"row 1, field {field}" in message and "gen-000002.parquet" in message


def test_checked_rows_keep_only_what_the_report_uses():
    assert checked_rows([good_row(parent_id=5, extra="ignored")], "x") == [
        {"class_id": 3, "class_name": "owl", "fitness": 0.5, "birth_generation": 2, "image_png": png()}
    ]


def test_a_damaged_png_thumbnail_is_refused_before_the_page_is_written(tmp_path):
    truncated = png((40, 40))[:60]  # a valid header, then nothing
    rows = checked_rows([good_row(image_png=truncated)], "hostile.parquet")
    with pytest.raises(UntrustedFieldError, match=r"hostile.parquet: row 0, field image_png: a damaged PNG"):
        write_gallery(str(tmp_path), rows, "t", source="hostile.parquet")
    assert not (tmp_path / "index.html").exists()


@pytest.fixture(scope="module")
def hostile_labels_run(tmp_path_factory) -> Path:
    """A short run of a TorchScript model whose labels file holds :data:`HOSTILE_LABELS`."""
    folder = tmp_path_factory.mktemp("hostile")
    _, reference = torchscript_reference(folder)
    (folder / "labels.txt").write_text("\n".join(HOSTILE_LABELS) + "\n")
    out = folder / "run"
    config = RunConfig(model=reference, encoding="direct", generations=2, population=10, out=str(out))
    evolve(config, show_progress=False)
    write_report(str(out))
    return out


def test_a_checkpoint_with_html_in_birth_generation_is_refused_by_fooling_report(
    hostile_labels_run, tmp_path, capsys
):
    run = tmp_path / "run"
    (run / "checkpoints").mkdir(parents=True)
    for path in (hostile_labels_run / "checkpoints").iterdir():
        if path.suffix != ".parquet":
            (run / "checkpoints" / path.name).write_bytes(path.read_bytes())
            continue
        # Written with pyarrow itself, past the run's writer and its checks: a hostile shared folder.
        table = pq.read_table(path)
        column = table.schema.get_field_index("birth_generation")
        table = table.set_column(column, "birth_generation", pa.array([PAYLOAD] * table.num_rows))
        assert table.schema.metadata == pq.read_schema(path).metadata
        pq.write_table(table, run / "checkpoints" / path.name)
    assert main(["report", str(run)]) == 2
    error = capsys.readouterr().err
    assert error.count("\n") == 1 and "birth_generation" in error and "Traceback" not in error
    assert not (run / "index.html").exists()


MARKUP_ENCODING = "<img src=x onerror=alert(document.domain)> [click me](javascript:alert(1))"


@pytest.mark.parametrize("command", ["transfer", "ablate"])
def test_markup_in_a_stored_encoding_never_reaches_a_markdown_report(
    hostile_labels_run, tmp_path, capsys, command
):
    # The run's config, as someone sharing the folder can write it (checksum recomputed): the
    # encoding of an unknown genome class is not looked up, and it went into transfer-*.md and
    # ablation.md as it was.
    run = tmp_path / "run"
    shutil.copytree(hostile_labels_run, run)
    for path in (run / "checkpoints").glob("*.parquet"):
        table = pq.read_table(path)
        metadata = json.loads(table.schema.metadata[METADATA_KEY])
        metadata["config"]["encoding"] = MARKUP_ENCODING
        metadata["genome_class"] = "FromANewerVersion"
        text = json.dumps(metadata).encode()
        checksum = hashlib.sha256(text).hexdigest().encode()
        pq.write_table(
            table.replace_schema_metadata({METADATA_KEY: text, METADATA_CHECKSUM_KEY: checksum}), path
        )
    capsys.readouterr()
    argv = ["transfer", str(run), "--to", load_elites(str(hostile_labels_run)).config.model]
    assert main(argv if command == "transfer" else ["ablate", str(run)]) == 2
    errors = [line for line in capsys.readouterr().err.splitlines() if line.startswith("fooling: error:")]
    assert len(errors) == 1 and "--encoding must be a name (letters, digits, '.', '_', '-')" in errors[0]
    assert not list(run.glob("*.md"))
    with pytest.raises(UserError, match="--encoding must be a name"):
        RunConfig(encoding=MARKUP_ENCODING)


@pytest.mark.skipif(CHROMIUM is None, reason="chromium is not installed (apt-get install chromium)")
def test_labels_with_html_are_text_in_the_gallery_in_chromium(hostile_labels_run, tmp_path):
    page = (hostile_labels_run / "index.html").read_text()
    # The embedded JSON can neither close its script element nor open a comment.
    assert page.count("</script>") == 2 and "<!--" not in page and "<img" not in page
    dom = chromium(hostile_labels_run / "index.html", tmp_path / "profile")
    assert injected(dom) == []
    assert re.search(r"<title>(.*?)</title>", dom).group(1) == "fooling: run"
    # The page's script ran (every cell shown) and shows each label as itself.
    shown = [html.unescape(name) for name in re.findall(r'<figure data-class-name="([^"]*)"', dom)]
    assert sorted(shown) == sorted(HOSTILE_LABELS)
    names = [html.unescape(name) for name in re.findall(r'<div class="name">(.*?)</div>', dom)]
    assert sorted(names) == sorted(HOSTILE_LABELS)
    assert dom.count("<script") == 2


def test_script_json_cannot_end_a_script_or_a_line():
    value = {"names": list(HOSTILE_LABELS), "separator": "\u2029"}
    text = script_json(value)
    assert not re.search("[<>&\u2028\u2029]", text)
    assert json.loads(text) == value


# --- the audit's pages -------------------------------------------------------------------------


def audit_inputs() -> tuple[dict, pd.DataFrame, dict[str, dict[int, str]], list[list[str]]]:
    """An audit's summary, table, images and budgets, with hostile names everywhere a name goes."""
    count = len(HOSTILE_LABELS)
    table = pd.DataFrame({"class_id": np.arange(count), "class_name": list(HOSTILE_LABELS)})
    rng = np.random.default_rng(0)
    for column in ("cppn", "direct", "ascent", "reference", "real"):
        table[column] = rng.random(count)
    table["best"] = table[["cppn", "direct"]].max(axis=1)
    facts = {"classes": count, ">=50%": 2, ">=90%": 1, ">=99%": 0, "median": 0.5, "mean": 0.5}
    summary = {
        "model": "</code><script>document.title='pwned'</script>",
        "description": PAYLOAD,
        "classes": count,
        "budget": "small",
        "budget_detail": {"ascent_steps": 50},
        "evaluations": {"cppn": 1000, "direct": 1000},
        "methods": {method: facts for method in ("cppn", "direct", "ascent", "best")},
        "gradients": True,
        "reference": "<!--",
        "notes": [PAYLOAD, "line\nbreak\u2028here"],
        "date": "2025-01-01 00:00 UTC",
        "seconds": 1.0,
        "transfer": {"mean_source": 0.5, "mean_reference": 0.4, "both_50": 1},
        "real": {"classes": 2, "mean_real": 0.7, "mean_fooling": 0.6},
    }
    images = {
        method: {i: png_data_uri(torch.rand(3, 16, 16)) for i in range(count)}
        for method in ("cppn", "direct", "ascent")
    }
    return summary, table, images, [["small", "1,000", "1,000", "50 steps, up to 20 classes"]]


def markdown_cells(line: str) -> list[str]:
    """The cells of a Markdown table row, split as GFM does (at pipes not escaped)."""
    return [cell.strip() for cell in re.split(r"(?<!\\)\|", line)[1:-1]]


def unmarkdown(cell: str) -> str:
    return html.unescape(re.sub(r"\\(.)", r"\1", cell))


def test_report_md_shows_labels_and_names_as_text():
    summary, table, _, _ = audit_inputs()
    markdown = write_markdown(summary, table, "| budget |\n|---|")
    for dangerous in ("<img", "<script", "</code", "<!--", "\u2028"):
        assert dangerous not in markdown
    rows = markdown.split("## Per class\n\n")[1].splitlines()[2:]
    assert len(rows) == len(HOSTILE_LABELS)
    assert all(len(markdown_cells(row)) == 6 for row in rows)  # no pipe in a label adds a cell
    assert {unmarkdown(markdown_cells(row)[0]) for row in rows} == set(HOSTILE_LABELS)
    notes = [line for line in markdown.splitlines() if line.startswith("- ")]
    assert [unmarkdown(note[2:]) for note in notes] == [PAYLOAD, "line break here"]


def test_markdown_text_escapes_what_markdown_and_html_would_read():
    assert markdown_text("a|b") == "a\\|b"
    assert markdown_text("<b>&</b>") == "&lt;b&gt;&amp;&lt;/b&gt;"
    assert markdown_text("[x](javascript:y) *z* `w`") == "\\[x\\](javascript:y) \\*z\\* \\`w\\`"
    assert markdown_text("one\r\ntwo\u2029three") == "one  two three"


def test_audit_html_refuses_an_image_that_is_not_a_png_data_uri():
    summary, table, images, budgets = audit_inputs()
    images["cppn"][0] = 'x" onerror="document.title=1'
    with pytest.raises(ValueError, match="not a PNG data URI"):
        write_html(summary, table, images, budgets)


@pytest.mark.skipif(CHROMIUM is None, reason="chromium is not installed (apt-get install chromium)")
def test_audit_html_shows_hostile_names_as_text_in_chromium(tmp_path):
    summary, table, images, budgets = audit_inputs()
    page = write_html(summary, table, images, budgets)
    assert page.count("<script") == 1 and "<img src=x" not in page and "<!--" not in page
    (tmp_path / "report.html").write_text(page)
    dom = chromium(tmp_path / "report.html", tmp_path / "profile", query="sort=class_name")
    assert injected(dom) == []
    assert dom.count("<script") == 1
    # The sorting script ran: rows in descending order of class name.
    shown = [html.unescape(n) for n in re.findall(r'<tr><td class="name" data-class_name="([^"]*)"', dom)]
    assert shown == sorted(HOSTILE_LABELS, reverse=True)
    assert 'data-order="desc"' in dom
    # The hostile model name is the title's text.
    assert html.unescape(re.search(r"<title>(.*?)</title>", dom).group(1)) == (
        "Fooling audit of " + summary["model"]
    )


def test_the_gallery_never_writes_through_a_link_planted_in_the_run_folder(
    hostile_labels_run, tmp_path, capsys
):
    run = tmp_path / "run"
    shutil.copytree(hostile_labels_run, run)
    victim = tmp_path / "victim"
    victim.mkdir()
    (victim / "keep.png").write_bytes(b"mine")
    # A thumbnail name replaced by a link: the link is replaced, its target left alone.
    planted = next((run / "thumbs").iterdir())
    planted.unlink()
    planted.symlink_to(victim / "keep.png")
    assert main(["report", str(run)]) == 0
    assert not planted.is_symlink() and planted.read_bytes().startswith(b"\x89PNG")
    assert (victim / "keep.png").read_bytes() == b"mine"
    # The thumbnail folder replaced by a link: refused in one line, nothing written there.
    shutil.rmtree(run / "thumbs")
    (run / "thumbs").symlink_to(victim)
    assert main(["report", str(run)]) == 2
    assert capsys.readouterr().err.count("\n") == 1
    assert sorted(path.name for path in victim.iterdir()) == ["keep.png"]


def test_transfer_md_shows_hostile_labels_as_text(hostile_labels_run):
    # The run's own model as the target: every class name and top-1 label in the tables is
    # one of the hostile labels, and the model reference (a path) is in headings and headers.
    reference = load_elites(str(hostile_labels_run)).config.model
    result = transfer(str(hostile_labels_run), [reference])
    markdown = Path(result.uris[0]).read_text()
    for dangerous in ("<img", "<script", "</script", "<!--"):
        assert dangerous not in markdown
    detail = markdown.split("## Per elite")[1].splitlines()[4:]
    assert detail and all(len(markdown_cells(row)) == 3 for row in detail)
    assert {unmarkdown(markdown_cells(row)[0]) for row in detail} <= set(HOSTILE_LABELS)
    top1 = {unmarkdown(re.search(r"\((.*)\)$", markdown_cells(row)[2]).group(1)) for row in detail}
    assert top1 <= set(HOSTILE_LABELS)
