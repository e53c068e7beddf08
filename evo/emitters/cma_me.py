"""The ``cma-me`` emitter: CMA-ME (Fontaine et al. 2020) on CPPN weights.

Written only against the :class:`~fooling.evo.emitters.Emitter` interface: it picks its
parents, sends each child its weights as :meth:`~Emitter.instructions`, learns from
:meth:`~Emitter.tell` and keeps its state in the checkpoint (:meth:`~Emitter.state`). The
CMA-ES is ``cmaes.SepCMA`` (separable: a diagonal covariance, linear in the number of weights).
"""

from __future__ import annotations

import dataclasses
import hashlib
import math
import re
from typing import TYPE_CHECKING, ClassVar

import numpy as np
from cmaes import SepCMA
from deap import base

from fooling.encodings import GenomeBatch, UserError
from fooling.encodings.cppn import WEIGHT_LIMIT

from .base import Emitter

if TYPE_CHECKING:
    from fooling.evo.archive import ClassArchive

__all__ = ["CMAMEEmitter"]

# The CMA-ES fields a checkpoint stores, by name in the state and attribute of SepCMA.
_VECTORS = {"mean": "_mean", "C": "_C", "p_sigma": "_p_sigma", "pc": "_pc"}


def _damaged(reason: str) -> UserError:
    return UserError(f"the checkpoint's cma-me state is damaged: {reason}")


def _floats(state: dict, key: str, size: int) -> np.ndarray:
    """``state[key]``: a list of ``size`` finite numbers, as float64.

    Raises:
        UserError: missing, not numbers, not finite, or of another length.
    """
    items = state.get(key)
    if (
        not isinstance(items, list)
        or len(items) != size
        or not all(isinstance(item, (int, float)) and not isinstance(item, bool) for item in items)
    ):
        raise _damaged(f"{key!r} is not {size} number(s)")
    array = np.array(items, dtype=np.float64)
    if not np.isfinite(array).all():
        raise _damaged(f"{key!r} is not finite")
    return array


def _count(state: dict, key: str, low: int, high: int) -> int:
    """``state[key]`` as an int in ``[low, high]``.

    Raises:
        UserError: missing, not an int, or out of range.
    """
    value = state.get(key)
    if not isinstance(value, int) or isinstance(value, bool) or not low <= value <= high:
        raise _damaged(f"{key!r} is not an integer in [{low}, {high}]")
    return value


def topology_key(genomes: GenomeBatch, row: int) -> str:
    """SHA-256 (hex) of every field of genome ``row`` but its weights: what a CMA-ES keeps fixed."""
    digest = hashlib.sha256()
    for name, values in genomes.arrays().items():
        if name != "edge_weight":
            digest.update(name.encode() + np.ascontiguousarray(values[row]).tobytes())
    return digest.hexdigest()


def _new_cma(mean: np.ndarray, sigma: float, population: int) -> SepCMA:
    """A SepCMA at ``mean`` in the weight range; its draws are seeded per generation (``reseed_rng``)."""
    bounds = np.tile([-WEIGHT_LIMIT, WEIGHT_LIMIT], (mean.size, 1)).astype(np.float64)
    cma = SepCMA(mean=np.clip(mean, -WEIGHT_LIMIT, WEIGHT_LIMIT), sigma=sigma, bounds=bounds,
                 population_size=population, seed=0)  # fmt: skip
    cma._funhist_values[:] = 0.0  # allocated with np.empty: make a run a function of its seed
    return cma


def _checked_cma_state(saved: object) -> dict:
    """A stored CMA-ES state with every field checked, without building the CMA-ES.

    Building one allocates in proportion to its population, which a crafted checkpoint may set
    to billions: it is built only once the population is known to be the run's
    (:meth:`_Climber.cma_for`).

    Raises:
        UserError: a field is missing, of the wrong type or out of range.
    """
    if not isinstance(saved, dict) or not isinstance(saved.get("mean"), list):
        raise _damaged("'cma' is not an object with a 'mean'")
    size = len(saved["mean"])
    if size < 2:
        raise _damaged("fewer than 2 weights")
    population = _count(saved, "population", 2, 2**31 - 1)
    vectors = {key: _floats(saved, key, size) for key in _VECTORS}
    if (vectors["C"] <= 0).any():
        raise _damaged("a variance is not positive")
    step = saved.get("sigma")
    if not isinstance(step, float) or not 0 < step < float("inf"):
        raise _damaged("'sigma' is not a positive finite number")
    # As SepCMA sizes its history of function values (two per generation of its window).
    window = 10 + math.ceil(30 * size / population)
    return {
        "population": population,
        "generation": _count(saved, "generation", 0, 2**62),
        "sigma": step,
        "funhist": _floats(saved, "funhist", 2 * window).tolist(),
        **{key: vector.tolist() for key, vector in vectors.items()},
    }


