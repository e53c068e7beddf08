"""Ray backend: mutator actors vary genomes, scorer actors score them, the driver keeps the archive.

The module of the package that imports ``ray``. The driver (this process) owns
the archive, every random stream and the checkpoints; actors are stateless workers:

* ``N`` mutator actors (CPU) run :class:`~fooling.evo.search.Variation` on groups of
  tasks and return the children as numpy-backed genome batches;
* ``M`` scorer actors (one GPU each when the cluster has GPUs, CPU otherwise) run
  :class:`~fooling.evo.evaluation.Evaluator` on those children, one forward batch per
  task, and return each cell's best row of each batch (:class:`~fooling.evo.archive.BatchBest`,
  reduced on the scorer's device; the ``(count, num_cells)`` probabilities where the emitter
  learns from every child) with the :class:`~fooling.evo.search.Candidates` of each batch
  (the rows that can win a cell).

A mutator's output reference goes straight into a scorer call, so children move from
the mutator to the scorer through the object store and never visit the driver; only
the candidates do.
Our own ``ray.wait`` loop keeps :data:`IN_FLIGHT_PER_SCORER` calls queued on every
scorer and hands results back in task order. Because every random draw is a pure
function of ``(seed, generation, batch_index)`` and every task is scored as one forward
batch whatever else travels with it, the archive does not depend on the number of
actors, on how tasks are grouped into calls, or on actor restarts.

With ``--vary-on scorer`` there are no mutators: each scorer actor makes its tasks'
children on its own device from its replica of the archive
(:mod:`~fooling.evo.distributed.replicas`), so parents never travel; per generation the
driver sends the archive's changes once, and each batch sends back only the rows that
can win a cell.
"""

from __future__ import annotations

import collections
import contextlib
import dataclasses
import importlib
import logging
import math
import os
import shutil
import socket
import sys
import tempfile
import time
import warnings
from collections.abc import Iterator

import numpy as np
import ray
import ray._private.ray_constants as ray_constants  # private: the cluster switch (see _loopback_only)
import ray._private.services as ray_services  # private: this machine's network address
import ray.cloudpickle
import ray.exceptions
import torch
from ray._common.network_utils import is_localhost, parse_address

from fooling.encodings import GenomeBatch, TensorGenomes, UserError
from fooling.evo.archive import BatchBest, candidate_rows
from fooling.evo.config import RunConfig
from fooling.evo.distributed.replicas import ArchiveReplica, ArchiveSync, archive_sync
from fooling.evo.evaluation import Evaluator
from fooling.evo.on_device import HOST_SCHEME, check_generation_memory, device_toolbox, varies_on_device
from fooling.evo.search import BackendError, Candidates, ParentPool, Task, Variation
from fooling.fitness import LoadedModel, error_line, pick_device
from fooling.fitness.engine import configure_threads, keep_freed_memory
from fooling.fitness.engines import engine_import_paths, get_engine, plugin_engines, resolve_engine
from fooling.fitness.limits import timeout_seconds
from fooling.fitness.sources import plugin_import_paths, plugin_name

logger = logging.getLogger(__name__)

# Restarts of one actor before the run gives up; a killed node or a preempted spot
# instance costs one restart and a retry of the calls it held, never data.
MAX_RESTARTS = 3
# Two queued calls per scorer: one running, one waiting with its inputs already
# fetched, so the scorer never idles on a Ray round trip (~1-3 ms per call).
IN_FLIGHT_PER_SCORER = 2
# Tasks are grouped into one call until a call does about this much work, which keeps
# Ray's per-call cost under a few percent whatever the batch size.
TARGET_CALL_SECONDS = 0.05
# How long actors may take to start (worker process, torch import, model transfer)
# before we report that the cluster cannot place them: $FOOLING_RAY_START_TIMEOUT, else this.
START_TIMEOUT_VARIABLE = "FOOLING_RAY_START_TIMEOUT"
START_TIMEOUT_S = 300.0
# No result at all for this long means the cluster is stuck (not merely slow):
# $FOOLING_RAY_STALL_TIMEOUT, else this.
STALL_TIMEOUT_VARIABLE = "FOOLING_RAY_STALL_TIMEOUT"
STALL_TIMEOUT_S = 3600.0
# How often per-actor throughput goes to the log.
LOG_EVERY_S = 60.0
# Timeout of ``ray.get`` on references that ``ray.wait`` reported ready.
GET_TIMEOUT_S = 600.0


def _limit_threads(threads: int) -> int:
    """Pin torch and ONNX Runtime to ``threads`` threads, and keep freed memory for reuse.

    Actors sharing a node must not oversubscribe its cores (the decision itself is
    :func:`fooling.fitness.engine.configure_threads`); an actor renders and scores batch
    after batch, as the driver does (:func:`fooling.fitness.engine.keep_freed_memory`).
    """
    keep_freed_memory()
    return configure_threads(threads)


