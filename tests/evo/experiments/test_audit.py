"""``fooling audit``: the report of how easily a user's own classifier is fooled."""

from __future__ import annotations

import json
import os
import re
import warnings
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch
from PIL import Image
from small_setups import CHROMIUM, LABELS, chromium, tiny

from fooling.evo.cli import main
from fooling.evo.experiments.audit import BUDGETS, budget_table


@pytest.fixture(scope="module")
def files(tmp_path_factory) -> Path:
    """A TorchScript and an ONNX classifier of 16x16 images, labels and real 'photos' of two classes."""
    folder = tmp_path_factory.mktemp("audit-models")
    with warnings.catch_warnings(), torch.no_grad():
        warnings.simplefilter("ignore")
        torch.jit.save(torch.jit.script(tiny(0)), str(folder / "net.pt"))
        torch.onnx.export(tiny(1), (torch.zeros(1, 3, 16, 16),), str(folder / "other.onnx"), dynamo=False,
                          input_names=["x"], dynamic_axes={"x": {0: "n"}})  # fmt: skip
    (folder / "labels.txt").write_text("\n".join(LABELS) + "\n")
    rng = np.random.default_rng(0)
    for name in ("cat", "Owl", "unicorn"):
        (folder / "photos" / name).mkdir(parents=True)
        for index in range(2):
            Image.fromarray(rng.integers(0, 256, (24, 24, 3), dtype=np.uint8)).save(
                folder / "photos" / name / f"{index}.png"
            )
    return folder


@pytest.fixture(autouse=True)
def private_home(tmp_path, monkeypatch):
    if "FOOLING_HOME" not in os.environ:
        monkeypatch.setenv("FOOLING_HOME", str(tmp_path / "home"))


@pytest.fixture(scope="module")
def report(files, tmp_path_factory) -> Path:
    """One small-budget audit of the TorchScript model, transferred to the ONNX one, with photos."""
    out = tmp_path_factory.mktemp("audit") / "report"
    reference = f"{files / 'other.onnx'}?labels={files / 'labels.txt'}"
    code = main(["audit", "--model", str(files / "net.pt"), "--input-size", "16,16", "--labels",
                 str(files / "labels.txt"), "--reference", reference, "--real-images", str(files / "photos"),
                 "--no-progress", "--out", str(out)])  # fmt: skip
    assert code == 0
    return out


def test_audit_writes_tables_that_agree_with_the_runs(report):
    table = pd.read_parquet(report / "audit.parquet")
    summary = json.loads((report / "summary.json").read_text())
    assert list(table["class_name"]) == list(LABELS)
    assert table[["cppn", "direct", "ascent"]].notna().all().all()  # every class searched three ways
    assert (
        ((table[["cppn", "direct", "ascent"]] >= 0) & (table[["cppn", "direct", "ascent"]] <= 1)).all().all()
    )
    assert summary["evaluations"] == {
        "cppn": BUDGETS["small"].evaluations,
        "direct": BUDGETS["small"].evaluations,
    }
    for method in ("cppn", "direct", "ascent"):
        facts = summary["methods"][method]
        assert facts[">=50%"] == int((table[method] >= 0.5).sum())
        assert facts[">=99%"] == int((table[method] >= 0.99).sum())
        assert facts["median"] == pytest.approx(float(table[method].median()))
    assert (table["best"] == table[["cppn", "direct"]].max(axis=1)).all()
    assert table["reference"].notna().all() and summary["reference"] == "other.onnx"
    # Photos: 'cat' and 'Owl' (case ignored) are classes, 'unicorn' is not.
    assert list(table.loc[table["real"].notna(), "class_name"]) == ["cat", "owl"]
    assert list(table["real_count"]) == [2, 0, 2, 0, 0]
    # The searches are ordinary run folders.
    for method in ("cppn", "direct"):
        assert list((report / method / "checkpoints").glob("gen-*.parquet"))


