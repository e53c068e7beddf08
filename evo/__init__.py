"""Evolution: the MAP-Elites archive, the generation loop, the DEAP toolbox, runs and checkpoints.

The names users need come from here::

    from fooling.evo import evolve, RunConfig

    search = evolve(RunConfig(model="mnist-lenet", generations=50, out="runs/api"))
    search.archive.data()  # pandas DataFrame, one row per occupied class cell
"""

from .archive import AddStatus, ClassArchive
from .config import PRESETS, RunConfig
from .evaluation import Evaluator, make_encoding
from .run import evolve, resume_config
from .search import Backend, BackendError, LocalBackend, Search, Variation
from .toolbox import make_toolbox

__all__ = [
    "AddStatus",
    "Backend",
    "BackendError",
    "ClassArchive",
    "Evaluator",
    "LocalBackend",
    "PRESETS",
    "RunConfig",
    "Search",
    "Variation",
    "evolve",
    "make_encoding",
    "make_toolbox",
    "resume_config",
]