class _MutatorActor:
    """Varies genomes: a :class:`Variation` applied to groups of tasks."""

    def __init__(self, variation: Variation, threads: int) -> None:
        _limit_threads(threads)
        self.variation = variation

    def describe(self) -> dict:
        return {"pid": os.getpid(), "node": ray.get_runtime_context().get_node_id(), "device": "cpu"}

    @ray.method(num_returns=2)
    def vary(
        self, tasks: list[Task], pool: GenomeBatch | None
    ) -> tuple[list[GenomeBatch], tuple[float, int]]:
        """Children of each task, and ``(busy seconds, pid)`` for the driver's statistics.

        ``pool`` arrives as a reference resolved by Ray: one copy per node per generation,
        read in place from the node's object store.
        """
        started = time.perf_counter()
        children = [self.variation(task, pool) for task in tasks]
        return children, (time.perf_counter() - started, os.getpid())


class _ScorerActor:
    """Scores genomes: an :class:`Evaluator` on this actor's GPU (or CPU)."""

    def __init__(
        self,
        config: RunConfig,
        model: LoadedModel,
        device: str | None,
        threads: int,
        cpu_threads: int,
        variation: Variation | None = None,
    ) -> None:
        # Arrays from the object store are read-only views; scoring never writes to them.
        warnings.filterwarnings("ignore", message="The given NumPy array is not writable")
        # Threads are set before the scorer exists, so its engine's session gets them too.
        # Where the engine's floats depend on the thread count (torch on the CPU: reductions
        # split differently), the scorer uses the driver's thread count, the one an in-process
        # run (--workers 0) scores with: the archive then does not depend on the number of
        # actors. Where they do not (ONNX Runtime's CPU kernels split over outputs, not
        # reductions; on a GPU the floats do not depend on CPU threads), actors keep to the
        # CPUs Ray gave them.
        scoring_device = pick_device(device)
        engine = get_engine(resolve_engine(config.engine, scoring_device, model))
        # An emitter that refines takes torch gradient steps here, whose floats on the CPU
        # depend on the thread count as torch's scoring does.
        refines = variation is not None and variation.emitter.refines and scoring_device.type == "cpu"
        own_threads = engine.floats_depend_on_threads(scoring_device) or refines
        self.threads = _limit_threads(cpu_threads if own_threads else threads)
        self.evaluator = Evaluator(config, model, device=device)
        self.variation = variation
        self.device_variation = None
        self.replica = None
        device = self.evaluator.scorer.device
        if variation is not None and varies_on_device(
            config.vary_on, device, variation.emitter, self.evaluator.encoding
        ):
            # Children are made here, on this actor's device, with torch's generator of that device,
            # from parents taken out of this actor's replica of the archive.
            cells = len(self.evaluator.class_ids)
            check_generation_memory(self.evaluator.encoding, device, cells, config.population)
            self.device_variation = Variation(
                device_toolbox(self.evaluator.encoding, device),
                seed=variation.seed,
                crossover_probability=variation.crossover_probability,
                emitter=variation.emitter,
                device=device,
            )
            self.replica = ArchiveReplica(device, cells)

    def describe(self) -> dict:
        context = ray.get_runtime_context()
        return {
            "pid": os.getpid(),
            "node": context.get_node_id(),
            "device": str(self.evaluator.scorer.device),
            "engine": self.evaluator.scorer.engine,
            "gpu_ids": [str(i) for i in context.get_accelerator_ids().get("GPU", [])],
            "threads": self.threads,
            "makes_children": self.device_variation is not None,
        }

    def score(
        self,
        children: list[GenomeBatch],
        fitness: np.ndarray | None,
        tasks: list[Task] | None = None,
        pool: GenomeBatch | None = None,
    ) -> tuple[list[np.ndarray | BatchBest], float, int, list[Candidates]]:
        """Score each task's children (made by a mutator actor).

        Each task is one forward batch, so the floats do not depend on how tasks are grouped.
        With ``tasks`` (an emitter that refines), each batch first goes through the emitter's
        refinement (:meth:`Variation.refine`) here, beside the network.

        Args:
            children: each task's children.
            fitness: ``(num_cells,)`` float32 elite fitness as the generation found it
                (``None`` in generation 0).
            tasks: the tasks of ``children``, for an emitter that refines (else ``None``).
            pool: the generation's parent pool, for an emitter that refines.

        Returns:
            The scores of each batch (each cell's best row, :class:`BatchBest`, or where the
            emitter learns from every child the probabilities ``(count, num_cells)``), busy
            seconds, pid, and each
            batch's :class:`Candidates` (:func:`candidate_rows`): only the rows that can win
            a cell travel on to the driver.
        """
        started = time.perf_counter()
        if tasks is not None:
            # Copies: batches from the object store are read-only, and refinement writes.
            children = [
                self.variation.refine(task, batch.copy(), pool, self.evaluator)
                for task, batch in zip(tasks, children)
            ]
        probabilities = [self._evaluate(batch) for batch in children]
        candidates = [_candidates(batch, scores, fitness) for batch, scores in zip(children, probabilities)]
        return probabilities, time.perf_counter() - started, os.getpid(), candidates

    def _evaluate(self, batch: GenomeBatch | TensorGenomes) -> np.ndarray | BatchBest:
        """The batch's scores for the driver: each cell's best row, unless the emitter learns from all."""
        learns = self.variation is not None and self.variation.emitter.learns
        return self.evaluator.evaluate_for(batch, learns)

    def make_and_score(
        self, tasks: list[Task], pool_cells: np.ndarray | None, sync: ArchiveSync | None
    ) -> tuple[list[np.ndarray | BatchBest] | None, float, int, list[Candidates] | None]:
        """Make each task's children on this actor's device and score them.

        Args:
            tasks: the tasks of this call, all of one generation.
            pool_cells: ``(n,)`` the generation's distinct parent cells (``None`` in generation 0).
            sync: the archive's changes for this actor's replica (``None`` in generation 0).

        Returns:
            What :meth:`score` does. The probabilities are ``None`` when the replica lacks
            the base of ``sync`` (this actor restarted): the driver then sends the whole archive.
        """
        started = time.perf_counter()
        if sync is not None and not self.replica.apply(sync):
            return None, 0.0, os.getpid(), None
        parents = None if pool_cells is None else self.replica.parents(tasks[0].generation, pool_cells)
        fitness = None if sync is None else sync.fitness
        probabilities, candidates = [], []
        for task in tasks:
            children = self.device_variation(task, parents)
            scores = self._evaluate(children)
            probabilities.append(scores)
            candidates.append(_candidates(children, scores, fitness))
        return probabilities, time.perf_counter() - started, os.getpid(), candidates


