"""Import layering, checked in fresh interpreters: what each package may pull in."""

from __future__ import annotations

import ast
import configparser
import json
import subprocess
import sys
from pathlib import Path

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
        ("fooling.fitness", {"fooling.evo", "ray", "pyarrow", "matplotlib"}),
    ],
)
def test_lower_layers_do_not_import_upper_ones(module, forbidden):
    loaded = imported_after(module)
    assert not {name for name in loaded if name.split(".")[0] in forbidden or name in forbidden}


def test_no_module_picks_a_matplotlib_backend_at_import():
    # pyplot at import would fix the backend for the whole process (no inline plots in notebooks).
    modules = (
        "fooling.evo.report.figures",
        "fooling.evo.experiments.elites",
        "fooling.evo.experiments.retrain",
        "fooling.evo.report.animation",
    )
    loaded = imported_after("; import ".join(modules))
    assert "matplotlib.figure" in loaded and "matplotlib.pyplot" not in loaded


# --- static checks over the source: who imports what --------------------------------------

ROOT = Path(__file__).resolve().parents[1]
PACKAGES = {"evo": "fooling.evo", "encodings": "fooling.encodings", "fitness": "fooling.fitness"}


def project_modules() -> dict[str, Path]:
    """Dotted name -> file of every module of the three packages."""
    modules = {}
    for folder, package in PACKAGES.items():
        for path in (ROOT / folder).rglob("*.py"):
            parts = path.relative_to(ROOT / folder).with_suffix("").parts
            name = ".".join((package, *parts))
            modules[name.removesuffix(".__init__")] = path
    return modules


def imports_of(path: Path, modules: dict[str, Path]) -> set[str]:
    """Modules ``path`` imports anywhere in it: project modules by dotted name, others by top name."""
    found = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            found.add(node.module)
            found.update(
                f"{node.module}.{a.name}" for a in node.names if f"{node.module}.{a.name}" in modules
            )
    return {name if name.startswith("fooling.") else name.split(".")[0] for name in found}


@pytest.mark.parametrize(
    ("package", "owner"),
    [
        ("pyarrow", "fooling.evo.store"),
        ("ray", "fooling.evo.distributed"),
        ("matplotlib", "fooling.evo.report"),
    ],
)
def test_each_heavy_package_is_imported_in_one_subpackage_only(package, owner):
    modules = project_modules()
    users = {name for name, path in modules.items() if package in imports_of(path, modules)}
    assert users and all(name.startswith(owner) for name in users), sorted(users)


def test_core_modules_import_no_ray_pyarrow_matplotlib_or_tqdm():
    core = ("archive", "search", "toolbox", "evaluation", "config", "emitters")
    loaded = imported_after("; import ".join(f"fooling.evo.{name}" for name in core))
    # torch itself loads tqdm (torch.hub): only what the core adds on top counts.
    loaded -= imported_after("torch, numpy, deap")
    assert not {name for name in loaded if name.split(".")[0] in {"ray", "pyarrow", "matplotlib", "tqdm"}}


def test_no_import_cycle_among_the_projects_modules():
    modules = project_modules()
    graph = {
        name: {m for m in imports_of(path, modules) if m in modules and m != name}
        for name, path in modules.items()
    }
    # A package's __init__ re-exporting its own modules is not a cycle of code: drop edges to parents.
    graph = {name: {m for m in edges if not name.startswith(m + ".")} for name, edges in graph.items()}
    state: dict[str, int] = {}  # 1: on the current path, 2: done

    def visit(name: str, path: list[str]) -> None:
        state[name] = 1
        for target in sorted(graph[name]):
            if state.get(target) == 1:
                cycle = path[path.index(target) :] + [target]
                pytest.fail("import cycle: " + " -> ".join(cycle))
            if target not in state:
                visit(target, [*path, target])
        state[name] = 2

    for name in sorted(graph):
        if name not in state:
            visit(name, [name])


def test_setup_cfg_lists_every_package():
    # A subpackage missing from setup.cfg's explicit list works in an editable install and is
    # absent from a wheel: compare the list with the folders that hold an __init__.py.
    config = configparser.ConfigParser()
    config.read(ROOT / "setup.cfg")
    listed = set(config["options"]["packages"].split())
    found = {
        ".".join((package, *init.parent.relative_to(ROOT / folder).parts))
        for folder, package in PACKAGES.items()
        for init in (ROOT / folder).rglob("__init__.py")
    }
    assert listed == found