def _built_cma(saved: dict, sigma: float) -> SepCMA:
    """The SepCMA a :func:`_checked_cma_state` describes."""
    cma = _new_cma(np.zeros(len(saved["mean"])), sigma, saved["population"])
    for key, name in _VECTORS.items():
        setattr(cma, name, np.array(saved[key], dtype=np.float64))
    cma._sigma = saved["sigma"]
    cma._funhist_values = np.array(saved["funhist"], dtype=np.float64)
    cma._g = saved["generation"]
    return cma


@dataclasses.dataclass
class _Climber:
    """One CMA-ES on the weights of one anchor cell's topology.

    Attributes:
        anchor: the anchor cell (-1: none yet).
        topology: :func:`topology_key` of the anchor's elite when the climber started.
        stall: generations in a row without an improving child.
        cma: the CMA-ES, or ``None`` when the anchor has fewer than 2 weights (its children
            are then the paper's, and the next generation draws a new anchor).
        stored: a checkpoint's CMA-ES state (checked), not built yet: it is built by
            :meth:`cma_for` when its population is the climber's share of the run's children,
            and dropped otherwise (the climber then restarts, as it would with that CMA-ES).
    """

    anchor: int = -1
    stall: int = 0
    cma: SepCMA | None = None
    topology: str = ""
    stored: dict | None = None

    def state(self) -> dict:
        state: dict = {"anchor": self.anchor, "stall": self.stall, "topology": self.topology}
        if self.stored is not None:
            state["cma"] = dict(self.stored)
        elif self.cma is not None:
            cma = self.cma
            state["cma"] = {
                "population": cma.population_size,
                "generation": cma.generation,
                "sigma": float(cma._sigma),
                "funhist": cma._funhist_values.tolist(),
                **{key: getattr(cma, name).tolist() for key, name in _VECTORS.items()},
            }
        return state

    def cma_for(self, children: int, sigma: float) -> SepCMA | None:
        """The climber's CMA-ES for a generation that gives it ``children`` children.

        A stored state is built here, and only when its population is ``children`` (bounded by
        the run's population); another one is dropped (``None``: the climber restarts).
        """
        if self.stored is not None:
            self.cma = _built_cma(self.stored, sigma) if self.stored["population"] == children else None
            self.stored = None
        return self.cma

    @classmethod
    def from_state(cls, state: object) -> _Climber:
        """The climber a :meth:`state` describes (every field checked; its CMA-ES built when used).

        Raises:
            UserError: a field is missing, of the wrong type or out of range.
        """
        if not isinstance(state, dict):
            raise _damaged("a climber is not an object")
        climber = cls(_count(state, "anchor", -1, 2**31 - 1), _count(state, "stall", 0, 2**31 - 1))
        topology = state.get("topology")
        if not isinstance(topology, str) or not re.fullmatch(r"([0-9a-f]{64})?", topology):
            raise _damaged("'topology' is not a SHA-256")
        climber.topology = topology
        saved = state.get("cma")
        if saved is not None:
            climber.stored = _checked_cma_state(saved)
        return climber


