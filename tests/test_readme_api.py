"""The README's Python API examples run as written (with a smaller budget and a temporary folder)."""

from __future__ import annotations

import re
from pathlib import Path

README = Path(__file__).resolve().parents[1] / "README.md"


def python_api_blocks() -> list[str]:
    section = README.read_text().split("### Python API", 1)[1].split("\n### ", 1)[0]
    return re.findall(r"```python\n(.*?)```", section, flags=re.S)


def test_readme_python_api_examples_run(fooling_home, tmp_path, monkeypatch):
    blocks = python_api_blocks()
    assert len(blocks) == 2
    monkeypatch.chdir(tmp_path)
    for code in blocks:
        # Same code, a budget that fits the test suite: 3 generations of 20 children.
        code = code.replace("generations=50", "generations=3, population=20")
        namespace: dict = {}
        exec(compile(code, str(README), "exec"), namespace)  # noqa: S102 (our own README)
        search = namespace["search"]
        assert search.generation == 3 and search.archive.data()["fitness"].notna().all()
    assert (tmp_path / "runs" / "api" / "checkpoints").is_dir()
    assert (tmp_path / "runs" / "api-mutation" / "checkpoints").is_dir()
