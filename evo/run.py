"""Running a search end to end: set-up, resume, progress, checkpoints, report."""

from __future__ import annotations

import dataclasses
import logging
import signal
import threading
import time
from collections.abc import Callable, Sequence
from functools import partial

import numpy as np
import torch
from deap import base, tools
from tqdm.auto import tqdm
from tqdm.contrib.logging import logging_redirect_tqdm

from fooling.encodings import GENOME_CLASSES, GenomeBatch, UserError
from fooling.evo.archive import ClassArchive
from fooling.evo.config import RESUMABLE_OVERRIDES, RunConfig, check_cluster_choice, check_encoding_settings
from fooling.evo.emitters import get_emitter
from fooling.evo.evaluation import Evaluator, class_ids, make_encoding
from fooling.evo.models import load_or_train, named_stored_model
from fooling.evo.on_device import (
    HOST_SCHEME,
    check_generation_memory,
    device_toolbox,
    host_archive,
    move_archive,
    rng_scheme,
    varies_on_device,
    warn_scheme_change,
)
from fooling.evo.rendering import render_uint8
from fooling.evo.search import STATS_FIELDS, Backend, BackendError, LocalBackend, Search, Variation
from fooling.evo.store.checkpoint import (
    Checkpoint,
    CheckpointError,
    checkpoint_uris,
    prune_checkpoints,
    read_latest_checkpoint,
    write_checkpoint,
)
from fooling.evo.store.location import check_writable, join
from fooling.evo.store.queries import LEDGER_NAME, read_ledger, write_ledger
from fooling.evo.store.runfolder import (
    RunFolderError,
    check_resume_kind,
    claimed_run_folder,
    holds_a_run,
    run_token,
)
from fooling.evo.store.tables import STATS_NAME, read_stats, write_stats
from fooling.evo.store.thumbnails import ThumbnailCache
from fooling.evo.toolbox import make_toolbox
from fooling.evo.trackers import Tracker, TrackerSpec, Tracking
from fooling.fitness import LoadedModel, ModelRunError, pick_device
from fooling.fitness.endpoint import is_endpoint
from fooling.fitness.endpoint.budget import QueryBudget
from fooling.fitness.engine import check_engine, keep_freed_memory, resolve_engine
from fooling.fitness.limits import check_device
from fooling.fitness.sources import describe_model, model_change, source_change

logger = logging.getLogger(__name__)

# What a run writes before its first checkpoint (the query ledger, the statistics): removed with
# its record when it ends, or is found killed, before that checkpoint (claimed_run_folder).
EVOLVE_PRELUDE = (LEDGER_NAME, STATS_NAME)

# Genome classes a checkpoint may name (GENOME_CLASSES, read from the encodings' registry, plugins
# included; loading never builds anything else) are imported from fooling.encodings above; the
# model loader and the uint8 renderer, which the experiments share, live in fooling.evo.models
# and fooling.evo.rendering (imported here too: evolve looks load_or_train up in this module).


