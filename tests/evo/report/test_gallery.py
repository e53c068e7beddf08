"""The report's index.html gallery, checked as data and in a real headless Chromium."""

from __future__ import annotations

import json
import re

import pytest
from small_setups import CHROMIUM, chromium

from fooling.evo.config import RunConfig
from fooling.evo.report.figures import write_report
from fooling.evo.run import evolve


@pytest.fixture(scope="module")
def run_folder(fooling_home, tmp_path_factory):
    out = tmp_path_factory.mktemp("gallery") / "run"
    evolve(RunConfig(model="mnist-lenet", generations=3, population=30, out=str(out)), show_progress=False)
    write_report(str(out))
    return out


def test_gallery_embeds_every_cell(run_folder):
    page = (run_folder / "index.html").read_text()
    cells = json.loads(re.search(r"const cells = (\[.*?\]);\n", page).group(1).replace("<\\/", "</"))
    assert sorted(c["class_name"] for c in cells) == [str(d) for d in range(10)]
    assert all(c["image"] and 0 <= c["fitness"] <= 1 for c in cells)
    assert "http" not in page  # self-contained: nothing to fetch


@pytest.mark.skipif(CHROMIUM is None, reason="chromium is not installed (apt-get install chromium)")
def test_gallery_filters_and_sorts_in_chromium(run_folder, tmp_path):
    def dom(query: str) -> str:
        return chromium(run_folder / "index.html", tmp_path / query, query=query)

    everything = re.findall(r'<figure data-class-name="([^"]+)"', dom("sort=class_id"))
    assert everything == [str(d) for d in range(10)]
    assert re.findall(r'<figure data-class-name="([^"]+)"', dom("q=7")) == ["7"]
    by_confidence = dom("sort=fitness")
    shown = [float(v) for v in re.findall(r'class="conf">([0-9.]+)%', by_confidence)]
    assert shown == sorted(shown, reverse=True) and len(shown) == 10
    screenshot = tmp_path / "gallery.png"
    chromium(run_folder / "index.html", tmp_path / "shot", screenshot=screenshot)
    assert screenshot.stat().st_size > 10_000  # a page with ten images, not a blank one