def _candidates(
    batch: GenomeBatch | TensorGenomes, scores: np.ndarray | BatchBest, fitness: np.ndarray | None
) -> Candidates:
    """The rows of ``batch`` that can win a cell, as numpy genomes for the driver.

    ``fitness`` is the elites' as the generation found it; ``None`` in generation 0 (all empty).
    """
    if fitness is None:
        cells = len(scores.row) if isinstance(scores, BatchBest) else scores.shape[1]
        fitness = np.full(cells, -np.inf, np.float32)
    rows = candidate_rows(scores, fitness)
    chosen = batch.take(rows)
    return Candidates(rows, chosen.to_host() if isinstance(chosen, TensorGenomes) else chosen)


_Mutator = ray.remote(_MutatorActor)
_Scorer = ray.remote(_ScorerActor)


@dataclasses.dataclass
class ActorStats:
    """What the driver knows about one actor: placement, work done, restarts."""

    kind: str
    index: int
    pid: int = 0
    node: str = ""
    device: str = ""
    gpu_ids: list[str] = dataclasses.field(default_factory=list)
    calls: int = 0
    children: int = 0
    busy_s: float = 0.0
    restarts: int = 0

    @property
    def name(self) -> str:
        """The actor's name in the log, its kind and index (e.g. ``scorer0``)."""
        return f"{self.kind}{self.index}"

    def throughput(self) -> float:
        """Children per busy second (0 before the first call)."""
        return self.children / self.busy_s if self.busy_s > 0 else 0.0

    def record(self, children: int, seconds: float, pid: int) -> bool:
        """Count one finished call; ``True`` when it ran in a new process (a restart)."""
        self.calls += 1
        self.children += children
        self.busy_s += seconds
        restarted = bool(self.pid) and pid != self.pid
        if restarted:
            self.restarts += 1
        self.pid = pid
        return restarted


@dataclasses.dataclass
class _Call:
    """One group of tasks in flight; ``mutator`` is -1 where the scorer made the children itself."""

    chunk: int
    scorer: int
    mutator: int
    mutator_stats: ray.ObjectRef | None
    count: int


def check_address(address: str, timeout: float = 5.0, what: str = "--address") -> None:
    """Fail fast, in one line, when a ``HOST:PORT`` (or ``auto``) Ray address does not answer.

    ``ray.init`` on an unreachable address retries for a long time and then prints
    pages; a TCP connect says the same in seconds. ``auto`` is checked where Ray resolves it
    (``RAY_ADDRESS``, else the cluster ``ray start`` last recorded on this machine); ``local``
    is left to Ray.

    Args:
        address: the address to try.
        timeout: seconds the TCP connect may take.
        what: where the address came from, for the message (``--address``, ``RAY_ADDRESS``).

    Raises:
        ConnectionError: nothing listens there, no cluster for ``auto``, or the address is
            malformed.
    """
    if address == "local":
        return
    shown = address
    if address == "auto":
        try:
            address = ray_services.canonicalize_bootstrap_address("auto")
        except ConnectionError:
            address = None
        if address is None:
            raise ConnectionError(f"{what} auto: no Ray cluster found on this machine")
        shown = f"auto ({address}, the cluster Ray last recorded here)"
    target = address.split("://", 1)[-1].rstrip("/")
    host, _, port = target.rpartition(":")
    if not host or not port.isdigit():
        raise ConnectionError(f"{what} {shown}: expected auto or HOST:PORT")
    try:
        with socket.create_connection((host.strip("[]"), int(port)), timeout=timeout):
            pass
    except OSError as error:
        reason = error.strerror or type(error).__name__
        raise ConnectionError(f"{what} {shown}: no Ray cluster answers there ({reason})") from None


