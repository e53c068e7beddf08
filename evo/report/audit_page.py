"""The pages of ``fooling audit``: ``report.md`` and a self-contained ``report.html``.

Class names come from the user's labels file or model and the model's name and notes from
whatever the user handed over: every one of them is escaped (:func:`html.escape` in HTML and
SVG, :func:`~fooling.evo.report.escape.markdown_text` in Markdown), thumbnails are PNG data
URIs made here and checked for form, and the page's script reads the table's own attributes
(a sort key from the URL is only compared with the headers' keys).
"""

from __future__ import annotations

import base64
import html
import io
import re

import numpy as np
import pandas as pd
import torch
from PIL import Image

from fooling.evo.report.escape import content_security_policy, markdown_text

THRESHOLDS = (0.5, 0.9, 0.99)
METHODS = ("cppn", "direct", "ascent")
METHOD_NAMES = {"cppn": "CPPN", "direct": "direct", "ascent": "gradient ascent"}
NAME_CLASS = ' class="name"'
# Side of the thumbnails embedded in the HTML report (pixels).
THUMBNAIL = 64
SUMMARY_HEADER = ["method", "classes searched", ">= 50%", ">= 90%", ">= 99%", "median", "mean"]
_DATA_URI = re.compile(r"data:image/png;base64,[A-Za-z0-9+/]+={0,2}")


def png_data_uri(image: torch.Tensor) -> str:
    """``(channels, H, W)`` in [0, 1] -> a ``data:image/png`` URI of a :data:`THUMBNAIL` thumbnail."""
    array = (image.clamp(0, 1) * 255).round().to(torch.uint8).permute(1, 2, 0).numpy()
    picture = Image.fromarray(array[..., 0] if array.shape[-1] == 1 else array)
    picture = picture.resize((THUMBNAIL, THUMBNAIL), Image.Resampling.NEAREST)
    buffer = io.BytesIO()
    picture.save(buffer, format="PNG")
    return "data:image/png;base64," + base64.b64encode(buffer.getvalue()).decode()


def _plural(count: int, word: str) -> str:
    return f"{count} {word}" + ("" if count == 1 else "es" if word.endswith("s") else "s")


def _percent(value: float) -> str:
    return "" if value != value else f"{100 * value:.2f}%"


def _summary_rows(summary: dict) -> list[tuple[str, list[str]]]:
    """``(method name, cells)`` rows of the summary table."""
    rows = []
    for method, facts in summary["methods"].items():
        label = "best of CPPN and direct" if method == "best" else METHOD_NAMES[method]
        rows.append(
            (
                label,
                [
                    str(facts["classes"]),
                    *(str(facts[f">={round(100 * t)}%"]) for t in THRESHOLDS),
                    _percent(facts["median"]),
                    _percent(facts["mean"]),
                ],
            )  # fmt: skip
        )
    return rows


