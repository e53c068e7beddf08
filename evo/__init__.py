"""Evolution: the MAP-Elites archive, the generation loop, the DEAP toolbox, runs and checkpoints.

The names users need come from here::

    from fooling.evo import evolve, RunConfig

    search = evolve(RunConfig(model="mnist-lenet", generations=50, out="runs/api"))
    search.archive.data()  # pandas DataFrame, one row per occupied class cell

The core (archive, search, toolbox, evaluation, config) imports no Ray, pyarrow, matplotlib
or tqdm; :func:`evolve` and :func:`resume_config` live in :mod:`fooling.evo.run`, which
writes checkpoints (pyarrow) and draws a progress bar (tqdm), so they are loaded on first use.
"""

import importlib

from fooling.evo.archive import AddStatus, BatchBest, ClassArchive
from fooling.evo.config import PRESETS, RunConfig
from fooling.evo.evaluation import Evaluator, make_encoding
from fooling.evo.search import Backend, BackendError, Candidates, LocalBackend, ParentPool, Search, Variation
from fooling.evo.toolbox import make_toolbox

# Public names of the driver module, imported when first asked for (PEP 562).
_DRIVER_NAMES = ("evolve", "resume_config")

__all__ = [
    "AddStatus",
    "Backend",
    "BackendError",
    "BatchBest",
    "Candidates",
    "ClassArchive",
    "Evaluator",
    "LocalBackend",
    "PRESETS",
    "ParentPool",
    "RunConfig",
    "Search",
    "Variation",
    "evolve",
    "make_encoding",
    "make_toolbox",
    "resume_config",
]


def __getattr__(name: str):
    if name in _DRIVER_NAMES:
        return getattr(importlib.import_module("fooling.evo.run"), name)
    raise AttributeError(f"module 'fooling.evo' has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted(__all__)
