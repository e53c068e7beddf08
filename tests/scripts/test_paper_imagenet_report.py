"""scripts/paper_imagenet_report.py on a tiny run: summary, labelled photos, REPRODUCTION.md row."""

from __future__ import annotations

import importlib.util
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from PIL import Image

from fooling.evo.config import RunConfig
from fooling.evo.run import evolve

SCRIPT = Path(__file__).resolve().parents[2] / "scripts" / "paper_imagenet_report.py"


@pytest.fixture(scope="module")
def report():
    spec = importlib.util.spec_from_file_location("paper_imagenet_report", SCRIPT)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.fixture(scope="module")
def tiny_run(fooling_home, tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("paper-report") / "run"
    evolve(
        RunConfig(model="mnist-lenet", population=20, generations=3, seed=1, out=str(out)),
        show_progress=False,
    )
    return out


def _digits(folder: Path, names: tuple[str, ...]) -> None:
    rng = np.random.default_rng(0)
    for name in names:
        (folder / name).mkdir(parents=True)
        for index in range(2):
            pixels = rng.integers(0, 256, (28, 28), dtype=np.uint8)
            Image.fromarray(pixels).save(folder / name / f"{index}.png")


def test_report_scores_labelled_photos_and_writes_the_reproduction_row(report, tiny_run, tmp_path):
    photos = tmp_path / "photos"
    _digits(photos, ("3", "7", "not-a-digit"))
    document = tmp_path / "REPRODUCTION.md"
    document.write_text("# Reproduction\n\n| table |\n\n## Plots\n\nplots\n")
    docs = tmp_path / "docs"
    argv = [str(tiny_run), "--docs", str(docs), "--real-images", str(photos), "--reproduction", str(document)]
    assert report.main(argv) == 0
    summary = (docs / "summary.md").read_text()
    classes = pd.read_parquet(docs / "classes.parquet")
    fooling = dict(zip(classes["class_id"], classes["fitness"]))
    # One row per labelled class folder of the model (the unknown folder left out), beside the
    # run's fooling confidence for that class.
    rows = [line for line in summary.splitlines() if line.startswith(("| 3 |", "| 7 |"))]
    assert [row.split(" | ")[1] for row in rows] == ["2", "2"]
    assert f"{100 * fooling[3]:.2f}%" in rows[0] and f"{100 * fooling[7]:.2f}%" in rows[1]
    assert "| not-a-digit |" not in summary
    text = document.read_text()
    median = f"median {100 * classes['fitness'].median():.2f}%"
    assert median in text and text.index(median) < text.index("## Plots")
    # Written again, the row replaces its previous version instead of adding a second one.
    assert report.main(argv) == 0
    assert document.read_text().count("paper scale |") == 1


@pytest.mark.parametrize(
    ("make", "message"),
    [
        (lambda root: None, "no such folder"),
        (lambda root: _digits(root, ("cat",)), "no sub-folder of images is named after a class"),
        (
            lambda root: (root / "4").mkdir(parents=True) or (root / "4" / "x.png").write_text("no"),
            "not a readable image",
        ),
    ],
)
def test_bad_real_images_is_one_line_and_exit_2(report, tiny_run, tmp_path, capsys, make, message):
    photos = tmp_path / "photos"
    make(photos)
    argv = [
        str(tiny_run),
        "--docs",
        str(tmp_path / "docs"),
        "--real-images",
        str(photos),
        "--reproduction",
        "",
    ]
    assert report.main(argv) == 2
    error = capsys.readouterr().err.strip()
    assert message in error and "\n" not in error
