"""``index.html``: a self-contained gallery of every elite, sortable and filterable in the browser."""

from __future__ import annotations

import base64
import html
import json

_PAGE = """<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>{title}</title>
<style>
body {{ font-family: system-ui, sans-serif; margin: 1.5em; background: #fafafa; color: #222; }}
header {{ display: flex; gap: 1em; align-items: center; flex-wrap: wrap; margin-bottom: 1em; }}
input, select {{ font-size: 1em; padding: .3em; }}
#grid {{ display: grid; grid-template-columns: repeat(auto-fill, minmax(140px, 1fr)); gap: 12px; }}
figure {{ margin: 0; background: white; border: 1px solid #ddd; border-radius: 6px; padding: 6px; }}
figure img {{ width: 100%; image-rendering: pixelated; display: block; }}
figcaption {{ font-size: .8em; line-height: 1.3; }}
.name {{ font-weight: 600; }} .conf {{ font-variant-numeric: tabular-nums; }}
</style></head><body>
<header><h1 style="margin:0;font-size:1.3em">{title}</h1>
<input id="filter" type="search" placeholder="filter by class name" autofocus>
<label>sort <select id="sort">
<option value="fitness">confidence</option><option value="class_name">class name</option>
<option value="class_id">class id</option><option value="birth_generation">generation found</option>
</select></label><span id="count"></span></header>
<div id="grid"></div>
<script>
const cells = {cells};
const grid = document.getElementById("grid");
function render() {{
  const query = document.getElementById("filter").value.trim().toLowerCase();
  const key = document.getElementById("sort").value;
  const shown = cells.filter(c => c.class_name.toLowerCase().includes(query));
  shown.sort((a, b) => key === "class_name" ? a.class_name.localeCompare(b.class_name)
    : key === "fitness" ? b.fitness - a.fitness : a[key] - b[key]);
  grid.replaceChildren(...shown.map(c => {{
    const figure = document.createElement("figure");
    figure.dataset.className = c.class_name;
    figure.innerHTML = (c.image ? `<img alt="" src="data:image/png;base64,${{c.image}}">` : "") +
      `<figcaption><div class="name"></div>` +
      `<div class="conf">${{(100 * c.fitness).toFixed(c.fitness >= 0.999 ? 4 : 2)}}%</div>` +
      `<div>class ${{c.class_id}}, generation ${{c.birth_generation}}</div></figcaption>`;
    figure.querySelector(".name").textContent = c.class_name;
    return figure;
  }}));
  document.getElementById("count").textContent = `${{shown.length}} of ${{cells.length}} classes`;
}}
// index.html?q=NAME&sort=KEY opens the gallery filtered and sorted (shareable links).
const params = new URLSearchParams(location.search);
document.getElementById("filter").value = params.get("q") || "";
if (params.get("sort")) document.getElementById("sort").value = params.get("sort");
document.getElementById("filter").addEventListener("input", render);
document.getElementById("sort").addEventListener("change", render);
render();
</script></body></html>
"""


def gallery_html(rows: list[dict], title: str = "fooling: elites") -> str:
    """The gallery page of a checkpoint's rows, with every thumbnail embedded as a data URI.

    Each row has the keys class_id, class_name, fitness, birth_generation and image_png.
    """
    cells = [
        {
            "class_id": row["class_id"],
            "class_name": row["class_name"],
            "fitness": row["fitness"],
            "birth_generation": row["birth_generation"],
            "image": base64.b64encode(row["image_png"]).decode() if row["image_png"] else "",
        }
        for row in rows
    ]
    # "</" cannot close the script element early once escaped.
    data = json.dumps(cells).replace("</", "<\\/")
    return _PAGE.format(title=html.escape(title), cells=data)
