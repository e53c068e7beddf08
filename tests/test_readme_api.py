"""The README's Python API example runs as written (with a smaller budget and a temporary folder)."""

from __future__ import annotations

import re
from pathlib import Path

README = Path(__file__).resolve().parents[1] / "README.md"


def python_api_blocks() -> list[str]:
    section = re.split(r"^#+ Python API\n", README.read_text(), maxsplit=1, flags=re.M)[1]
    section = re.split(r"^#+ ", section, maxsplit=1, flags=re.M)[0]
    return re.findall(r"```python\n(.*?)```", section, flags=re.S)


def test_readme_python_api_examples_run(fooling_home, tmp_path, monkeypatch):
    blocks = python_api_blocks()
    assert blocks, "the README's Python API section has no python block"
    monkeypatch.chdir(tmp_path)
    outs = []
    for code in blocks:
        # Same code, a budget that fits the test suite: 3 generations of 20 children.
        code = re.sub(r"generations=\d+", "generations=3, population=20", code)
        outs += re.findall(r'out="([^"]+)"', code)
        namespace: dict = {}
        exec(compile(code, str(README), "exec"), namespace)  # noqa: S102 (our own README)
        search = namespace["search"]
        assert search.generation == 3 and search.archive.data()["fitness"].notna().all()
    assert outs
    for out in outs:
        assert (tmp_path / out / "checkpoints").is_dir()