def save_checkpoint(
    config: RunConfig,
    model: LoadedModel,
    archive: ClassArchive,
    *,
    generation: int,
    next_id: int,
    stats: list[dict] | None = None,
    thumbnails: ThumbnailCache | None = None,
    out: str | None = None,
    emitter_state: dict | None = None,
    rng_scheme: str = HOST_SCHEME,
    queries: int | None = None,
    render: Callable[[GenomeBatch], np.ndarray] | None = None,
    run: str | None = None,
) -> str:
    """Write a run's checkpoint and statistics: what evolve, retrain's rounds and ascent all call.

    The checkpoint records the config, how to rebuild the model and its weights hash, and
    PNG thumbnails of the occupied cells; old checkpoints beyond ``config.keep_checkpoints``
    are pruned afterwards.

    Args:
        config: the run.
        model: the classifier the archive was scored with.
        archive: the elites.
        generation: the last finished generation.
        next_id: the next unused individual id.
        stats: the per-generation statistics records so far (``None``: not written).
        thumbnails: the run's thumbnail cache (only cells changed since it was filled are
            rendered).
        out: where to write (default ``config.out``; a command staging files for a URI
            passes its local staging folder).
        emitter_state: what the run's emitter learnt (its ``state()``, a JSON object), stored
            in the checkpoint for ``--resume`` (``None``: none).
        rng_scheme: the random streams the children were made with
            (:func:`~fooling.evo.on_device.rng_scheme`).
        queries: images sent to the model so far (``None``: not counted).
        render: draws the changed cells' thumbnails as uint8 (default: :func:`render_uint8` of
            the run's encoding on the CPU; evolve on a CUDA GPU passes its renderer there).
        run: the token of the run (:func:`~fooling.evo.store.runfolder.run_token`), recorded in
            the checkpoint; ``None``: none.

    Returns:
        The checkpoint's URI.

    Raises:
        OSError: the storage cannot be written (nothing earlier is lost: writes are atomic).
    """
    if render is None:
        render = partial(render_uint8, make_encoding(config, model.spec))
    state = Checkpoint(
        config,
        generation,
        next_id,
        config.model,
        model.weights_hash,
        host_archive(archive),
        model_source=describe_model(config.model, model),
        emitter_state=dict(emitter_state or {}),
        rng_scheme=rng_scheme,
        queries=queries,
        run=run,
    )
    out = config.out if out is None else out
    if stats is not None:
        write_stats(out, stats)
    uri = write_checkpoint(
        out,
        state,
        render=render,
        thumbnails=thumbnails,
    )
    logger.debug("checkpoint %s", uri)
    prune_checkpoints(out, config.keep_checkpoints)
    return uri


def resume_config(out: str, **overrides) -> RunConfig:
    """The configuration stored in run ``out``'s newest good checkpoint, with ``overrides``.

    Raises:
        RunFolderError: no such run folder.
        CheckpointError: no readable checkpoint.
        UserError: an override of a field a resumed run must keep.
    """
    return resume_checkpoint(out, **overrides)[0]


def resume_checkpoint(out: str, **overrides) -> tuple[RunConfig, Checkpoint]:
    """Like :func:`resume_config`, also returning the checkpoint read (pass it to :func:`evolve`).

    A run whose model is behind an endpoint resumes only with ``model`` naming that endpoint
    (:func:`~fooling.evo.models.named_stored_model`): the run folder never chooses where this
    process sends requests and credentials.

    Raises:
        RunFolderError: no such run folder.
        CheckpointError: no readable checkpoint.
        UserError: an override of a field a resumed run must keep, ``generations`` given but
            not above the generations the run already has, or a run of an endpoint that
            ``model`` does not name.
    """
    check_resume_kind(out, "evolve")
    if not checkpoint_uris(out):
        raise RunFolderError(f"--resume {out}: no run there (no checkpoints/gen-*.parquet)")
    checkpoint = read_latest_checkpoint(out, GENOME_CLASSES)
    config = checkpoint.config
    named = named_stored_model(config.model, overrides.get("model"), where=f"--resume {out}")
    overrides = {**overrides, "model": named}
    for name, value in overrides.items():
        if value is None:
            continue
        if name not in RESUMABLE_OVERRIDES and value != getattr(config, name):
            raise UserError(
                f"--{name.replace('_', '-')} {value} differs from the run's {getattr(config, name)}; "
                f"a resumed run keeps its settings (only {', '.join(RESUMABLE_OVERRIDES)} may change)"
            )
    done = checkpoint.generation + 1
    wanted = overrides.get("generations")
    if wanted is not None and wanted <= done:
        raise UserError(
            f"--generations {wanted}: {out} already has {done} generations (0..{done - 1}); "
            f"give more than {done} to continue it"
        )
    _warn_engine_change(out, config, overrides)
    changes = {name: value for name, value in overrides.items() if value is not None}
    # The Ray address is never taken from the checkpoint: a run folder written by someone
    # else must not point this driver (and its Ray token) at their cluster. Only --address
    # (or RAY_ADDRESS, read when connecting) says where Ray is.
    changes["address"] = overrides.get("address")
    return dataclasses.replace(config, **changes, out=out), checkpoint


