"""scripts/paper_imagenet_report.py on a tiny run: summary, labelled photos, REPRODUCTION.md row."""

from __future__ import annotations

import importlib.util
import shutil
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from PIL import Image

from fooling.evo.config import RunConfig
from fooling.evo.run import evolve, resume_config

SCRIPT = Path(__file__).resolve().parents[2] / "scripts" / "paper_imagenet_report.py"


@pytest.fixture(scope="module")
def report():
    spec = importlib.util.spec_from_file_location("paper_imagenet_report", SCRIPT)
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # as importlib's recipe does: dataclasses look the module up
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
    assert not (tmp_path / "docs").exists()  # refused before anything was written


def test_beside_compares_two_runs_at_the_shorter_ones_evaluations(report, tiny_run, tmp_path):
    # 3 generations of 20 (60 evaluations) beside 4 of 10 (40): compared at 40 evaluations,
    # where the first run is at the end of its generation 1.
    other = tmp_path / "other"
    evolve(
        RunConfig(
            model="mnist-lenet", population=10, generations=4, seed=2, color_space="hsv", out=str(other)
        ),
        show_progress=False,
    )
    docs = tmp_path / "docs"
    document = tmp_path / "REPRODUCTION.md"
    argv = [str(tiny_run), "--docs", str(docs), "--reproduction", str(document), "--beside", str(other)]
    assert report.main(argv) == 0
    summary = (docs / "summary.md").read_text()
    assert f"## Beside `{other}`, at 40 evaluations" in summary
    first = pd.read_parquet(tiny_run / "stats.parquet").set_index("gen")
    second = pd.read_parquet(other / "stats.parquet").set_index("gen")
    rows = {line.split(" | ")[0][3:-1]: line for line in summary.splitlines() if line.startswith("| `")}
    assert (
        f"| 1 | {100 * first.loc[1, 'median']:.2f}% | {100 * first.loc[1, 'mean']:.2f}% |"
        in rows[str(tiny_run)]
    )
    assert f"| 3 | {100 * second.loc[3, 'median']:.2f}% |" in rows[str(other)]
    assert "colour `rgb`" in rows[str(tiny_run)] and "colour `hsv`" in rows[str(other)]
    row = next(line for line in document.read_text().splitlines() if "at equal cost" in line)
    assert f"at 40 evaluations: median {100 * first.loc[1, 'median']:.2f}%" in row
    assert f"against median {100 * second.loc[3, 'median']:.2f}%" in row


def test_unreadable_beside_run_is_one_line_and_exit_2(report, tiny_run, tmp_path, capsys):
    argv = [str(tiny_run), "--docs", str(tmp_path / "docs"), "--reproduction", "", "--beside", str(tmp_path)]
    assert report.main(argv) == 2
    error = capsys.readouterr().err.strip()
    assert error.startswith(f"paper_imagenet_report: error: --beside {tmp_path}:") and "\n" not in error


def test_run_without_statistics_is_one_line_and_exit_2(report, tiny_run, tmp_path, capsys):
    run = tmp_path / "run"
    shutil.copytree(tiny_run, run)
    (run / "stats.parquet").unlink()
    assert report.main([str(run), "--docs", str(tmp_path / "docs"), "--reproduction", ""]) == 2
    error = capsys.readouterr().err.strip()
    assert error == f"paper_imagenet_report: error: {run}: no statistics (stats.parquet)"


def test_carry_is_the_newest_checkpoint_alone_and_resumes(report, tiny_run, tmp_path):
    carry = tmp_path / "carry"
    argv = [str(tiny_run), "--docs", str(tmp_path / "docs"), "--reproduction", "", "--carry", str(carry)]
    assert report.main(argv) == 0
    (carry / "checkpoints" / "gen-000000.parquet").write_bytes(
        (carry / "checkpoints" / "gen-000002.parquet").read_bytes()
    )  # an older carried checkpoint
    assert report.main(argv) == 0  # the same run again: the carry is refreshed
    assert sorted(path.name for path in (carry / "checkpoints").iterdir()) == ["LATEST", "gen-000002.parquet"]
    assert (carry / "stats.parquet").exists()
    config = resume_config(str(carry), generations=4)
    assert evolve(config, resume=True, show_progress=False).generation == 4


@pytest.mark.parametrize("where", ["run", "other"])
def test_carry_into_another_runs_folder_is_refused(report, tiny_run, tmp_path, capsys, where):
    if where == "run":
        carry, message = tiny_run, f"--carry {tiny_run} is the run itself; name another folder"
    else:
        carry = tmp_path / "other"
        evolve(RunConfig(model="mnist-lenet", population=10, generations=2, seed=2, out=str(carry)),
               show_progress=False)  # fmt: skip
        message = f"--carry {carry} holds a checkpoint of another run; name another folder"
    before = {path: path.read_bytes() for path in carry.rglob("*") if path.is_file()}
    argv = [str(tiny_run), "--docs", str(tmp_path / "docs"), "--reproduction", "", "--carry", str(carry)]
    assert report.main(argv) == 2
    assert capsys.readouterr().err.strip() == f"paper_imagenet_report: error: {message}"
    assert {path: path.read_bytes() for path in carry.rglob("*") if path.is_file()} == before
    assert not (tmp_path / "docs").exists()
