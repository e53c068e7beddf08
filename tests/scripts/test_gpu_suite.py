"""scripts/gpu_suite.sh on a machine without CUDA: one line, exit code 2, nothing written."""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import torch

SCRIPT = Path(__file__).resolve().parents[2] / "scripts" / "gpu_suite.sh"


@pytest.mark.skipif(torch.cuda.is_available(), reason="with CUDA the suite would run for real")
def test_without_cuda_says_so_and_writes_nothing(tmp_path):
    # A copy of the script in an empty tree: it works in the folder above its own.
    (tmp_path / "scripts").mkdir()
    shutil.copy(SCRIPT, tmp_path / "scripts" / "gpu_suite.sh")
    result = subprocess.run(
        ["bash", str(tmp_path / "scripts" / "gpu_suite.sh"), "1"],
        capture_output=True,
        text=True,
        timeout=120,
        env={"PATH": "/usr/bin:/bin", "PYTHON": sys.executable, "FOOLING": "false"},
    )
    assert result.returncode == 2
    assert result.stderr.strip() == "gpu_suite: no CUDA device here; nothing to do"
    assert sorted(path.name for path in tmp_path.iterdir()) == ["scripts"]
