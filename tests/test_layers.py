"""Import layering, checked in fresh interpreters: what each package may pull in."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest


def imported_after(module: str) -> set[str]:
    """Top-level names of every module loaded by ``import module`` in a fresh interpreter."""
    code = f"import json, sys; import {module}; print(json.dumps(sorted(sys.modules)))"
    output = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=300, check=True
    )
    return set(json.loads(output.stdout.splitlines()[-1]))


@pytest.mark.parametrize(
    ("module", "forbidden"),
    [
        ("fooling.encodings", {"fooling.fitness", "fooling.evo", "ray", "pyarrow", "matplotlib"}),
        ("fooling.fitness", {"fooling.evo", "ray", "pyarrow"}),
    ],
)
def test_lower_layers_do_not_import_upper_ones(module, forbidden):
    loaded = imported_after(module)
    assert not {name for name in loaded if name.split(".")[0] in forbidden or name in forbidden}


def test_no_module_picks_a_matplotlib_backend_at_import():
    # pyplot at import would fix the backend for the whole process (no inline plots in notebooks).
    modules = (
        "fooling.evo.report",
        "fooling.evo.experiments",
        "fooling.evo.retrain",
        "fooling.fitness.animation",
    )
    loaded = imported_after("; import ".join(modules))
    assert "matplotlib.figure" in loaded and "matplotlib.pyplot" not in loaded
