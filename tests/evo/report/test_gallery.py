"""The report's index.html gallery, checked as data, by size, and in a real headless Chromium."""

from __future__ import annotations

import json
import re

import numpy as np
import pytest
from PIL import Image
from small_setups import CHROMIUM, chromium

from fooling.evo.config import RunConfig
from fooling.evo.report.cells import PAGE_THUMBNAIL_SIDE, checked_rows
from fooling.evo.report.figures import write_report
from fooling.evo.report.gallery import PAGE_SIZE, write_gallery
from fooling.evo.run import evolve
from fooling.evo.store.thumbnails import thumbnail_png

MEGABYTE = 1024 * 1024


def page_cells(page: str) -> list[dict]:
    """The cells a gallery page embeds, one dict per cell."""
    data = json.loads(re.search(r'<script id="cells" type="application/json">(.*?)</script>', page).group(1))
    keys = ("class_id", "class_name", "fitness", "birth_generation")
    cells = [dict(zip(keys, values)) for values in zip(*(data[key] for key in keys))]
    for cell, index in zip(cells, data["thumbnail"]):
        cell["thumbnail"] = f"{data['thumbnails'][index]}.png" if index >= 0 else None
    return cells


def figures(dom: str) -> list[str]:
    return re.findall(r'<figure data-class-name="([^"]*)"', dom)


@pytest.fixture(scope="module")
def run_folder(fooling_home, tmp_path_factory):
    out = tmp_path_factory.mktemp("gallery") / "run"
    evolve(RunConfig(model="mnist-lenet", generations=3, population=30, out=str(out)), show_progress=False)
    write_report(str(out))
    return out


def test_gallery_lists_every_cell_with_a_thumbnail_file_beside_it(run_folder):
    page = (run_folder / "index.html").read_text()
    cells = page_cells(page)
    assert sorted(c["class_name"] for c in cells) == [str(d) for d in range(10)]
    assert all(c["thumbnail"] and 0 <= c["fitness"] <= 1 for c in cells)
    for cell in cells:
        with Image.open(run_folder / "thumbs" / cell["thumbnail"]) as thumbnail:
            assert thumbnail.format == "PNG" and max(thumbnail.size) <= PAGE_THUMBNAIL_SIDE
    # Only the thumbnails the page shows are in the folder.
    assert sorted(path.name for path in (run_folder / "thumbs").iterdir()) == sorted(
        {c["thumbnail"] for c in cells}
    )
    assert "base64" not in page  # no image inside the page
    assert not re.search(r"https?://", page)  # self-contained: nothing fetched from elsewhere


@pytest.mark.skipif(CHROMIUM is None, reason="chromium is not installed (apt-get install chromium)")
def test_gallery_filters_and_sorts_in_chromium(run_folder, tmp_path):
    def dom(query: str) -> str:
        return chromium(run_folder / "index.html", tmp_path / query, query=query)

    everything = dom("sort=class_id")
    assert figures(everything) == [str(d) for d in range(10)]
    # Thumbnails are files loaded as they scroll into view.
    images = re.findall(r"<img [^>]*>", everything)
    assert len(images) == 10 and all('loading="lazy"' in image for image in images)
    cells = sorted(page_cells((run_folder / "index.html").read_text()), key=lambda c: c["class_id"])
    assert re.findall(r'src="thumbs/([0-9a-f]+\.png)"', everything) == [c["thumbnail"] for c in cells]
    assert figures(dom("q=7")) == ["7"]
    by_confidence = dom("sort=fitness")
    shown = [float(v) for v in re.findall(r'class="conf">([0-9.]+)%', by_confidence)]
    assert shown == sorted(shown, reverse=True) and len(shown) == 10
    screenshot = tmp_path / "gallery.png"
    chromium(run_folder / "index.html", tmp_path / "shot", screenshot=screenshot)
    assert screenshot.stat().st_size > 10_000  # a page with ten images, not a blank one


def noise_rows(count: int) -> list[dict]:
    """Checkpoint rows of ``count`` cells of a direct-encoded ImageNet run, distinct elites.

    Each picture is a run's thumbnail (128 px a side) of noise, what direct genomes look like
    and the least compressible picture there is.
    """
    rng = np.random.default_rng(0)
    return [
        {"class_id": i, "class_name": f"n{i:08d} class number {i}", "fitness": float(rng.random()),
         "birth_generation": i % 50,
         "image_png": thumbnail_png(rng.integers(0, 256, (128, 128, 3), dtype=np.uint8))}
        for i in range(count)
    ]  # fmt: skip


def test_gallery_of_1000_direct_encoded_imagenet_cells_is_under_10_mb(tmp_path):
    rows = checked_rows(noise_rows(1000), "synthetic")
    index = write_gallery(str(tmp_path), rows, "fooling: direct imagenet")
    assert (tmp_path / "index.html").stat().st_size < 10 * MEGABYTE
    assert index == str(tmp_path / "index.html")
    thumbnails = sorted((tmp_path / "thumbs").iterdir())
    assert len(thumbnails) == 1000
    with Image.open(thumbnails[0]) as thumbnail:
        assert max(thumbnail.size) == PAGE_THUMBNAIL_SIDE
    # Each thumbnail a small file: a screenful loads a few hundred kilobytes.
    assert max(path.stat().st_size for path in thumbnails) < 16 * 1024


@pytest.fixture(scope="module")
def hundred_thousand_classes(tmp_path_factory):
    """The gallery of a run of a 100,000-class model, every cell occupied, no thumbnails."""
    out = tmp_path_factory.mktemp("large")
    rows = [
        {"class_id": i, "class_name": f"class {i:06d} of a large model", "fitness": (i % 997) / 997,
         "birth_generation": i % 1000, "image_png": None}
        for i in range(100_000)
    ]  # fmt: skip
    write_gallery(str(out), checked_rows(rows, "synthetic"), "fooling: large")
    return out


def test_gallery_of_100000_classes_is_a_few_megabytes(hundred_thousand_classes):
    page = (hundred_thousand_classes / "index.html").read_text()
    assert len(page.encode()) < 10 * MEGABYTE
    assert len(page_cells(page)) == 100_000


@pytest.mark.skipif(CHROMIUM is None, reason="chromium is not installed (apt-get install chromium)")
def test_gallery_of_100000_classes_shows_one_page_at_a_time_in_chromium(hundred_thousand_classes, tmp_path):
    dom = chromium(hundred_thousand_classes / "index.html", tmp_path / "p3", query="sort=class_id&page=3")
    shown = figures(dom)
    assert shown == [f"class {i:06d} of a large model" for i in range(2 * PAGE_SIZE, 3 * PAGE_SIZE)]
    assert "page 3 of 200" in dom and "100000 of 100000 classes" in dom
    # Filtering searches every cell, not only the page shown.
    found = chromium(hundred_thousand_classes / "index.html", tmp_path / "q", query="q=class 099999")
    assert figures(found) == ["class 099999 of a large model"]
