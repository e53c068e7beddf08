"""``index.html``: a gallery of every elite, sortable, filterable and paged in the browser.

The page holds its cells as compact JSON (no images); each cell's thumbnail is a small PNG
in ``thumbs/`` beside it, loaded as it scrolls into view. Thumbnails are named by the
SHA-256 of the checkpoint's picture, so cells that hold the same elite (a model of 100,000
classes scored on a few images fills every cell with them) share one file. Opening
``index.html`` from the file system works (no fetch of JSON, which Chromium blocks on
``file://``). A 1,000-class run gives a page of tens of kilobytes; a 100,000-class one a few
megabytes, shown 500 cells a page.

Every cell was checked by :func:`~fooling.evo.report.cells.checked_rows`; the page builds its
DOM with ``textContent`` and ``setAttribute`` only, its JSON escapes ``<``, ``>`` and ``&``, and
its Content-Security-Policy runs its own script and nothing else.
"""

from __future__ import annotations

import hashlib
import html
import re

from fooling.evo.report.cells import UntrustedFieldError, page_thumbnail, png_size
from fooling.evo.report.escape import content_security_policy, script_json
from fooling.evo.store.location import delete, join, list_names, write_bytes

# Folder of the page's thumbnails, beside index.html.
THUMBNAIL_FOLDER = "thumbs"
# Names of the thumbnail files this module writes (and deletes once no cell shows them).
THUMBNAIL_NAME = re.compile(r"[0-9a-f]{24}\.png")
# Cells shown per page of the gallery.
PAGE_SIZE = 500
SORT_KEYS = ("fitness", "class_name", "class_id", "birth_generation")

_SCRIPT = """
"use strict";
const data = JSON.parse(document.getElementById("cells").textContent);
const cells = data.class_id.map((id, i) => ({
  class_id: id, class_name: data.class_name[i], fitness: data.fitness[i],
  birth_generation: data.birth_generation[i], thumbnail: data.thumbnails[data.thumbnail[i]],
}));
const KEYS = ["fitness", "class_name", "class_id", "birth_generation"];
const grid = document.getElementById("grid");
const filter = document.getElementById("filter");
const sort = document.getElementById("sort");
let page = 1;

function element(tag, className, text) {
  const made = document.createElement(tag);
  if (className) made.className = className;
  if (text !== undefined) made.textContent = text;
  return made;
}

function figureOf(cell) {
  const figure = element("figure");
  figure.dataset.className = cell.class_name;
  if (cell.thumbnail) {
    const image = element("img");
    image.setAttribute("loading", "lazy");
    image.setAttribute("decoding", "async");
    image.setAttribute("alt", "");
    if (data.thumbnail_size) {
      image.setAttribute("width", String(data.thumbnail_size[0]));
      image.setAttribute("height", String(data.thumbnail_size[1]));
    }
    image.setAttribute("src", "thumbs/" + cell.thumbnail + ".png");
    figure.append(image);
  }
  const caption = element("figcaption");
  caption.append(
    element("div", "name", cell.class_name),
    element("div", "conf", (100 * cell.fitness).toFixed(cell.fitness >= 0.999 ? 4 : 2) + "%"),
    element("div", "", "class " + cell.class_id + ", generation " + cell.birth_generation));
  figure.append(caption);
  return figure;
}

function compare(key) {
  const tie = (a, b) => a.class_id - b.class_id;
  if (key === "class_name") return (a, b) => a.class_name.localeCompare(b.class_name) || tie(a, b);
  if (key === "fitness") return (a, b) => b.fitness - a.fitness || tie(a, b);
  return (a, b) => a[key] - b[key] || tie(a, b);
}

function render() {
  const query = filter.value.trim().toLowerCase();
  const shown = cells.filter(cell => cell.class_name.toLowerCase().includes(query));
  shown.sort(compare(KEYS.includes(sort.value) ? sort.value : "fitness"));
  const pages = Math.max(1, Math.ceil(shown.length / data.page_size));
  page = Math.min(Math.max(1, page), pages);
  const start = (page - 1) * data.page_size;
  grid.replaceChildren(...shown.slice(start, start + data.page_size).map(figureOf));
  document.getElementById("count").textContent = shown.length + " of " + cells.length + " classes";
  document.getElementById("page").textContent = "page " + page + " of " + pages;
  document.getElementById("previous").disabled = page <= 1;
  document.getElementById("next").disabled = page >= pages;
}

function turn(by) {
  page += by;
  render();
  window.scrollTo(0, 0);
}

// index.html?q=NAME&sort=KEY&page=N opens the gallery filtered, sorted and paged (shareable links).
const params = new URLSearchParams(location.search);
filter.value = params.get("q") || "";
if (KEYS.includes(params.get("sort"))) sort.value = params.get("sort");
page = Number.parseInt(params.get("page") || "1", 10) || 1;
filter.addEventListener("input", () => { page = 1; render(); });
sort.addEventListener("change", () => { page = 1; render(); });
document.getElementById("previous").addEventListener("click", () => turn(-1));
document.getElementById("next").addEventListener("click", () => turn(1));
render();
"""