# The address every process of a local Ray instance listens on: a run without
# --address is reachable from this machine only.
LOOPBACK = "127.0.0.1"
# Ray's own switch for "this machine is no cluster node": with it off, Ray takes the
# loopback address as the node's address instead of the machine's LAN address, and
# its GCS, raylet, agents and metrics endpoints bind to that address only.
_CLUSTER_SWITCH = "RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER"
# The private folder (mode 0700) holding the Ray session this process started, if any.
_local_temp_root: str | None = None


def _is_local(address: str | None) -> bool:
    """``True`` when ``address`` asks for a new Ray instance on this machine (not a cluster)."""
    return address is None or address == "local"


@contextlib.contextmanager
def _loopback_only(temp_root: str | None = None) -> Iterator[None]:
    """While Ray starts or connects: node address 127.0.0.1 (and session folders under ``temp_root``).

    Without this, Ray replaces 127.0.0.1 by the machine's network address, both as the
    address a new instance listens on and as the address a driver connects to. Processes
    Ray starts inherit the environment set here; it is restored afterwards, so that joining
    another cluster later in the same process behaves as usual.
    """
    saved_env = {name: os.environ.get(name) for name in (_CLUSTER_SWITCH, "RAY_TMPDIR")}
    saved_switch = ray_constants.ENABLE_RAY_CLUSTER
    os.environ[_CLUSTER_SWITCH] = "0"
    if temp_root is not None:
        os.environ["RAY_TMPDIR"] = temp_root
    ray_constants.ENABLE_RAY_CLUSTER = False
    try:
        yield
    finally:
        ray_constants.ENABLE_RAY_CLUSTER = saved_switch
        for name, value in saved_env.items():
            if value is None:
                os.environ.pop(name, None)
            else:
                os.environ[name] = value


def init_local_ray(**options: object) -> str:
    """Start a Ray instance on this machine that only this machine can reach.

    Every process of the instance (GCS, raylet, workers, dashboard and runtime-env
    agents, metrics exporters) listens on 127.0.0.1, and its session folders live in a
    new private folder (mode 0700) instead of the shared, world-writable ``/tmp/ray``.
    :func:`shutdown_ray` stops the instance and removes that folder.

    Args:
        options: further ``ray.init`` arguments (``num_cpus``, ``logging_level``, ...).

    Returns:
        The private folder holding the session.
    """
    global _local_temp_root
    temp_root = tempfile.mkdtemp(prefix="fooling-ray-")  # mode 0700: other users cannot enter
    ray_temp = os.path.join(temp_root, "ray")  # Ray makes this one world-writable; its parent is not
    options = {"include_dashboard": False, **options}
    try:
        with _loopback_only(temp_root):
            ray.init(_node_ip_address=LOOPBACK, _temp_dir=ray_temp, **options)
    except BaseException:
        shutil.rmtree(temp_root, ignore_errors=True)
        raise
    _local_temp_root = temp_root
    return temp_root


def _on_loopback_only(address: str) -> bool:
    """``True`` when ``address`` names a Ray instance on this machine that listens on loopback only.

    Ray would connect to ``127.0.0.1:PORT`` through the machine's network address, which
    works for an instance started the usual way (listening on every interface) and not for
    one listening on 127.0.0.1 only (a local run, the tests, a ``ray start
    --node-ip-address 127.0.0.1`` with Ray's cluster switch off): a TCP connect tells them apart.
    """
    parsed = parse_address(address.split("://", 1)[-1].rstrip("/"))
    if parsed is None or not is_localhost(parsed[0]):
        return False
    network_address = ray_services.get_node_ip_address()
    if is_localhost(network_address):
        return True
    try:
        with socket.create_connection((network_address, int(parsed[1])), timeout=2):
            return False
    except OSError:
        return True


def shutdown_ray() -> None:
    """``ray.shutdown()``, and removal of the private session folder of :func:`init_local_ray`."""
    global _local_temp_root
    if ray.is_initialized():
        ray.shutdown()
    if _local_temp_root is not None:
        shutil.rmtree(_local_temp_root, ignore_errors=True)
        _local_temp_root = None


def connect(address: str | None) -> bool:
    """Join the Ray cluster at ``address`` (or ``RAY_ADDRESS``), or start a local instance.

    A local instance (no address, or ``local``) listens on 127.0.0.1 only (see
    :func:`init_local_ray`). The address comes from the caller or from ``RAY_ADDRESS``,
    never from anywhere else (a checkpoint, for one).

    Returns:
        ``True`` when this call started or joined Ray and so must shut it down;
        ``False`` when Ray was already initialised in this process (tests, notebooks).

    Raises:
        ConnectionError: the address does not answer, or Ray refuses it.
    """
    if address:
        check_address(address)  # also when Ray is up already: a bad address is still a mistake
    if ray.is_initialized():
        return False
    what = "--address" if address else "RAY_ADDRESS"
    address = address or os.environ.get("RAY_ADDRESS") or None
    if _is_local(address):
        init_local_ray(logging_level=logging.WARNING, log_to_driver=True)
        return True
    check_address(address, what=what)
    try:
        with _loopback_only() if _on_loopback_only(address) else contextlib.nullcontext():
            ray.init(address=address, logging_level=logging.WARNING, log_to_driver=True)
    except ConnectionError as error:
        raise ConnectionError(f"{what} {address}: {error_line(error)}") from None
    return True