def _warn_engine_change(out: str, config: RunConfig, overrides: dict) -> None:
    """Log a warning when ``--engine`` makes a resumed run score with another engine.

    An engine given with ``--resume`` replaces the stored one (without it the run keeps its
    engine); engines agree to about 1e-6, not bit for bit, so the archive then differs from
    the one an uninterrupted run would end with.
    """
    engine = overrides.get("engine")
    if engine is None:
        return
    device = overrides.get("device") or config.device
    try:
        before, after = (resolve_engine(name, pick_device(device)) for name in (config.engine, engine))
    except (LookupError, ValueError):
        before, after = check_engine(config.engine), check_engine(engine)
    if before != after:
        logger.warning(
            "resuming %s with --engine %s (%s) instead of the run's %s (%s): the archive will no longer "
            "be bit-identical to an uninterrupted run",
            out,
            engine,
            after,
            config.engine,
            before,
        )


# Makes the backend a search runs on: (config, variation, model) -> Backend.
BackendFactory = Callable[[RunConfig, Variation, LoadedModel], Backend]


def local_backend(config: RunConfig, variation: Variation, model: LoadedModel) -> LocalBackend:
    """Everything in this process: the backend of ``workers == 0``."""
    return LocalBackend(variation, Evaluator(config, model))


def make_backend(config: RunConfig, variation: Variation, model: LoadedModel) -> Backend:
    """The default backend: in-process for ``workers == 0``, else Ray actors."""
    if config.workers == 0:
        return local_backend(config, variation, model)
    # Optional heavy dependency: Ray (a second to import, a cluster to start or join) is
    # loaded only by runs that ask for workers, so the in-process loop never touches it.
    from fooling.evo.distributed import RayBackend

    return RayBackend(config, variation, model)


def make_search(
    config: RunConfig,
    model: LoadedModel,
    archive: ClassArchive,
    *,
    toolbox: base.Toolbox,
    generation: int = 0,
    next_id: int = 0,
    logbook: tools.Logbook | None = None,
    backend: BackendFactory | None = None,
    vary_device: torch.device | None = None,
) -> Search:
    """A search of ``config`` over ``archive`` on its backend; the caller closes ``search.backend``.

    ``backend`` makes the backend (default :func:`make_backend`: in-process or Ray by
    ``config.workers``). ``vary_device``: the device of the toolbox's tensor genomes
    (:func:`~fooling.evo.on_device.device_toolbox`), ``None`` for numpy genomes.
    """
    emitter = get_emitter(config.emitter)
    variation = Variation(
        toolbox,
        seed=config.seed,
        crossover_probability=config.crossover_probability,
        emitter=emitter,
        device=vary_device,
    )
    return Search(
        archive=archive,
        backend=(backend or make_backend)(config, variation, model),
        seed=config.seed,
        population=config.population,
        batch_size=config.effective_batch_size,
        generation=generation,
        next_id=next_id,
        logbook=logbook,
        emitter=emitter,
    )


def _logbook(records: list[dict]) -> tools.Logbook:
    logbook = tools.Logbook()
    logbook.header = STATS_FIELDS
    for record in records:
        logbook.record(**record)
    return logbook


class _StopRequest:
    """Stops a run cleanly on Ctrl-C or SIGTERM (e.g. ``ray job stop``, a preempted node).

    The first one: finish the generation, checkpoint, stop. A second one: stop at once,
    keeping the last checkpoint.
    """

    SIGNALS = (signal.SIGINT, signal.SIGTERM)

    def __init__(self) -> None:
        self.requested = False
        self._previous: dict = {}
        if threading.current_thread() is threading.main_thread():
            self._previous = {number: signal.signal(number, self._handle) for number in self.SIGNALS}

    def _handle(self, signum, frame) -> None:
        if self.requested:
            raise KeyboardInterrupt
        self.requested = True
        logger.warning("stopping after this generation (Ctrl-C again to stop at once)")

    def restore(self) -> None:
        for number, handler in self._previous.items():
            signal.signal(number, handler)


