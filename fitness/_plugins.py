"""The folders another process needs to import an installed plugin (entry points of packages).

Shared by the extension points whose plugins Ray workers load: models (``fooling.models``)
and scoring engines (``fooling.engines``). Reading and loading entry points is
:mod:`fooling.encodings.plugins`' (re-exported here as :func:`entry_points`).
"""

from __future__ import annotations

import contextlib
import importlib.metadata
import importlib.util
import site
import sysconfig
from pathlib import Path

from fooling.encodings.plugins import entry_points

__all__ = ["entry_points", "import_paths"]


def _interpreter_folders() -> set[Path]:
    """The folders every process of this interpreter searches anyway: stdlib and site-packages."""
    folders = {Path(path) for path in sysconfig.get_paths().values()}
    folders.update(Path(path) for path in site.getsitepackages())
    folders.add(Path(site.getusersitepackages()))
    return {folder.resolve() for folder in folders}


def import_paths(entry: importlib.metadata.EntryPoint) -> tuple[str, ...]:
    """The folders, beyond this interpreter's own site-packages, that hold the plugin of ``entry``.

    They are where its distribution metadata (``*.dist-info``, so that its entry points
    resolve) and its module live. Other processes (Ray workers) put them on their
    ``sys.path`` to import the plugin as this process does. Empty for a plugin installed in
    site-packages, which every worker of the same environment sees.
    """
    roots: list[Path] = []
    with contextlib.suppress(Exception):  # a distribution not read from a folder (a zip, a custom finder)
        roots.append(Path(entry.dist.locate_file("")))
    with contextlib.suppress(ImportError, ValueError, AttributeError):
        found = importlib.util.find_spec(entry.module)
        if found is not None and found.origin and Path(found.origin).is_file():
            origin = Path(found.origin)
            depth = entry.module.count(".") + (1 if origin.name == "__init__.py" else 0)
            roots.append(origin.parents[depth])
    own = _interpreter_folders()
    paths: list[str] = []
    for root in roots:
        resolved = str(root.resolve())
        if root.resolve() not in own and resolved not in paths:
            paths.append(resolved)
    return tuple(paths)
