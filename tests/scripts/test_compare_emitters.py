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
    result = _run("--docs-only", "--out", str(tmp_path / "empty"), "--doc", str(doc))
    assert result.returncode == 2
    store = tmp_path / "empty" / "results.json"
    assert result.stderr.strip() == (
        f"compare_emitters: no finished run of 40000 evaluations at 64 px in {store}; {doc} left as it is"
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
    result = _run("--docs-only", "--out", str(tmp_path), "--doc", str(doc))
    assert result.returncode == 2
    assert result.stderr.strip() == (
        f"compare_emitters: {store} holds runs of another --model or --population (paper/0/40000/64, ...); "
        "use another --out"
    )
    assert not doc.exists()
