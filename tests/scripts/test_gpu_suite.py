"""scripts/gpu_suite.sh without CUDA or with bad minutes: one line, exit code 2, nothing written."""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import torch

SCRIPT = Path(__file__).resolve().parents[2] / "scripts" / "gpu_suite.sh"


def _run_copy(tmp_path: Path, *args: str, **env: str) -> subprocess.CompletedProcess:
    """The suite run from a copy of itself in an empty tree (it works in the folder above its own)."""
    (tmp_path / "scripts").mkdir()
    shutil.copy(SCRIPT, tmp_path / "scripts" / "gpu_suite.sh")
    return subprocess.run(
        ["bash", str(tmp_path / "scripts" / "gpu_suite.sh"), *args],
        capture_output=True,
        text=True,
        timeout=120,
        env={"PATH": "/usr/bin:/bin", "PYTHON": sys.executable, "FOOLING": "false", **env},
    )


@pytest.mark.skipif(torch.cuda.is_available(), reason="with CUDA the suite would run for real")
def test_without_cuda_says_so_and_writes_nothing(tmp_path):
    result = _run_copy(tmp_path, "1")
    assert result.returncode == 2
    assert result.stderr.strip() == "gpu_suite: no CUDA device here; nothing to do"
    assert sorted(path.name for path in tmp_path.iterdir()) == ["scripts"]


@pytest.mark.parametrize("minutes", ["ten", "-1", "2.5"])
def test_bad_minutes_is_one_line_and_writes_nothing(tmp_path, minutes):
    result = _run_copy(tmp_path, minutes)
    assert result.returncode == 2
    assert result.stderr.strip() == (
        f"gpu_suite: minutes must be a whole number (0 skips the paper run), not '{minutes}'"
    )
    assert sorted(path.name for path in tmp_path.iterdir()) == ["scripts"]


@pytest.mark.parametrize("minutes", ["00x", "-1", "ten"])
def test_bad_emitter_minutes_is_one_line_and_writes_nothing(tmp_path, minutes):
    result = _run_copy(tmp_path, "1", EMITTER_MINUTES=minutes)
    assert result.returncode == 2
    assert result.stderr.strip() == (
        f"gpu_suite: EMITTER_MINUTES must be a whole number (0 skips the emitters), not '{minutes}'"
    )
    assert sorted(path.name for path in tmp_path.iterdir()) == ["scripts"]