class CMAMEEmitter(Emitter):
    """CMA-ME on CPPN weights: ``climbers`` separable CMA-ES, each on the weights of one elite's topology.

    A share ``cma_share`` of a generation's children (its first rows) is split into
    ``climbers`` equal runs of rows, one per climber; the other children are the paper's
    (the encoding's mutation of uniformly drawn elites), which is what grows topologies: a
    CMA-ES only tunes weights. At a (re)start a climber draws an anchor cell (uniformly
    among the occupied ones, or among the weaker half with ``weak_anchors``), adopts its
    elite's topology and activations, and starts a CMA-ES at the elite's weights with step
    size ``sigma``. Each of its children is the anchor cell's elite with one CMA-ES sample as
    its weights (kept in the weight range by the CMA-ES's bounds). Children are ranked by
    improvement (:meth:`~fooling.evo.emitters.Emitter.tell`: the largest gain over any
    cell's elite) and each CMA-ES updated with its own; a climber restarts from a new anchor
    when none of its children improved the archive for ``patience`` generations in a row, its
    CMA-ES reports convergence, or its anchor cell's elite no longer has the topology it
    started from (a paper child won the cell; its weights may change, as children win it).

    Args:
        sigma: each CMA-ES's initial step size, in weight units (weights live in [-10, 10]).
        patience: generations without an improving child before a climber restarts.
        climbers: CMA-ES run side by side.
        cma_share: the share of the children the climbers make.
        weak_anchors: draw anchors among the weaker half of the occupied cells (those that
            decide the median), as ``focus`` draws its parents.
    """

    name: ClassVar[str] = "cma-me"
    summary: ClassVar[str] = (
        "CMA-ME: half the children from 2 separable CMA-ES, each on the weights of one elite's topology, "
        "ranked by improvement, restarting from another elite when it stalls; half the paper's"
    )
    needs: ClassVar[tuple[str, ...]] = ("perturb_weights",)

    def __init__(
        self,
        sigma: float = 0.3,
        patience: int = 5,
        climbers: int = 2,
        weak_anchors: bool = False,
        cma_share: float = 0.5,
    ) -> None:
        self.sigma = sigma
        self.patience = patience
        self.climbers = climbers
        self.weak_anchors = weak_anchors
        self.cma_share = cma_share
        self._climbers: list[_Climber] = []
        self._restarts = 0
        self._asked: list[np.ndarray | None] | None = None

    def __repr__(self) -> str:
        return (
            f"CMAMEEmitter(sigma={self.sigma}, patience={self.patience}, climbers={self.climbers}, "
            f"weak_anchors={self.weak_anchors}, cma_share={self.cma_share})"
        )

    def _rows(self, count: int) -> list[np.ndarray]:
        """The generation rows of each climber's children (the first ``cma_share`` of them)."""
        return np.array_split(np.arange(round(count * self.cma_share)), self.climbers)

    def _draw_anchor(self, archive: ClassArchive, rng: np.random.Generator) -> int:
        if not self.weak_anchors:
            return int(archive.sample_parents(1, rng)[0])
        occupied = archive.occupied_cells()
        weakest_first = occupied[np.argsort(archive.fitness[occupied], kind="stable")]
        weak = weakest_first[: (weakest_first.size + 1) // 2]
        return int(weak[rng.integers(0, weak.size)])

    def check(self, *, workers: int, population: int | None = None) -> None:
        """Refuse settings no CMA-ES can run with.

        Raises:
            UserError: a ``population`` that gives a climber fewer than 2 children.
        """
        if population is not None and round(population * self.cma_share) < 2 * self.climbers:
            least = -(-2 * self.climbers // self.cma_share)
            raise UserError(
                f"--emitter cma-me runs {self.climbers} CMA-ES of 2 or more children each on "
                f"{self.cma_share:.0%} of the children: --population must be at least {least:.0f}, "
                f"not {population}"
            )

    # --- driver side -------------------------------------------------------------------------

    def select_parents(self, archive: ClassArchive, count: int, rng: np.random.Generator) -> np.ndarray:
        """Each climber's anchor cell for its children, after restarting the climbers that stalled.

        Returns:
            ``(count,)`` int64 cells.

        Raises:
            ValueError: the archive is empty.
        """
        rows = self._rows(count)
        if len(self._climbers) != len(rows):
            self._climbers = [_Climber() for _ in rows]
        cells = np.empty(count, dtype=np.int64)
        for climber, own in zip(self._climbers, rows):
            cma = climber.cma_for(own.size, self.sigma)
            if (
                climber.anchor < 0
                or cma is None
                or climber.stall >= self.patience
                or cma.population_size != own.size
                or cma.should_stop()
                or topology_key(archive.genomes, climber.anchor) != climber.topology
            ):
                climber.anchor, climber.stall = self._draw_anchor(archive, rng), 0
                climber.topology = topology_key(archive.genomes, climber.anchor)
                weights = archive.genomes.take([climber.anchor])
                weights = weights.edge_weight[0][weights.edge_used[0]].astype(np.float64)
                climber.cma = _new_cma(weights, self.sigma, own.size) if weights.size >= 2 else None
                self._restarts += 1
            cells[own] = climber.anchor
        taken = sum(own.size for own in rows)
        cells[taken:] = archive.sample_parents(count - taken, rng)  # the paper's children
        return cells

    def instructions(
        self, archive: ClassArchive, cells: np.ndarray, rng: np.random.Generator
    ) -> np.ndarray | None:
        """``(count, most weights)`` float64: each child's CMA-ES sample, NaN-padded past its weights.

        Children of a climber without a CMA-ES get rows of NaN (the paper's mutation).

        Raises:
            UserError: an anchor cell's elite does not have its CMA-ES's number of weights
                (a resumed checkpoint whose emitter state does not match its archive).
        """
        rows = self._rows(len(cells))
        self._asked = []
        for climber, own in zip(self._climbers, rows):
            if climber.cma_for(own.size, self.sigma) is None:
                self._asked.append(None)
                continue
            used = int(archive.genomes.edge_used[climber.anchor].sum())
            if used != climber.cma.dim:
                raise UserError(
                    f"the checkpoint's cma-me state does not match its archive: cell {climber.anchor}'s "
                    f"elite has {used} weights, its CMA-ES {climber.cma.dim}"
                )
            climber.cma.reseed_rng(int(rng.integers(2**32)))
            self._asked.append(np.stack([climber.cma.ask() for _ in own]))
        width = max((len(x[0]) for x in self._asked if x is not None), default=0)
        out = np.full((len(cells), max(width, 1)), np.nan)
        for asked, own in zip(self._asked, rows):
            if asked is not None:
                out[own, : asked.shape[1]] = asked
        return out

    def tell(self, archive: ClassArchive, cells: np.ndarray, improvement: np.ndarray) -> None:
        """Update each CMA-ES with its children's improvement (best first) and count stalls."""
        if self._asked is None:
            return
        for climber, asked, own in zip(self._climbers, self._asked, self._rows(len(cells))):
            if asked is None:
                climber.stall = self.patience  # paper children this time: a new anchor next
                continue
            gains = improvement[own]
            climber.cma.tell([(x, -float(gain)) for x, gain in zip(asked, gains)])
            climber.stall = 0 if float(gains.max()) > 0 else climber.stall + 1
        self._asked = None

    def state(self) -> dict:
        """The climbers (anchor, stall count, the CMA-ES's moving parts) and the restart count."""
        if not self._climbers:
            return {}
        return {"restarts": self._restarts, "climbers": [climber.state() for climber in self._climbers]}

    def restore(self, state: dict) -> None:
        """Continue from a checkpoint's :meth:`state` (every field checked).

        Raises:
            UserError: a field is missing, of the wrong type or out of range.
        """
        self._asked = None
        if not state:  # a checkpoint written before the first generation was varied
            self._climbers, self._restarts = [], 0
            return
        climbers = state.get("climbers")
        if not isinstance(climbers, list) or not 1 <= len(climbers) <= self.climbers:
            raise _damaged(f"'climbers' is not a list of 1 to {self.climbers}")
        restarts = _count(state, "restarts", 0, 2**62)
        self._climbers = [_Climber.from_state(climber) for climber in climbers]
        self._restarts = restarts

    # --- wherever the batch is varied ----------------------------------------------------------

    def vary(
        self,
        toolbox: base.Toolbox,
        parents: GenomeBatch,
        rng: np.random.Generator,
        *,
        generation: int,
        crossover_probability: float = 0.0,
        instructions: np.ndarray | None = None,
    ) -> GenomeBatch:
        """Copies of the parents whose used weights are their rows of ``instructions``.

        Rows of NaN (a climber without a CMA-ES): the paper's mutation of the parent.

        Raises:
            ValueError: a parent's used weights are not as many as its row's numbers.
        """
        if instructions is None:
            return super().vary(toolbox, parents, rng, generation=generation)
        sampled = ~np.isnan(instructions[:, 0])
        children = parents.copy()
        if sampled.any():
            rows = np.flatnonzero(sampled)
            used = children.edge_used[rows]
            given = ~np.isnan(instructions[rows])
            if (used.sum(axis=1) != given.sum(axis=1)).any():
                raise ValueError("cma-me: a parent whose used weights are not as many as its sample's")
            weights = children.edge_weight[rows]
            weights[used] = instructions[rows][given].astype(np.float32)
            children.edge_weight[rows] = weights
        if not sampled.all():
            rows = np.flatnonzero(~sampled)
            children.assign(rows, super().vary(toolbox, parents.take(rows), rng, generation=generation))
        return children