_STYLE = """
body { font-family: system-ui, sans-serif; margin: 1.5em; background: #fafafa; color: #222; }
header, nav { display: flex; gap: 1em; align-items: center; flex-wrap: wrap; margin-bottom: 1em; }
input, select, button { font-size: 1em; padding: .3em; }
#grid { display: grid; grid-template-columns: repeat(auto-fill, minmax(140px, 1fr)); gap: 12px; }
figure { margin: 0; background: white; border: 1px solid #ddd; border-radius: 6px; padding: 6px; }
figure img { width: 100%; height: auto; image-rendering: pixelated; display: block; }
figcaption { font-size: .8em; line-height: 1.3; overflow-wrap: anywhere; }
.name { font-weight: 600; } .conf { font-variant-numeric: tabular-nums; }
"""

_OPTIONS = "".join(
    f'<option value="{key}">{label}</option>'
    for key, label in zip(SORT_KEYS, ("confidence", "class name", "class id", "generation found"))
)


def gallery_html(
    rows: list[dict],
    title: str = "fooling: elites",
    *,
    thumbnails: list[str | None] | None = None,
    thumbnail_size: tuple[int, int] | None = None,
) -> str:
    """The gallery page of checked checkpoint rows (no images inside: they are files beside it).

    Args:
        rows: rows checked by :func:`~fooling.evo.report.cells.checked_rows` (keys
            ``class_id``, ``class_name``, ``fitness``, ``birth_generation``).
        title: the page's title (escaped here).
        thumbnails: per row, the name (without ``.png``) of its thumbnail in ``thumbs/``, or
            ``None``; names match :data:`THUMBNAIL_NAME` (none by default).
        thumbnail_size: width and height shared by every thumbnail (lets the browser lay out
            the grid before images load), or ``None``.

    Returns:
        The page's HTML.
    """
    names = thumbnails or [None] * len(rows)
    if any(name is not None and not THUMBNAIL_NAME.fullmatch(f"{name}.png") for name in names):
        raise ValueError("thumbnail names are 24 hexadecimal digits")  # a bug of the caller
    distinct = sorted({name for name in names if name is not None})
    index = {name: i for i, name in enumerate(distinct)}
    data = {
        "class_id": [row["class_id"] for row in rows],
        "class_name": [row["class_name"] for row in rows],
        # Seven significant digits: 99.99987% is told from 99.99990%.
        "fitness": [float(f"{row['fitness']:.7g}") for row in rows],
        "birth_generation": [row["birth_generation"] for row in rows],
        "thumbnails": distinct,
        "thumbnail": [index.get(name, -1) for name in names],
        "thumbnail_size": list(thumbnail_size) if thumbnail_size else None,
        "page_size": PAGE_SIZE,
    }
    heading = html.escape(title)
    return "".join([
        '<!doctype html>\n<html lang="en"><head><meta charset="utf-8">\n',
        content_security_policy(_SCRIPT, images="'self'"),
        f"\n<title>{heading}</title>\n<style>{_STYLE}</style></head><body>\n",
        f'<header><h1 style="margin:0;font-size:1.3em">{heading}</h1>\n',
        '<input id="filter" type="search" placeholder="filter by class name" autofocus>\n',
        f'<label>sort <select id="sort">{_OPTIONS}</select></label><span id="count"></span></header>\n',
        '<div id="grid"></div>\n',
        '<nav><button id="previous" type="button">previous</button><span id="page"></span>',
        '<button id="next" type="button">next</button></nav>\n',
        f'<script id="cells" type="application/json">{script_json(data)}</script>\n',
        f"<script>{_SCRIPT}</script>\n</body></html>\n",
    ])  # fmt: skip


def write_gallery(out: str, rows: list[dict], title: str, *, source: str = "the checkpoint") -> str:
    """Write ``index.html`` and its thumbnails (``thumbs/*.png``) into run folder ``out``.

    Each distinct picture is decoded from the checkpoint's PNG and re-encoded at most
    :data:`~fooling.evo.report.cells.PAGE_THUMBNAIL_SIDE` pixels a side; every file goes
    through the store's atomic write, which never follows a link in the run folder.
    Thumbnails no cell shows any more (an earlier report's) are deleted afterwards.

    Args:
        out: the run folder (a local path or a storage URI).
        rows: rows checked by :func:`~fooling.evo.report.cells.checked_rows`.
        title: the page's title.
        source: the checkpoint the rows come from (named in errors).

    Returns:
        The URI of ``index.html``.

    Raises:
        UntrustedFieldError: a thumbnail that does not decode as a PNG.
        UnsafePathError: ``out/thumbs`` is a symbolic link.
    """
    folder = join(out, THUMBNAIL_FOLDER)
    names: list[str | None] = []
    sizes: dict[str, tuple[int, int]] = {}
    for index, row in enumerate(rows):
        picture = row["image_png"]
        name = hashlib.sha256(picture).hexdigest()[:24] if picture else None
        if name is not None and name not in sizes:
            try:
                thumbnail = page_thumbnail(picture)
            except ValueError as error:
                raise UntrustedFieldError(
                    f"{source}: row {index}, field image_png: {error} (refusing to put it in a page)"
                ) from None
            write_bytes(join(folder, f"{name}.png"), thumbnail, root=out)
            sizes[name] = png_size(thumbnail)
        names.append(name)
    shared = set(sizes.values())
    page = gallery_html(
        rows, title, thumbnails=names, thumbnail_size=shared.pop() if len(shared) == 1 else None
    )
    uri = join(out, "index.html")
    write_bytes(uri, page.encode(), root=out)
    for stale in list_names(folder):
        if THUMBNAIL_NAME.fullmatch(stale) and stale.removesuffix(".png") not in sizes:
            delete(join(folder, stale), root=out)
    return uri