def write_markdown(summary: dict, table: pd.DataFrame, budgets: str) -> str:
    """The report as Markdown: summary, budget, transfer, real photos, per-class table.

    Args:
        summary: the audit's summary (see :class:`~fooling.evo.experiments.audit.AuditResult`).
        table: one row per class (``class_name`` and the confidence columns).
        budgets: the Markdown table of the budgets (the project's own text, written as is).

    Returns:
        The Markdown text; every name in it (model, reference, classes, notes) is escaped.
    """
    text = markdown_text
    lines = [
        f"# Fooling audit of {text(str(summary['model']))}",
        "",
        f"{text(str(summary['description']))}. Budget **{text(str(summary['budget']))}**: "
        f"{summary['evaluations']['cppn']:,} CPPN and {summary['evaluations']['direct']:,} direct evaluations"
        + (
            f", {summary['budget_detail']['ascent_steps']} gradient-ascent steps"
            if summary["gradients"]
            else ""
        )
        + f"; {summary['classes']} classes; {summary['date']}, {summary['seconds']} s.",
        "",
        "Classes for which an image was found that the model labels with at least the given confidence:",
        "",
        "| " + " | ".join(SUMMARY_HEADER) + " |",
        "|" + "---|" * len(SUMMARY_HEADER),
    ]
    lines += [f"| {label} | " + " | ".join(cells) + " |" for label, cells in _summary_rows(summary)]
    if "transfer" in summary:
        transfer = summary["transfer"]
        lines += [
            "",
            f"Transfer to {text(str(summary['reference']))}: mean confidence "
            f"{_percent(transfer['mean_source'])} on {text(str(summary['model']))} -> "
            f"{_percent(transfer['mean_reference'])} on the reference; "
            f"{transfer['both_50']} classes >= 50% on both.",
        ]
    if "real" in summary:
        real = summary["real"]
        lines += [
            "",
            f"Real photos ({_plural(real['classes'], 'class')}): mean confidence "
            f"{_percent(real['mean_real'])} on real photos, {_percent(real['mean_fooling'])} on the fooling "
            "images of the same classes.",
        ]
    if summary["notes"]:
        lines += ["", *(f"- {text(str(note))}" for note in summary["notes"])]
    lines += _queries_lines(summary.get("queries"))
    lines += ["", "## Budgets", "", budgets, "", "## Per class", ""]
    columns = ["class", "CPPN", "direct", "gradient ascent", "reference", "real photos"]
    lines += ["| " + " | ".join(columns) + " |", "|" + "---|" * len(columns)]
    for row in table.sort_values("best", ascending=False).itertuples():
        cells = [text(str(row.class_name)), _percent(row.cppn), _percent(row.direct), _percent(row.ascent),
                 _percent(row.reference), _percent(row.real)]  # fmt: skip
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


def _queries_lines(queries: object) -> list[str]:
    """Markdown of the queries-to-fool curve: per search, queries until the first (half the) classes."""
    if not isinstance(queries, dict) or not any(isinstance(v, dict) and v for v in queries.values()):
        return []
    lines = ["", "## Queries to fool", "",
             "Images sent to the model until the first class (half the classes) reached each level:",
             "", "| search | queries spent | 50% | 90% | 99% | 99.99% |",
             "|---|---|---|---|---|---|"]  # fmt: skip
    for method, curve in queries.items():
        if not isinstance(curve, dict) or not curve:
            continue
        cells = []
        for label in ("50%", "90%", "99%", "99.99%"):
            level = curve["levels"].get(label, {})
            first, half = level.get("first"), level.get("half")
            shown = f"{first:,} ({half:,})" if first and half else f"{first:,} (-)" if first else "-"
            cells.append(shown)
        lines.append(f"| {method} | {int(curve['queries']):,} | " + " | ".join(cells) + " |")
    return lines


def histogram_svg(table: pd.DataFrame) -> str:
    """Grouped bars: how many classes' best CPPN / direct / ascent image falls in each 10% bin."""
    colours = {"cppn": "#1f77b4", "direct": "#ff7f0e", "ascent": "#2ca02c"}
    escape = html.escape
    present = [m for m in METHODS if table[m].notna().any()]
    counts = {m: np.histogram(table[m].dropna().clip(0, 1), bins=10, range=(0, 1))[0] for m in present}
    tallest = max([1, *(int(c.max()) for c in counts.values())])
    width, height, left, bottom = 660, 240, 40, 30
    group = (width - left - 30) / 10
    bar = group / (len(present) + 1)
    parts = [f'<svg width="{width}" height="{height + 40}" role="img" '
             'aria-label="histogram of per-class confidence">']  # fmt: skip
    for index, method in enumerate(present):
        for b, value in enumerate(counts[method]):
            h = (height - bottom) * int(value) / tallest
            x = left + b * group + index * bar
            parts.append(f'<rect x="{x:.1f}" y="{height - h:.1f}" width="{bar:.1f}" height="{h:.1f}" '
                         f'fill="{colours[method]}"><title>{escape(METHOD_NAMES[method])} '
                         f'{10 * b}-{10 * b + 10}%: {int(value)} classes</title></rect>')  # fmt: skip
    for b in range(11):
        x = left + b * group
        parts.append(
            f'<text x="{x:.1f}" y="{height + 14}" font-size="10" text-anchor="middle">{10 * b}%</text>'
        )
    parts.append(f'<text x="4" y="{bottom - 10}" font-size="10">{tallest} classes</text>')
    for index, method in enumerate(present):
        parts.append(f'<rect x="{left + 150 * index}" y="{height + 24}" width="10" height="10" '
                     f'fill="{colours[method]}"/><text x="{left + 150 * index + 14}" y="{height + 33}" '
                     f'font-size="11">{escape(METHOD_NAMES[method])}</text>')  # fmt: skip
    parts.append("</svg>")
    return "".join(parts)


