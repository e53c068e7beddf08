"""scripts/compare_emitters.py's refusals: one line, exit code 2, the doc left as it was."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

SCRIPT = Path(__file__).resolve().parents[2] / "scripts" / "compare_emitters.py"


def _run(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, str(SCRIPT), *args], capture_output=True, text=True, timeout=120)


def test_docs_only_without_results_keeps_the_doc(tmp_path):
    doc = tmp_path / "emitters.md"
    doc.write_text("the table of earlier runs\n")
    store = tmp_path / "empty" / "results.json"
    result = _run("--docs-only", "--out", str(tmp_path / "empty"), "--results", str(store), "--doc", str(doc))
    assert result.returncode == 2
    assert result.stderr.strip() == (
        "compare_emitters: error: no finished run of 40000 evaluations at 64 px in "
        f"{store}; {doc} left as it is"
    )
    assert doc.read_text() == "the table of earlier runs\n"
    assert not (tmp_path / "empty").exists()


def test_results_of_another_protocol_are_refused(tmp_path):
    store = tmp_path / "results.json"
    run = {
        "method": "paper",
        "seed": 0,
        "budget": 40000,
        "image_size": 64,
        "model": "imagenet-lite0",
        "population": 8,
    }
    store.write_text(json.dumps({"paper/0/40000/64": run}))
    doc = tmp_path / "emitters.md"
    result = _run("--docs-only", "--out", str(tmp_path), "--results", str(store), "--doc", str(doc))
    assert result.returncode == 2
    assert result.stderr.strip() == (
        f"compare_emitters: error: {store} holds runs of another --model or --population "
        "(paper/0/40000/64, ...); use another --results file"
    )
    assert not doc.exists()


def test_unreadable_results_and_bad_numbers_are_one_line(tmp_path):
    store = tmp_path / "results.json"
    for content in ("{not json", "[1, 2]"):
        store.write_text(content)
        result = _run("--docs-only", "--results", str(store), "--doc", str(tmp_path / "d.md"))
        assert result.returncode == 2 and len(result.stderr.strip().splitlines()) == 1, result.stderr
        assert "restore it, or use another --results file" in result.stderr
        assert store.read_text() == content  # left for the user to restore
    result = _run("--population", "0", "--out", str(tmp_path / "x"), "--results", str(tmp_path / "r.json"))
    assert result.returncode == 2 and "expected a positive integer" in result.stderr
    assert len(result.stderr.strip().splitlines()) == 1


def test_a_finished_run_missing_from_the_results_is_never_deleted(tmp_path, fooling_home):
    from fooling.evo.config import RunConfig
    from fooling.evo.run import evolve

    # What a 2-generation compare_emitters run of `paper` leaves (tiny budget), then results.json lost.
    out = tmp_path / "paper-seed0-8-8px"
    config = RunConfig(model="imagenet-lite0", encoding="cppn", generations=2, population=4,
                       classes=[str(i) for i in range(0, 1000, 50)], image_size=8, out=str(out),
                       checkpoint_every=0, engine="torch")  # fmt: skip
    evolve(config, show_progress=False)
    before = sorted(p.name for p in out.rglob("*"))
    result = _run("--methods", "paper", "--seeds", "0", "--evaluations", "8", "--population", "4",
                  "--image-size", "8", "--out", str(tmp_path), "--results", str(tmp_path / "results.json"),
                  "--doc", str(tmp_path / "d.md"))  # fmt: skip
    assert result.returncode == 2, result.stderr
    assert "holds a finished run" in result.stderr and len(result.stderr.strip().splitlines()) == 1
    assert sorted(p.name for p in out.rglob("*")) == before