def test_audit_report_is_self_contained_with_every_class(report):
    page = (report / "report.html").read_text()
    assert not re.search(r"https?://", page) and "<link" not in page  # nothing to fetch
    assert "Content-Security-Policy" in page  # and a script that got in anyway would not run
    rows = re.findall(r'<tr><td class="name" data-class_name="([^"]+)"', page)
    assert sorted(rows) == sorted(LABELS)
    assert page.count("data:image/png;base64,") == 3 * len(LABELS)  # CPPN, direct, ascent for each class
    assert "<svg" in page and "Budgets" in page
    markdown = (report / "report.md").read_text()
    assert "| method | classes searched | >= 50% | >= 90% | >= 99% | median | mean |" in markdown
    assert budget_table() in markdown
    assert markdown.count("\n| ") >= len(LABELS) + 4


def test_audit_of_an_onnx_model_skips_gradient_ascent(files, tmp_path, capsys):
    out = tmp_path / "onnx"
    code = main(["audit", "--model", str(files / "other.onnx"), "--reference", "none", "--no-progress",
                 "--out", str(out)])  # fmt: skip
    assert code == 0
    table = pd.read_parquet(out / "audit.parquet")
    assert table["ascent"].isna().all() and table["cppn"].notna().all()
    summary = json.loads((out / "summary.json").read_text())
    assert any("no gradient ascent" in note for note in summary["notes"])
    assert "classes fooled by a search at >= 99%" in capsys.readouterr().out


@pytest.mark.parametrize(
    ("arguments", "expected"),
    [
        (["--budget", "huge"], "invalid choice"),
        (["--real-images", "/nonexistent/photos"], "no such folder"),
        (["--reference", "timm:resnt50"], "did you mean"),
        (["--model", "missing.pt2"], "does not exist"),
        (["--reference", "imagenet-lite0"], "has none of"),  # was an empty column and exit 0
        (["--address", "127.0.0.1:1"], "--workers is 0"),  # was a search in this process
    ],
)
def test_audit_bad_input_is_one_line_exit_2(files, tmp_path, capsys, arguments, expected):
    base = ["audit", "--model", str(files / "other.onnx"), "--no-progress", "--out", str(tmp_path / "out")]
    code = main(base + arguments)
    stderr = capsys.readouterr().err
    assert code == 2 and stderr.count("\n") == 1 and expected in stderr
    assert not (tmp_path / "out").exists()


def test_audit_refuses_a_folder_that_holds_files(files, tmp_path, capsys):
    (tmp_path / "out").mkdir()
    (tmp_path / "out" / "keep.txt").write_text("mine")
    code = main(["audit", "--model", str(files / "other.onnx"), "--out", str(tmp_path / "out")])
    assert code == 2 and "not empty" in capsys.readouterr().err
    assert (tmp_path / "out" / "keep.txt").read_text() == "mine"


@pytest.mark.skipif(CHROMIUM is None, reason="chromium is not installed (apt-get install chromium)")
def test_audit_report_sorts_in_chromium(report, tmp_path):
    def dom(query: str) -> str:
        return chromium(report / "report.html", tmp_path / query, query=query)

    table = pd.read_parquet(report / "audit.parquet")
    for key in ("cppn", "direct", "class_name"):
        shown = re.findall(r'<tr><td class="name" data-class_name="([^"]+)"', dom(f"sort={key}"))
        expected = table.sort_values(key, ascending=False, kind="stable")["class_name"].tolist()
        assert shown == expected
    screenshot = tmp_path / "report.png"
    chromium(report / "report.html", tmp_path / "shot", screenshot=screenshot, window="1100,1400")
    assert screenshot.stat().st_size > 20_000  # a page with tables and images, not a blank one


def test_audit_checks_real_photos_before_any_search(files, tmp_path, capsys):
    photos = tmp_path / "photos" / "cat"
    photos.mkdir(parents=True)
    (photos / "broken.png").write_bytes(b"not a png at all")
    code = main(["audit", "--model", str(files / "net.pt"), "--input-size", "16,16", "--labels",
                 str(files / "labels.txt"), "--reference", "none", "--real-images", str(tmp_path / "photos"),
                 "--no-progress", "--out", str(tmp_path / "out")])  # fmt: skip
    stderr = capsys.readouterr().err
    assert code == 2 and stderr.count("\n") == 1 and "broken.png" in stderr, stderr
    assert not (tmp_path / "out").exists()  # the searches had left OUT/cppn and OUT/direct behind