# Sorting by a column: the key from the URL is only compared with the headers' own keys.
_SORT_SCRIPT = """
"use strict";
var headers = Array.prototype.slice.call(document.querySelectorAll('th[data-key]'));
headers.forEach(function (th) {
  th.addEventListener('click', function () { sortBy(th.dataset.key); });
});
function sortBy(key) {
  var th = headers.filter(function (h) { return h.dataset.key === key; })[0];
  if (!th) { return; }
  var body = document.querySelector('#classes tbody');
  var rows = Array.prototype.slice.call(body.rows);
  var descending = th.dataset.order !== 'desc';
  headers.forEach(function (h) { delete h.dataset.order; });
  th.dataset.order = descending ? 'desc' : 'asc';
  var column = headers.indexOf(th);
  rows.sort(function (a, b) {
    var x = a.cells[column].dataset[key], y = b.cells[column].dataset[key];
    var nx = parseFloat(x), ny = parseFloat(y);
    var c = (isNaN(nx) || isNaN(ny)) ? x.localeCompare(y) : nx - ny;
    if (isNaN(nx) !== isNaN(ny)) { c = isNaN(nx) ? -1 : 1; }
    return descending ? -c : c;
  });
  rows.forEach(function (row) { body.appendChild(row); });
}
var wanted = new URLSearchParams(location.search).get('sort');
if (wanted) { sortBy(wanted); }
"""

_STYLE = """
body { font-family: system-ui, sans-serif; margin: 2em; color: #222; }
table { border-collapse: collapse; margin: 1em 0; }
th, td { border: 1px solid #ccc; padding: 4px 8px; text-align: right; }
td.name, th.name { text-align: left; }
th[data-key] { cursor: pointer; background: #f3f3f3; }
th[data-order="desc"]::after { content: " \\25BC"; }
th[data-order="asc"]::after { content: " \\25B2"; }
td img { display: block; margin: 0 auto; image-rendering: pixelated; }
.note { color: #a50; }
"""