def evolve(
    config: RunConfig,
    *,
    resume: bool = False,
    toolbox: base.Toolbox | None = None,
    show_progress: bool = True,
    checkpoint: Checkpoint | None = None,
    backend: BackendFactory | None = None,
    on_generation: Callable[[Search], None] | None = None,
    trackers: Sequence[str | TrackerSpec | Tracker] | None = None,
) -> Search:
    """Run (or continue) the search ``config`` describes, writing checkpoints under ``config.out``.

    Holds the run folder's lock throughout (:func:`~fooling.evo.store.runfolder.claimed_run_folder`):
    a second process on the same folder is refused at once. The emitter's state is saved in
    every checkpoint and given back to it on ``resume``. Sets this process's allocator to keep freed memory
    (:func:`fooling.fitness.engine.keep_freed_memory`), which makes torch's batches up to 3x
    faster on the CPU.

    Args:
        config: the run; with ``resume``, as returned by :func:`resume_config`.
        resume: continue from the newest good checkpoint in ``config.out``.
        toolbox: operators to use instead of the encoding's (see :func:`make_toolbox`).
        show_progress: draw a tqdm bar.
        checkpoint: with ``resume``, the checkpoint already read (see :func:`resume_checkpoint`),
            so the file is not read twice.
        backend: makes the backend the search runs on (default :func:`make_backend`:
            in-process for ``workers == 0``, else Ray actors).
        on_generation: called with the search after each generation is inserted: its
            archive holds the generation's elites, ``search.logbook[-1]`` is its stats record.
        trackers: experiment trackers to report to (``"tensorboard"``, ``"mlflow:URI"``,
            :class:`~fooling.evo.trackers.Tracker` objects; see :mod:`fooling.evo.trackers`; one
            alone is taken as a list of one); a failing tracker never stops the search, and
            they change nothing in the archive.

    Returns:
        The finished search (archive, logbook, generation).

    Raises:
        RunFolderError: a new run's ``out`` already holds a run or other files, or is in use.
        ValueError: an ``address`` with ``workers == 0``.
        CheckpointError: resuming from a checkpoint of another model or weights, or one whose
            model file or labels changed since (checked before the model loads).
        UnknownNameError, ModelUnavailableError, ModelFileError: bad model, encoding or class names.
        ModelRunError: the network raised or gave non-finite scores; one line naming the model,
            the generation and the last generation saved (written first where it was not yet).
        UserError: (``resume``) an emitter state the emitter does not accept.
        MissingExtraError: a tracker whose package is not installed (before any work; also
            UserError for an unknown tracker or a place it cannot use).
        KeyboardInterrupt: after writing a checkpoint of the last finished generation.
        TypeError: ``config`` is not a :class:`RunConfig`.
    """
    if not isinstance(config, RunConfig):
        raise TypeError(f"evolve() takes a RunConfig as its config, not {type(config).__name__}")
    check_cluster_choice(config.address, config.workers)
    tracking = Tracking(trackers)
    tracking.check(config.out)
    keep_freed_memory()
    if resume:
        # The run folder names the model file (and labels) it was made with: check them against
        # its record before loading, since loading is where a changed or planted file would act.
        checkpoint = checkpoint or read_latest_checkpoint(config.out, GENOME_CLASSES)
        _check_kept_settings(config, checkpoint)
        changed = source_change(checkpoint.model_source, config.model)
        if changed:
            raise CheckpointError(f"--resume {config.out}: {changed}; refusing to mix two networks")
    model = load_or_train(config.model)
    if config.workers and hasattr(model.network, "share_traffic"):  # an endpoint: rate and requests
        model.network.share_traffic(config.scorers)  # in flight are the run's, over all scorer actors
    encoding = make_encoding(config, model.spec)
    if not resume:  # older runs may hold such settings, ignored then as now
        _check_settings_apply(config, encoding)
    names = [model.spec.class_names[i] for i in class_ids(config, model.spec)]
    check_device(config.device)
    device = pick_device(config.device)
    vary_device = _vary_device(config, encoding, device, len(names))
    # On Ray the scorer actors' device decides the streams (taken from the backend once started).
    scheme = rng_scheme(config.vary_on, device, get_emitter(config.emitter), encoding)
    with claimed_run_folder(
        config.out, "evolve", resume=resume, remove_temporaries=True, prelude=EVOLVE_PRELUDE
    ):
        run = run_token(config.out)
        if resume:
            checkpoint = checkpoint or read_latest_checkpoint(config.out, GENOME_CLASSES)
            _check_same_run(config.out, checkpoint, run)
            archive, records, start, next_id = _resumed_state(config, model, encoding, checkpoint, names)
            if vary_device is not None:
                move_archive(archive, vary_device)
        else:
            if checkpoint_uris(config.out):
                raise RunFolderError(holds_a_run(config.out))
            archive, records, start, next_id = ClassArchive(names), [], 0, 0
        check_writable(config.out)
        search = make_search(
            config,
            model,
            archive,
            toolbox=toolbox or _toolbox(encoding, vary_device),
            generation=start,
            next_id=next_id,
            logbook=_logbook(records),
            backend=backend,
            vary_device=vary_device,
        )
        restore = getattr(search.emitter, "restore", None)
        if resume and restore is not None:
            try:
                restore(checkpoint.emitter_state)  # what the emitter learnt, before any generation
            except BaseException:
                search.backend.close()
                raise
        # After the backend is up: an unreachable Ray address is one line, not a settings table and a line.
        logger.info("run configuration:\n%s", config.describe())
        # Checkpoints render only the cells that changed since the last one (or since the
        # checkpoint this run resumed from).
        thumbnails = ThumbnailCache(checkpoint.thumbnails if resume else None)

        scheme = getattr(search.backend, "rng_scheme", scheme)
        if resume:
            warn_scheme_change(config.out, checkpoint.rng_scheme, scheme)
        spent = _queries_spent(config, checkpoint, records) if resume else 0
        if config.max_queries is not None and config.max_queries < spent:
            raise UserError(
                f"--max-queries {config.max_queries} is below the {spent} images {config.out} already "
                f"sent; give more than {spent} to continue it"
            )
        budget = QueryBudget(config.max_queries, spent)
        # Images sent to a server, or under a budget, are recorded before each generation sends them.
        keeps_ledger = config.max_queries is not None or is_endpoint(config.model)

        # In one process on a CUDA GPU the thumbnails are rendered there too: the CPU renderer
        # draws 103-135 paper-scale elites a second on 2 cores, 7-10 s for a checkpoint whose
        # 1,000 cells all changed. On Ray the driver's CPU does.
        render_device = device if config.workers == 0 and device.type == "cuda" else torch.device("cpu")

        render = partial(render_uint8, encoding, device=render_device)

        def save() -> None:
            state = getattr(search.emitter, "state", None)
            elites = host_archive(archive)  # genomes on the host (copied once from a device)
            save_checkpoint(
                config,
                model,
                elites,
                generation=search.generation - 1,
                next_id=search.next_id,
                stats=list(search.logbook),
                thumbnails=thumbnails,
                emitter_state=state() if state is not None else None,
                rng_scheme=scheme,
                queries=budget.spent,
                render=render,
                run=run,
            )
            tracking.checkpoint(search.generation - 1, elites, thumbnails, render)

        tracking.start(config, model, archive, first_generation=start, resumed=resume, records=records)
        try:
            search = _run_generations(
                config,
                search,
                model,
                save,
                show_progress=show_progress,
                on_generation=tracking.observer(on_generation),
                budget=budget,
                ledger=keeps_ledger,
            )
        except BaseException as error:
            tracking.finish("KILLED" if isinstance(error, KeyboardInterrupt) else "FAILED")
            raise
        tracking.finish()
        # Callers (reports, experiments) read the elites as numpy arrays.
        search.archive.genomes = host_archive(search.archive).genomes
        return search