class _WithImportPaths:
    """A value that, unpickled in another process, first puts ``paths`` on that process's ``sys.path``.

    A plugin model (an entry point of ``fooling.models``) pickles by reference to the plugin's
    module, so a scorer must import the plugin as the driver does; a plugin engine (of
    ``fooling.engines``) is looked up by name in the scorer, which must find it too. A plugin installed in the
    environment's site-packages is seen by every worker of that environment; one the driver
    finds elsewhere on its ``sys.path`` (``PYTHONPATH``, a ``pip install --target`` folder) is
    not, as Ray workers do not inherit the driver's ``sys.path``. So the model travels pickled
    inside this wrapper, and the folders holding the plugin's module and its ``*.dist-info``
    (where its entry points resolve) go on the worker's ``sys.path`` before the model is
    unpickled. (A runtime_env ``PYTHONPATH`` would do the same for new processes, but appending
    the cluster's own ``${PYTHONPATH}`` leaves an empty entry where that is unset, which puts
    the worker's working folder first and lets the project's ``encodings`` folder shadow the
    standard library's at interpreter start.)
    """

    def __init__(self, value: object, paths: tuple[str, ...]) -> None:
        self.value = value
        self.paths = paths

    def __reduce__(self):
        return (_import_paths_then_load, (self.paths, ray.cloudpickle.dumps(self.value)))


def _import_paths_then_load(paths: tuple[str, ...], data: bytes) -> object:
    """Unpickling a :class:`_WithImportPaths`: ``paths`` first on ``sys.path``, then the value."""
    for folder in reversed(paths):
        if folder not in sys.path:
            sys.path.insert(0, folder)
    importlib.invalidate_caches()
    return ray.cloudpickle.loads(data)


def model_for_actors(model: LoadedModel, engine: str = "auto") -> LoadedModel | _WithImportPaths:
    """What the object store holds for the scorer actors: ``model``, wrapped where needed.

    It is wrapped with the folders of its plugin, and of the plugin of scoring ``engine``,
    where they lie outside site-packages (see :class:`_WithImportPaths`). Either way the
    actors receive the :class:`LoadedModel` itself.
    """
    paths = tuple(dict.fromkeys((*plugin_import_paths(model.spec), *engine_import_paths(engine))))
    return _WithImportPaths(model, paths) if paths else model


def _fraction(value: float) -> float:
    """Ray takes fractional resources in steps of 1e-4."""
    return math.floor(value * 1e4) / 1e4