def write_html(
    summary: dict, table: pd.DataFrame, images: dict[str, dict[int, str]], budgets: list[list[str]]
) -> str:
    """The report as one self-contained HTML page (images inline, no external resources).

    Args:
        summary: the audit's summary.
        table: one row per class (``class_id``, ``class_name`` and the confidence columns).
        images: method -> class id -> a PNG data URI (:func:`png_data_uri`).
        budgets: one row of cells per budget: name, CPPN evaluations, direct evaluations,
            gradient ascent.

    Returns:
        The page; every text in it is escaped.

    Raises:
        ValueError: an image that is not a PNG data URI.
    """
    escape = html.escape

    def picture_of(method: str, class_id: int) -> str:
        picture = images.get(method, {}).get(class_id)
        if not picture:
            return ""
        if not _DATA_URI.fullmatch(picture):
            raise ValueError(f"the {method} image of class {class_id} is not a PNG data URI")
        return f'<img src="{picture}" width="{THUMBNAIL}" height="{THUMBNAIL}" alt="">'

    def cell(key: str, value: float, picture: str = "") -> str:
        sort_value = "-1" if value != value else f"{value:.6f}"
        return f'<td data-{key}="{sort_value}">{picture}{_percent(value)}</td>'

    rows = []
    for row in table.sort_values("best", ascending=False).itertuples():
        name = escape(str(row.class_name))
        rows.append(
            f'<tr><td class="name" data-class_name="{name}">{name}</td>'
            + "".join(cell(method, getattr(row, method), picture_of(method, int(row.class_id)))
                      for method in METHODS)
            + cell("best", row.best) + cell("reference", row.reference) + cell("real", row.real)
            + "</tr>"
        )  # fmt: skip
    summary_rows = "".join(
        f"<tr><td class='name'>{escape(label)}</td>"
        + "".join(f"<td>{escape(c)}</td>" for c in cells)
        + "</tr>"
        for label, cells in _summary_rows(summary)
    )
    extra = []
    if "transfer" in summary:
        transfer = summary["transfer"]
        extra.append(
            f"<p>Transfer to <code>{escape(str(summary['reference']))}</code>: mean confidence "
            f"{_percent(transfer['mean_source'])} on this model, {_percent(transfer['mean_reference'])} "
            f"on the reference; {escape(str(transfer['both_50']))} classes &ge; 50% on both.</p>"
        )
    if "real" in summary:
        real = summary["real"]
        extra.append(
            f"<p>Real photos of {escape(_plural(real['classes'], 'class'))}: mean confidence "
            f"{_percent(real['mean_real'])}, against {_percent(real['mean_fooling'])} on the fooling images "
            "of the same classes.</p>"
        )
    extra += [f'<p class="note">{escape(str(note))}</p>' for note in summary["notes"]]
    budget_rows = "".join(
        f"<tr><td class='name'>{escape(name)}</td>"
        + "".join(f"<td>{escape(c)}</td>" for c in cells)
        + "</tr>"
        for name, *cells in budgets
    )
    reference = str(summary.get("reference") or "reference")
    headers = [("class_name", "class"), ("cppn", "CPPN"), ("direct", "direct"),
               ("ascent", "gradient ascent"), ("best", "best search"), ("reference", f"on {reference}"),
               ("real", "real photos")]  # fmt: skip
    header_cells = "".join(
        f'<th data-key="{key}"{NAME_CLASS if key == "class_name" else ""}>{escape(label)}</th>'
        for key, label in headers
    )
    evaluations = summary["evaluations"]
    description = escape(
        f"{summary['description']}; budget {summary['budget']}: {evaluations['cppn']:,} CPPN and "
        f"{evaluations['direct']:,} direct evaluations; {summary['classes']} classes; {summary['date']}, "
        f"{summary['seconds']} s"
    )
    model = escape(str(summary["model"]))
    return f"""<!DOCTYPE html>
<html lang="en"><head><meta charset="utf-8">
{content_security_policy(_SORT_SCRIPT, images="data:")}
<title>Fooling audit of {model}</title>
<style>{_STYLE}</style></head><body>
<h1>Fooling audit of <code>{model}</code></h1>
<p>{description}</p>
<h2>Classes fooled</h2>
<p>Classes for which an image was found that the model labels with at least the given confidence.</p>
<table id="summary"><thead><tr><th class="name">{escape(SUMMARY_HEADER[0])}</th>
{"".join(f"<th>{escape(h)}</th>" for h in SUMMARY_HEADER[1:])}</tr></thead>
<tbody>{summary_rows}</tbody></table>
{"".join(extra)}
<h2>Confidence per class</h2>
{histogram_svg(table)}
<h2>Per class</h2>
<p>Click a column to sort. CPPN and direct images side by side; confidence of the model in the class.</p>
<table id="classes"><thead><tr>{header_cells}</tr></thead><tbody>
{"".join(rows)}
</tbody></table>
<h2>Budgets</h2>
<table id="budgets"><thead><tr><th class="name">budget</th><th>CPPN evaluations</th>
<th>direct evaluations</th><th>gradient ascent</th></tr></thead><tbody>{budget_rows}</tbody></table>
<script>{_SORT_SCRIPT}</script>
</body></html>
"""