def _toolbox(encoding, vary_device: torch.device | None) -> base.Toolbox:
    """The encoding's toolbox: numpy operators, or torch operators on ``vary_device``."""
    return make_toolbox(encoding) if vary_device is None else device_toolbox(encoding, vary_device)


def _vary_device(config: RunConfig, encoding, device: torch.device, cells: int) -> torch.device | None:
    """The device this process makes children on (``None``: the host, or Ray's actors).

    Raises:
        UserError: ``--vary-on scorer`` with an emitter or encoding without operators on a
            device, or a GPU without room for the archive and a generation.
    """
    # Asked on Ray too, for its refusals; there the scorer actors decide for their own device.
    on_device = varies_on_device(config.vary_on, device, get_emitter(config.emitter), encoding)
    if not on_device or config.workers:
        return None
    check_generation_memory(encoding, device, cells, config.population)
    return device


# Confidence levels of the queries-to-fool curve: the cells at or above each, per generation.
FOOLED_LEVELS = {"fooled_50": 0.5, "fooled_90": 0.9, "fooled_99": 0.99, "fooled_9999": 0.9999}


def _check_settings_apply(config: RunConfig, encoding) -> None:
    """Refuse settings a new run would silently ignore.

    Raises:
        UserError: ``scorers`` above 1 without Ray workers, a crossover probability for an
            encoding without crossover (no ``mate``), or an encoding setting the run's
            encoding does not read (:func:`~fooling.evo.config.check_encoding_settings`).
    """
    if config.scorers > 1 and config.workers == 0:
        raise UserError(
            f"--scorers {config.scorers} sets Ray's scorer actors, but --workers is 0 (everything in "
            "this process, one scorer); add --workers N or drop --scorers"
        )
    if config.crossover_probability > 0 and not hasattr(encoding, "mate"):
        raise UserError(
            f"--crossover-probability {config.crossover_probability}: the {config.encoding} encoding "
            "has no crossover (the paper's CPPNs are mutated only); drop it"
        )
    check_encoding_settings(config)