class RayBackend:
    """Varies and scores tasks on Ray actors; results come back in task order.

    Args:
        config: the run (``workers``, ``scorers``, ``address``, ``device``).
        variation: what mutator actors run (shipped once through the object store).
        model: the classifier with weights, shipped through the object store so that
            cluster nodes need no weights cache.
        max_restarts: restarts of each actor before the run gives up.
        scorer_actor: class the scorer actors run instead of the real one (same
            constructor and ``describe``/``score`` methods); benchmarks use it to simulate
            GPUs with actors that sleep.

    Raises:
        ConnectionError: ``config.address`` does not answer.
        UserError: more scorers than the cluster's GPUs, ``--device cuda`` on a
            cluster without GPUs, or a bad ``$FOOLING_RAY_START_TIMEOUT`` or
            ``$FOOLING_RAY_STALL_TIMEOUT`` (:func:`timeout_seconds`).
        BackendError: actors could not be placed within :data:`START_TIMEOUT_S`
            (or ``$FOOLING_RAY_START_TIMEOUT``).
    """

    def __init__(
        self,
        config: RunConfig,
        variation: Variation,
        model: LoadedModel,
        *,
        max_restarts: int | None = None,
        scorer_actor: type | None = None,
    ) -> None:
        if config.workers < 1:
            raise ValueError("RayBackend needs --workers >= 1 (0 runs in-process without Ray)")
        # Read before anything starts, so that a bad value is one line and no cluster.
        self.start_timeout = timeout_seconds(START_TIMEOUT_VARIABLE, START_TIMEOUT_S)
        self.stall_timeout = timeout_seconds(STALL_TIMEOUT_VARIABLE, STALL_TIMEOUT_S)
        self.config = config
        self.max_restarts = MAX_RESTARTS if max_restarts is None else max_restarts
        self._scorer_class = _Scorer if scorer_actor is None else ray.remote(scorer_actor)
        self._owns_ray = connect(config.address)
        try:
            self._start_actors(config, variation, model)
        except BaseException:
            self.close()
            raise
        self._seconds_per_child: float | None = None
        self._last_log = time.monotonic()
        self._warned_few_tasks = False
        # The last generation whose starting archive every scorer's replica holds (--vary-on
        # scorer); None: the next generation sends the whole archive.
        self._synced: int | None = None
        self.sync_bytes = 0  # genome bytes sent to the replicas so far (each put once)

    # --- set-up ----------------------------------------------------------------------------

    def _placement(self, config: RunConfig) -> tuple[float, float, int, str | None]:
        """``(cpus per actor, gpus per scorer, torch threads, scorer device)``.

        Raises:
            UserError: the cluster cannot give every scorer a GPU it was asked for.
        """
        resources = ray.cluster_resources()
        gpus = float(resources.get("GPU", 0))
        cpus = float(resources.get("CPU", 1))
        device = config.device
        wants_cuda = device is not None and device.startswith("cuda")
        if wants_cuda and gpus == 0:
            raise UserError(f"--device {device}: the Ray cluster has no GPUs (use --device cpu)")
        use_gpus = gpus > 0 and (device is None or wants_cuda)
        if use_gpus and config.scorers > gpus:
            raise UserError(
                f"--scorers {config.scorers} needs {config.scorers} GPUs (one per scorer) but the "
                f"Ray cluster has {gpus:g}: use --scorers {int(gpus)} or --device cpu"
            )
        actors = config.workers + config.scorers
        share = 1.0
        if actors > cpus:
            # A small machine still runs any number of actors; they share its cores.
            share = max(_fraction(cpus / actors), 1e-4)
            logger.warning(
                "%d actors on %g CPUs: each gets %g of a CPU (add nodes or lower --workers)",
                actors,
                cpus,
                share,
            )
        if not use_gpus and device is None:
            device = "cpu"
        return share, 1.0 if use_gpus else 0.0, max(1, int(share)), device

    @staticmethod
    def _prepare_engine(config: RunConfig, model: LoadedModel, device: str | None) -> None:
        """Let the scoring engine warm its cache here once, before the scorer actors start.

        For instance the ONNX Runtime engine exports its graph, which CPU scorer actors on
        this node then read from the cache instead of all exporting it at once
        (:meth:`~fooling.fitness.engines.ScoringEngine.prepare`). Not for GPU actors
        (``device`` ``None``), which each have a device of their own.

        Raises:
            EngineUnavailableError: an engine that cannot run here.
        """
        if device is not None:
            get_engine(resolve_engine(config.engine, pick_device(device), model)).prepare(model)

    def _start_actors(self, config: RunConfig, variation: Variation, model: LoadedModel) -> None:
        share, gpus, threads, device = self._placement(config)
        self._prepare_engine(config, model, device)
        restarts = dict(max_restarts=self.max_restarts, max_task_retries=-1)
        # Put once: every actor (and every restart) reads the same object. The backend
        # holds these references for its whole life, so restarts always find them.
        self._variation_ref = ray.put(variation)
        self._refines = variation.emitter.refines
        self._model_ref = ray.put(model_for_actors(model, config.engine))
        # Scorers first: whether they make the children (--vary-on, their device) says whether
        # mutators are needed.
        self.mutators = []
        self.scorers = [
            self._scorer_class.options(num_cpus=share, num_gpus=gpus, **restarts).remote(
                config,
                self._model_ref,
                device,
                threads,
                torch.get_num_threads(),
                variation=self._variation_ref,
            )
            for _ in range(config.scorers)
        ]
        scorers = self._started(self.scorers, config, model, self.start_timeout)
        makes = {info.get("makes_children", False) for info in scorers}
        kinds = {info["device"].split(":")[0] for info in scorers}  # cuda:0 and cuda:1 are one kind
        self.scoring_devices = tuple(torch.device(kind) for kind in sorted(kinds))
        if len(makes) > 1 or (True in makes and len(kinds) > 1):
            raise UserError(
                f"--vary-on {config.vary_on}: the scorer actors run on {' and '.join(sorted(kinds))}, whose "
                "random streams differ; give --device so that they all use one kind"
            )
        self._on_scorers = makes.pop()
        self.rng_scheme = f"torch-{kinds.pop()}" if self._on_scorers else HOST_SCHEME
        if not self._on_scorers:
            self.mutators = [
                _Mutator.options(num_cpus=share, **restarts).remote(self._variation_ref, threads)
                for _ in range(config.workers)
            ]
        described = self._started(self.mutators, config, model, self.start_timeout) + scorers
        self.stats = [ActorStats("mutator", i) for i in range(len(self.mutators))] + [
            ActorStats("scorer", i) for i in range(len(self.scorers))
        ]
        for stats, info in zip(self.stats, described):
            stats.pid, stats.node, stats.device = info["pid"], info["node"], info["device"]
            stats.gpu_ids = info.get("gpu_ids", [])
        logger.info(
            "Ray: %d mutators, %d scorers on %s (%d nodes)",
            len(self.mutators),
            len(self.scorers),
            ", ".join(sorted({s.device for s in self.stats[len(self.mutators) :]})),
            len({s.node for s in self.stats}),
        )

    @staticmethod
    def _started(handles: list, config: RunConfig, model: LoadedModel, timeout: float) -> list[dict]:
        """What each of ``handles`` describes of itself once started.

        Raises:
            BackendError: an actor did not start within ``timeout`` seconds, or failed to.
        """
        refs = [actor.describe.remote() for actor in handles]
        if not refs:
            return []
        ready, pending = ray.wait(refs, num_returns=len(refs), timeout=timeout)
        if pending:
            free = ray.available_resources()
            raise BackendError(
                f"{len(pending)} of {len(refs)} Ray actors did not start within {timeout:g} s "
                f"(cluster free: {free.get('CPU', 0):g} CPU, {free.get('GPU', 0):g} GPU)"
            )
        try:
            return ray.get(refs, timeout=GET_TIMEOUT_S)
        except ray.exceptions.RayError as error:
            logger.debug("actor start-up failed", exc_info=True)
            cause = error_line(error, last=True)
            plugin = plugin_name(model.spec)
            if plugin is not None and cause.startswith(("ModuleNotFoundError", "ImportError")):
                cause += f" (plugin model {plugin!r}: install its package on every node of the Ray cluster)"
            elif config.engine in plugin_engines() and cause.split(":", 1)[0].endswith(
                ("ModuleNotFoundError", "ImportError", "UnknownNameError", "EngineUnavailableError")
            ):
                hint = "install its package on every node of the Ray cluster"
                cause += f" (plugin engine {config.engine!r}: {hint})"
            raise BackendError(f"Ray actors failed to start: {cause}") from None

    # --- scheduling --------------------------------------------------------------------------

    def _group_size(self, tasks: list[Task]) -> int:
        """Tasks per actor call: enough work to hide Ray's per-call cost, few enough to share."""
        if not tasks or self._seconds_per_child is None:
            return 1
        per_task = self._seconds_per_child * max(task.count for task in tasks)
        wanted = max(1, math.ceil(TARGET_CALL_SECONDS / max(per_task, 1e-9)))
        # Every scorer still gets its share of calls in flight.
        fair = max(1, len(tasks) // (IN_FLIGHT_PER_SCORER * len(self.scorers)))
        return min(wanted, fair)

    def run(
        self, tasks: list[Task], parents: ParentPool | None
    ) -> Iterator[tuple[Candidates, np.ndarray | BatchBest]]:
        """Vary and score ``tasks``; yield ``(candidates, scores)`` in task order (:meth:`Backend.run`).

        For mutator actors the parents' genomes are put in the object store once for the
        whole generation; scorers that make the children get the parent cells and the
        archive's changes for their replicas instead (:mod:`~fooling.evo.distributed.replicas`),
        and send back the :class:`Candidates` of each batch.

        Raises:
            BackendError: an actor died more than ``max_restarts`` times, or nothing
                came back for :data:`STALL_TIMEOUT_S` (or ``$FOOLING_RAY_STALL_TIMEOUT``).
        """
        if len(tasks) < len(self.scorers) and not self._warned_few_tasks:
            self._warned_few_tasks = True
            logger.warning(
                "%d task(s) per generation for %d scorers: some scorers idle; a smaller --batch-size "
                "keeps them busy (it changes the random streams, so only for new runs)",
                len(tasks),
                len(self.scorers),
            )
        group = self._group_size(tasks)
        chunks = [tasks[start : start + group] for start in range(0, len(tasks), group)]
        generation = tasks[0].generation if tasks else -1
        pool_ref = sync_ref = whole_ref = pool_cells = fitness = None
        if self._on_scorers:
            since, self._synced = self._synced, None  # until every call of this generation came back
            if parents is not None:
                pool_cells = parents.cells
                sync_ref = self._put_sync(archive_sync(parents.archive, generation, since))
        elif parents is not None:
            pool_ref = ray.put(parents.genomes)
            # The elites' fitness as the generation found it (for replicas it is in the sync):
            # scorers send back only rows that beat it.
            fitness = parents.archive.fitness.copy()
        pending = collections.deque((index, sync_ref) for index in range(len(chunks)))
        finished: dict[int, tuple[list[Candidates], list[np.ndarray | BatchBest]]] = {}
        in_flight: dict[ray.ObjectRef, _Call] = {}
        scorer_load = [0] * len(self.scorers)
        mutator_load = [0] * len(self.mutators)
        yielded = 0
        while yielded < len(chunks):
            while pending and min(scorer_load) < IN_FLIGHT_PER_SCORER:
                index, sync = pending.popleft()
                chunk = chunks[index]
                scorer = int(np.argmin(scorer_load))
                count = sum(task.count for task in chunk)
                if self._on_scorers:
                    probabilities = self.scorers[scorer].make_and_score.remote(chunk, pool_cells, sync)
                    in_flight[probabilities] = _Call(index, scorer, -1, None, count)
                else:
                    mutator = int(np.argmin(mutator_load))
                    children, mutator_stats = self.mutators[mutator].vary.remote(chunk, pool_ref)
                    # Parents travel to the scorers only for an emitter that refines beside the network.
                    refine = (chunk, pool_ref) if self._refines and pool_ref is not None else ()
                    probabilities = self.scorers[scorer].score.remote(children, fitness, *refine)
                    in_flight[probabilities] = _Call(index, scorer, mutator, mutator_stats, count)
                    mutator_load[mutator] += 1
                scorer_load[scorer] += 1
            ready, _ = ray.wait(list(in_flight), num_returns=1, timeout=self.stall_timeout)
            if not ready:
                raise BackendError(f"no result from any Ray actor for {self.stall_timeout:g} s; giving up")
            for ref in ready:
                call = in_flight.pop(ref)
                scorer_load[call.scorer] -= 1
                if call.mutator >= 0:
                    mutator_load[call.mutator] -= 1
                result = self._collect(ref, call)
                if result is None:
                    # The scorer's replica missed the archive's changes (it restarted): send it all.
                    logger.info(
                        "%s lacks the archive's changes (restarted): sending it the whole archive",
                        self.stats[len(self.mutators) + call.scorer].name,
                    )
                    if whole_ref is None:
                        whole_ref = self._put_sync(archive_sync(parents.archive, generation, None))
                    pending.appendleft((call.chunk, whole_ref))
                else:
                    finished[call.chunk] = result
            while yielded in finished:
                children_list, probabilities_list = finished.pop(yielded)
                yield from zip(children_list, probabilities_list)
                yielded += 1
        if self._on_scorers and parents is not None:
            self._synced = generation
        self._maybe_log()

    def _put_sync(self, sync: ArchiveSync) -> ray.ObjectRef:
        """``sync`` in the object store (every scorer reads the one copy), counted in :attr:`sync_bytes`."""
        self.sync_bytes += sync.nbytes
        return ray.put(sync)

    def _collect(
        self, ref: ray.ObjectRef, call: _Call
    ) -> tuple[list[Candidates], list[np.ndarray | BatchBest]] | None:
        """Fetch one finished call and account for it (restarts show up as a new pid).

        ``None`` when the scorer's replica lacked the base of the changes it was sent.
        """
        try:
            # The children themselves go from the mutator to the scorer only; the scorer sends
            # on the candidates among them.
            probabilities, seconds, pid, children = ray.get(ref, timeout=GET_TIMEOUT_S)
            if call.mutator >= 0:
                mutator_seconds, mutator_pid = ray.get(call.mutator_stats, timeout=GET_TIMEOUT_S)
        except ray.exceptions.RayActorError as error:
            raise BackendError(
                f"a Ray actor died more than {self.max_restarts} times (its restart limit), giving up: "
                f"{error_line(error)}"
            ) from None
        except ray.exceptions.GetTimeoutError:
            raise BackendError(f"a finished Ray call gave no result within {GET_TIMEOUT_S:g} s") from None
        count = 0 if probabilities is None else call.count
        scorer = self.stats[len(self.mutators) + call.scorer]
        accounts = [(scorer, seconds, pid)]
        if call.mutator >= 0:
            accounts.insert(0, (self.stats[call.mutator], mutator_seconds, mutator_pid))
        for stats, busy, process in accounts:
            if stats.record(count, busy, process):
                logger.warning(
                    "%s restarted (now pid %d, %d restart(s) of %d allowed); its calls were retried",
                    stats.name,
                    process,
                    stats.restarts,
                    self.max_restarts,
                )
        if probabilities is None:
            return None
        per_child = seconds / max(call.count, 1)
        self._seconds_per_child = (
            per_child if self._seconds_per_child is None else 0.8 * self._seconds_per_child + 0.2 * per_child
        )
        return children, probabilities

    # --- reporting and shutdown ----------------------------------------------------------------

    def summary(self) -> str:
        """One short line for the progress bar: scorer throughput and restarts."""
        scorers = self.stats[len(self.mutators) :]
        rates = "/".join(f"{s.throughput():.0f}" for s in scorers)
        restarts = sum(s.restarts for s in self.stats)
        return f"scorers {rates} ev/s, restarts {restarts}"

    def report(self) -> list[str]:
        """One line per actor: placement, calls, throughput, restarts."""
        return [
            f"{s.name:9} pid {s.pid:<7} node {s.node[:8]} {s.device:6} {s.calls:6} calls "
            f"{s.children:9} children {s.throughput():9.0f}/s busy {s.busy_s:7.1f} s restarts {s.restarts}"
            for s in self.stats
        ]

    def _maybe_log(self) -> None:
        if time.monotonic() - self._last_log >= LOG_EVERY_S:
            self._last_log = time.monotonic()
            logger.info("Ray actors:\n  %s", "\n  ".join(self.report()))

    def close(self) -> None:
        """Stop the actors (and Ray itself when this backend started it)."""
        for actor in getattr(self, "mutators", []) + getattr(self, "scorers", []):
            with contextlib.suppress(Exception):  # already dead, or Ray is going away
                ray.kill(actor, no_restart=True)
        if getattr(self, "stats", None) and any(s.calls for s in self.stats):
            logger.info("Ray actors:\n  %s", "\n  ".join(self.report()))
        if self._owns_ray:
            shutdown_ray()
