"""Every script under scripts/ reports bad input as the ``fooling`` command does: one line, exit 2."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

SCRIPTS = Path(__file__).resolve().parents[2] / "scripts"


def _run(script: str, *args: str, cwd: Path | None = None) -> subprocess.CompletedProcess:
    command = [sys.executable, str(SCRIPTS / script), *args]
    return subprocess.run(command, capture_output=True, text=True, timeout=120, cwd=cwd)


@pytest.mark.parametrize(
    ("script", "args", "message"),
    [
        ("bench_mnist.py", ["--repeats", "0"], "argument --repeats: expected a positive integer"),
        ("bench_imagenet.py", ["--device", "foo"], "--device foo: not a device"),
        ("reproduce_imagenet.py", ["--seed", "-1"], "argument --seed: expected an integer >= 0"),
        ("paper_imagenet_report.py", ["run", "--tiles", "0"], "argument --tiles: expected a positive"),
    ],
)
def test_bad_numbers_and_devices_are_one_line(script, args, message):
    result = _run(script, *args)
    assert result.returncode == 2
    assert len(result.stderr.strip().splitlines()) == 1 and message in result.stderr, result.stderr


def test_reproduce_paper_refuses_bad_names_before_touching_the_report(tmp_path):
    docs = tmp_path / "docs"
    docs.mkdir()
    (docs / "REPRODUCTION.md").write_text("the committed report\n")
    for args, message in (
        (["--skip", "ablat"], "did you mean 'ablate'?"),
        (["--imagenet-model", "imagenet-lte0"], "did you mean 'imagenet-lite0'"),
    ):
        result = _run("reproduce_paper.py", "--docs", str(docs), "--out", str(tmp_path / "runs"), *args)
        assert result.returncode == 2 and message in result.stderr, result.stderr
        assert len(result.stderr.strip().splitlines()) == 1
    assert (docs / "REPRODUCTION.md").read_text() == "the committed report\n"
    assert sorted(p.name for p in docs.iterdir()) == ["REPRODUCTION.md"]
    assert not (tmp_path / "runs").exists()