def _generation_queries(config: RunConfig, search: Search, model: LoadedModel) -> int:
    """Images the next generation of ``search`` sends: its evaluations, each ``config.crops`` times.

    For an endpoint whose input has a fixed batch size, with the padding of each request:
    each task's scoring calls (:meth:`Evaluator.score_sizes`) are padded to whole batches,
    and the server receives (and may bill) the padding too. Where scorers run on devices of
    two kinds (which split a task differently), the larger count.
    """
    per_child = 1 if len(search.archive) == 0 else search.emitter.evaluations_per_child
    images = round(search.population * per_child) * config.crops
    sent_for = getattr(model.network, "images_sent_for", None)
    if sent_for is None:
        return images
    # Endpoint models are scored, never differentiated: no emitter that refines runs on them.
    assert per_child == 1, f"{search.emitter.name} costs {per_child} evaluations a child on an endpoint"
    devices = getattr(search.backend, "scoring_devices", None) or (pick_device(config.device),)
    return max(
        sum(
            sent_for(size * config.crops)
            for count in search.task_sizes
            for size in Evaluator.score_sizes(count, model.spec, config.crops, device)
        )
        for device in devices
    )


def _query_record(search: Search, budget: QueryBudget) -> dict:
    """The stats columns of the queries-to-fool curve after a generation."""
    fitness = np.asarray(search.archive.fitness.tolist())  # host numbers, wherever the archive is
    return {"queries": budget.spent, **{k: int((fitness >= v).sum()) for k, v in FOOLED_LEVELS.items()}}


def _check_kept_settings(config: RunConfig, checkpoint: Checkpoint) -> None:
    """Refuse to resume ``checkpoint`` with settings other than its run's (the ones a run keeps).

    :func:`resume_config` refuses them on the command line; a config built by hand and given to
    :func:`evolve` with ``resume`` is checked here, so that the archive is never continued
    under another seed, population or mutation rate. The run folder (``out``) may have moved;
    the model is checked with its weights (:func:`_resumed_state`).

    Raises:
        UserError: a setting outside :data:`~fooling.evo.config.RESUMABLE_OVERRIDES` differs.
    """
    stored = checkpoint.config
    for field in dataclasses.fields(RunConfig):
        name = field.name
        if name in RESUMABLE_OVERRIDES or name in ("out", "model"):
            continue
        if getattr(config, name) != getattr(stored, name):
            raise UserError(
                f"resuming {config.out}: {name} {getattr(config, name)!r} differs from the run's "
                f"{getattr(stored, name)!r}; a resumed run keeps its settings (only "
                f"{', '.join(RESUMABLE_OVERRIDES)} may change: resume_config(out, generations=...))"
            )


def _check_same_run(out: str, checkpoint: Checkpoint, run: str | None) -> None:
    """Refuse to continue ``checkpoint`` as run ``out`` when another run wrote it.

    A checkpoint copied into ``out/checkpoints`` from another run folder would otherwise be
    continued silently, its archive beside this run's statistics and ledger. Runs and
    checkpoints written before run tokens have none and are not compared.

    Raises:
        CheckpointError: the checkpoint names another run than ``out``'s record.
    """
    if run is not None and checkpoint.run is not None and checkpoint.run != run:
        raise CheckpointError(
            f"--resume {out}: {checkpoint.path} was written by another run (run {checkpoint.run}, "
            f"not this folder's {run}); refusing to continue it as this one: move it out of "
            f"{join(out, 'checkpoints')} to resume this run's own checkpoints"
        )


def _queries_spent(config: RunConfig, checkpoint: Checkpoint, records: list[dict]) -> int:
    """Images a resumed run had sent.

    The checkpoint's count (else its stats' evaluations: older runs), or the run folder's
    ledger where it is larger: generations after the last checkpoint sent their images too.

    Raises:
        QueryLedgerError: a ledger that is not one count.
    """
    if checkpoint.queries is not None:
        saved = checkpoint.queries
    else:
        saved = sum(int(record.get("evals") or 0) for record in records) * config.crops
    recorded = read_ledger(config.out)
    if recorded is None and config.max_queries is not None and not is_endpoint(config.model):
        # A local model's run keeps a ledger only under a budget (a write per generation).
        logger.warning(
            "%s kept no query ledger (it ran without --max-queries): its count continues from the "
            "checkpoint's %d images; generations a killed run scored after that checkpoint are not in it",
            config.out,
            saved,
        )
    if recorded is not None and recorded > saved:
        logger.warning(
            "%s: %d images were sent after the last checkpoint (%d before it); they count as sent",
            config.out,
            recorded - saved,
            saved,
        )
        return recorded
    return saved


def _resumed_state(
    config: RunConfig, model: LoadedModel, encoding, checkpoint: Checkpoint, names: list[str]
) -> tuple[ClassArchive, list[dict], int, int]:
    """``(archive, stats records, first generation, next id)`` of a run continuing from ``checkpoint``.

    ``names`` are the cells the model and config give (the classes of ``config.classes``).

    Raises:
        CheckpointError: the checkpoint was made with another model, weights or labels, or
            its archive's classes are not ``names`` (e.g. more classes than the model has).
        UserError: genomes the run's encoding does not accept.
    """
    changed = model_change(checkpoint.model_source, model)  # labels change with the same weights
    if changed:
        raise CheckpointError(f"--resume {config.out}: {changed}; refusing to mix two networks")
    if checkpoint.model != config.model or checkpoint.weights_hash != model.weights_hash:
        raise CheckpointError(
            f"{checkpoint.path} was made with {checkpoint.model} (weights {checkpoint.weights_hash}), "
            f"not {config.model} (weights {model.weights_hash}); refusing to mix them"
        )
    archive = checkpoint.archive
    if list(archive.class_names) != names:  # a run folder from someone else: its cells must be the model's
        held, given = len(archive.class_names), len(names)
        detail = f"{held} classes where" if held != given else "other class names than"
        raise CheckpointError(
            f"{checkpoint.path} holds {detail} its model {config.model} and --classes give {given}; "
            "not what a run writes, refusing to resume it"
        )
    encoding.validate(archive.genomes.take(archive.occupied_cells()))
    # Bounded by the run's generations, stored or given now (a resumed run may have more).
    generations = max(config.generations, checkpoint.config.generations)
    records = read_stats(config.out, generations=generations, resuming=True)
    records = [r for r in records if r["gen"] <= checkpoint.generation]
    logger.info("resuming %s after generation %d", config.out, checkpoint.generation)
    return archive, records, checkpoint.generation + 1, checkpoint.next_id


def _run_generations(
    config: RunConfig,
    search: Search,
    model: LoadedModel,
    save: Callable[[], None],
    *,
    show_progress: bool,
    on_generation: Callable[[Search], None] | None,
    budget: QueryBudget | None = None,
    ledger: bool = False,
) -> Search:
    """Run ``search`` to ``config.generations``, checkpointing with ``save``; closes its backend.

    Saves every ``config.checkpoint_every`` generations and at the end; on Ctrl-C, SIGTERM, a
    backend failure or a model that fails while scoring, saves the last whole generation first.
    ``budget`` counts the images ``model`` is sent, padding included (:func:`_generation_queries`);
    each generation's stats record gets ``queries`` and the cells fooled at each
    :data:`FOOLED_LEVELS`. The run stops, checkpointed, before a generation that would exceed it.
    With ``ledger``, the count the generation will reach is written to the run folder before it
    sends anything (:mod:`~fooling.evo.store.queries`).
    """
    budget = budget or QueryBudget(None)
    saved_at = search.generation - 1
    started = time.perf_counter()
    stop = _StopRequest()
    try:
        with (
            logging_redirect_tqdm(),
            tqdm(
                total=config.generations,
                initial=min(search.generation, config.generations),
                desc="generation",
                unit="gen",
                disable=not show_progress,
                dynamic_ncols=True,
            ) as bar,
        ):
            while search.generation < config.generations and not stop.requested:
                needed = _generation_queries(config, search, model)
                if not budget.allows(needed) and search.generation == 0:
                    raise UserError(
                        f"--max-queries {budget.limit} is below the {needed} images generation 0 sends; "
                        f"give at least {needed}"
                    )
                if not budget.allows(needed):
                    logger.warning(
                        "query budget spent: %d of --max-queries %d images sent, generation %d needs %d "
                        "more; continue with --resume %s --max-queries N",
                        budget.spent,
                        budget.limit,
                        search.generation,
                        needed,
                        config.out,
                    )
                    break
                if ledger:
                    write_ledger(config.out, budget.spent + needed)
                record = search.step()
                budget.spend(needed)
                search.logbook[-1].update(_query_record(search, budget))
                if on_generation is not None:
                    on_generation(search)
                bar.update(1)
                bar.set_postfix(
                    median=f"{100 * record['median']:.2f}%",
                    max=f"{100 * record['max']:.2f}%",
                    evals_s=f"{record['evals_per_s']:.0f}",
                    **({"ray": search.backend.summary()} if hasattr(search.backend, "summary") else {}),
                    refresh=False,
                )
                if config.checkpoint_every and search.generation % config.checkpoint_every == 0:
                    save()
                    saved_at = search.generation - 1
                    # The progress bar is off in background runs and job logs: one line per checkpoint.
                    logger.info(
                        "generation %d checkpointed: median %.2f%%, max %.2f%%, coverage %.0f%%, "
                        "%.0f evaluations/s",
                        saved_at,
                        100 * record["median"],
                        100 * record["max"],
                        100 * record["coverage"],
                        record["evals_per_s"],
                    )
    except ModelRunError as error:
        # Raised before the generation's insertions (Search inserts only after all of its
        # results came back): the archive is whole. Save it, and say so on the error's one line.
        if search.generation - 1 > saved_at and search.generation > 0 and not search.inserting:
            save()
        saved = (
            f"generation {search.generation - 1} is the last one saved in {config.out}"
            if search.generation > 0
            else "no generation was saved"
        )
        raise ModelRunError(f"{error}; {saved}") from error
    except (KeyboardInterrupt, BackendError) as error:
        # The backend fails between insertions (Search inserts only after all of a
        # generation's results came back), so the archive is whole: save it.
        if search.generation - 1 > saved_at and search.generation > 0 and not search.inserting:
            save()
        logger.warning(
            "%s: generation %d is the last one saved in %s",
            "interrupted" if isinstance(error, KeyboardInterrupt) else "stopped",
            search.generation - 1,
            config.out,
        )
        raise
    finally:
        stop.restore()
        search.backend.close()
    if search.generation - 1 > saved_at:
        save()
    if stop.requested:
        logger.warning(
            "interrupted: checkpoint of generation %d written to %s",
            search.generation - 1,
            config.out,
        )
        raise KeyboardInterrupt
    stats = search.archive.stats()
    logger.info(
        "generation %d: median %.2f%%, mean %.2f%%, coverage %.0f%% (%.1f s)",
        search.generation - 1,
        100 * stats["median"],
        100 * stats["mean"],
        100 * stats["coverage"],
        time.perf_counter() - started,
    )
    return search
