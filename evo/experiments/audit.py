"""``fooling audit``: how easily is *this* classifier fooled? One command, one report.

Stages, each within the budget (:data:`BUDGETS`):

1. CPPN search (MAP-Elites, one cell per class) and 2. direct-encoding search, each with
   ``generations x population`` evaluations, written as ordinary run folders ``OUT/cppn`` and
   ``OUT/direct`` (``fooling report``, ``fooling transfer`` read them);
3. gradient ascent (Simonyan et al.) on up to ``ascent_classes`` classes, where the model has
   gradients (not for ONNX files);
4. transfer: the best fooling image of each class scored by one reference model with the
   same class names (``imagenet-lite0`` for ImageNet classes, ``mnist-lenet`` for digits, or
   ``--reference``);
5. with ``--real-images DIR`` (``DIR/CLASS/*.jpg``), the model's confidence on real photos of
   each class, beside the fooling confidence.

Results: ``OUT/audit.parquet`` (one row per class), ``OUT/report.md`` and a self-contained
``OUT/report.html`` (images inline, sortable per-class table, histogram, no network access).
``OUT`` is a local folder or a storage URI (``s3://``, ``gs://``, ``file://``), as for ``evolve``.

An interrupted audit continues with :func:`resume_audit` (``fooling audit --resume OUT``): its
settings are in ``OUT/audit-settings.json`` from the start, each search checkpoints about ten
times and continues from its newest checkpoint, and the later stages run again. Searches
continue bit for bit, so the report is the one an uninterrupted audit writes.
"""

from __future__ import annotations

import contextlib
import dataclasses
import datetime
import json
import logging
import time
from collections.abc import Iterator

import numpy as np
import pandas as pd
import torch
from tqdm.auto import tqdm

from fooling.encodings import GENOME_CLASSES, UserError
from fooling.evo.config import RunConfig, check_cluster_choice
from fooling.evo.experiments.elites import Elites, load_elites
from fooling.evo.models import load_or_train, named_stored_model
from fooling.evo.report.audit_page import METHOD_NAMES, METHODS, THRESHOLDS, write_html, write_markdown
from fooling.evo.report.audit_page import png_data_uri as _png_data_uri
from fooling.evo.run import evolve, resume_checkpoint
from fooling.evo.run import logger as run_logger
from fooling.evo.store.checkpoint import CheckpointError, checkpoint_uris, read_latest_checkpoint
from fooling.evo.store.location import check_location, folder_entries, join, read_bytes, write_bytes
from fooling.evo.store.runfolder import (
    LOCK_NAME,
    RunFolderError,
    claimed_run_folder,
    folder_kind,
)
from fooling.evo.store.tables import read_stats, write_columns
from fooling.fitness import (
    LoadedModel,
    ModelUnavailableError,
    Scorer,
    error_line,
    get_model_spec,
    imagenet_class_names,
)
from fooling.fitness.engines import check_engine
from fooling.fitness.gradient import ascent
from fooling.fitness.images import class_photo_folders, real_photo_confidence
from fooling.fitness.sources import describe_model, differentiable, source_change

logger = logging.getLogger(__name__)


@dataclasses.dataclass(frozen=True)
class Budget:
    """How much an audit may spend.

    Attributes:
        generations: generations of each search (CPPN and direct), the random first one included.
        population: children per generation.
        ascent_steps: gradient-ascent steps (one forward and one backward pass each).
        ascent_classes: classes given a gradient-ascent image (0: all), evenly spread.
    """

    generations: int
    population: int
    ascent_steps: int
    ascent_classes: int

    @property
    def evaluations(self) -> int:
        """Images scored by each search (CPPN and direct alike)."""
        return self.generations * self.population


BUDGETS = {
    "small": Budget(generations=20, population=50, ascent_steps=50, ascent_classes=20),
    "medium": Budget(generations=100, population=200, ascent_steps=200, ascent_classes=100),
    "large": Budget(generations=1000, population=400, ascent_steps=300, ascent_classes=0),
}


# The audit's own settings, written before any search: what --resume continues with. The
# scoring options (device, engine) are stored as defaults a resumed audit may change; the Ray
# workers, scorers and cluster address are never stored (a shared folder must not choose
# the cluster this machine connects to).
SETTINGS_NAME = "audit-settings.json"
# Largest settings file read: one is about 200 bytes.
SETTINGS_SIZE_LIMIT = 64 * 1024
SETTINGS_KINDS: dict[str, tuple[type, ...]] = {
    "model": (str,),
    "budget": (str,),
    "real_images": (str, type(None)),
    "reference": (str, type(None)),
    "seed": (int,),
    "device": (str, type(None)),
    "engine": (str,),
}
# Checkpoints per search: what an interrupted audit loses is at most a tenth of a search.
CHECKPOINTS_PER_SEARCH = 10
# What the progress bar counts.
STAGES = ("CPPN search", "direct search", "gradient ascent", "transfer", "real photos", "report")


def read_settings(out: str) -> dict:
    """The settings of the audit in ``out``, type-checked (the folder may be someone else's).

    Raises:
        RunFolderError: ``out`` holds no audit, or its settings file is damaged.
    """
    if folder_entries_or_none(out) is None:
        raise RunFolderError(f"--resume {out}: no such folder")
    try:
        kind = folder_kind(out)
    except RunFolderError:
        kind = None
    if kind != "audit":
        holds = f"it holds {'an' if kind == 'evolve' else 'a'} {kind} run" if kind else "no audit there"
        raise RunFolderError(f"--resume {out} is not an audit folder ({holds}); start an audit with --out")
    try:
        settings = json.loads(read_bytes(join(out, SETTINGS_NAME), SETTINGS_SIZE_LIMIT))
    except FileNotFoundError:
        raise RunFolderError(
            f"--resume {out}: no {SETTINGS_NAME} (an audit from a version without --resume)"
        ) from None
    except (OSError, ValueError, UnicodeDecodeError) as error:
        raise RunFolderError(f"--resume {out}: {SETTINGS_NAME} is damaged ({error_line(error)})") from None
    if not isinstance(settings, dict):
        raise RunFolderError(f"--resume {out}: {SETTINGS_NAME} is damaged (not a JSON object)")
    for name, kinds in SETTINGS_KINDS.items():
        value = settings.get(name)
        if not isinstance(value, kinds) or isinstance(value, bool):
            raise RunFolderError(f"--resume {out}: {SETTINGS_NAME} is damaged ({name}: {str(value)[:40]!r})")
    return {name: settings[name] for name in SETTINGS_KINDS}


def folder_entries_or_none(out: str) -> list[str] | None:
    """:func:`folder_entries`, with a file reported as one entry."""
    try:
        return folder_entries(out)
    except NotADirectoryError:
        return ["(a file)"]


def resume_audit(
    out: str,
    *,
    given: dict | None = None,
    device: str | None = None,
    engine: str | None = None,
    workers: int = 0,
    scorers: int = 1,
    address: str | None = None,
    show_progress: bool = True,
    trackers: list | None = None,
) -> AuditResult:
    """Continue the interrupted (or finished) audit in ``out`` with its own settings.

    Each search continues from its newest checkpoint (one that never checkpointed starts
    again), then every later stage runs again; stale locks of killed processes are taken over.

    Args:
        out: the audit folder.
        given: audit settings given again (``model``, ``budget``, ``real_images``,
            ``reference``, ``seed``; ``None`` values: not given); each must equal the stored one.
        device: scoring device (``None``: the audit's).
        engine: scoring engine (``None``: the audit's; another one ends with other bits).
        workers: mutator actors of the searches, as :func:`audit` (never read from the folder).
        scorers: scorer actors of the searches (Ray only).
        address: Ray cluster address (never read from the folder).
        show_progress: show a progress bar over the audit's stages.
        trackers: experiment trackers each search reports to, as :func:`audit`.

    Raises:
        RunFolderError: ``out`` holds no audit.
        UserError: a setting given that differs from the audit's, or a model or reference model
            behind an endpoint that ``given`` does not name (nothing is sent to an address read
            from the folder; see :func:`~fooling.evo.models.named_stored_model`).
        CheckpointError: a search's model file or labels changed since (before loading them).
    """
    check_location(out, "--resume")
    settings = read_settings(out)
    given = dict(given or {})
    for name in ("model", "reference"):  # an endpoint the folder names: only where the user says
        if settings[name] is not None:
            given[name] = named_stored_model(
                settings[name], given.get(name), where=f"--resume {out}", flag=f"--{name}"
            )
    for name, value in given.items():
        if value is not None and value != settings[name]:
            raise UserError(
                f"--{name.replace('_', '-')} {value} differs from the audit's {settings[name]}; a resumed "
                "audit keeps its settings (only --device, --engine, --workers, --scorers, --address change)"
            )
    return audit(
        settings["model"], out, budget=settings["budget"], real_images=settings["real_images"],
        reference=settings["reference"], seed=settings["seed"],
        device=device if device is not None else settings["device"], engine=engine or settings["engine"],
        workers=workers, scorers=scorers, address=address, show_progress=show_progress, resume=True,
        trackers=trackers,
    )  # fmt: skip


def _ascent_classes(budget: Budget) -> str:
    return "all classes" if budget.ascent_classes == 0 else f"up to {budget.ascent_classes} classes"


def budget_table() -> str:
    """The budgets as a Markdown table (for ``--help``, the README and reports)."""
    lines = [
        "| budget | CPPN evaluations | direct evaluations | gradient ascent |",
        "|---|---|---|---|",
    ]
    for name, budget in BUDGETS.items():
        lines.append(
            f"| {name} | {budget.evaluations:,} ({budget.generations} x {budget.population}) | "
            f"{budget.evaluations:,} | {budget.ascent_steps} steps, {_ascent_classes(budget)} |"
        )
    return "\n".join(lines)


@dataclasses.dataclass
class AuditResult:
    """What an audit found.

    Attributes:
        table: one row per class: ``class_id``, ``class_name``, ``cppn``, ``direct``, ``ascent``
            (confidence of the best image in that class, NaN where not run), ``best``,
            ``best_method``, ``reference`` (the reference model's confidence in the class for
            the best image), ``real`` (mean confidence on real photos of the class) and
            ``real_count`` (photos).
        summary: JSON-able facts: model, budget, evaluations, counts per threshold, notes.
        out: the audit folder (a local path or a storage URI).
        files: URIs of the files written.
    """

    table: pd.DataFrame
    summary: dict
    out: str
    files: list[str]


@contextlib.contextmanager
def _quiet(target: logging.Logger) -> Iterator[None]:
    """Only warnings and errors from ``target`` while inside."""
    level = target.level
    target.setLevel(logging.WARNING)
    try:
        yield
    finally:
        target.setLevel(level)


def _reference_for(model: LoadedModel) -> str | None:
    """The default reference model: one with the same class names, other than ``model``."""
    names = tuple(model.spec.class_names)
    if names == tuple(str(digit) for digit in range(10)):
        return "mnist-lenet-seed1" if model.spec.name == "mnist-lenet" else "mnist-lenet"
    if len(names) == 1000 and names == imagenet_class_names():
        return "imagenet-lite1" if model.spec.name == "imagenet-lite0" else "imagenet-lite0"
    return None


def _evenly(count: int, chosen: int) -> np.ndarray:
    """``chosen`` class indices spread evenly over ``count`` (all when ``chosen`` is 0 or more)."""
    if chosen == 0 or chosen >= count:
        return np.arange(count)
    return np.unique(np.linspace(0, count - 1, chosen).round().astype(np.int64))


def audit(
    model_name: str,
    out: str,
    *,
    budget: str = "small",
    real_images: str | None = None,
    reference: str | None = "auto",
    seed: int = 0,
    device: str | None = None,
    engine: str = "auto",
    workers: int = 0,
    scorers: int = 1,
    address: str | None = None,
    show_progress: bool = True,
    resume: bool = False,
    trackers: list | None = None,
) -> AuditResult:
    """Audit ``model_name``: search for fooling images within ``budget``; write the report.

    Args:
        model_name: anything ``--model`` takes (registry name, ``timm:``, ``torchvision:``,
            a model file reference, a plugin).
        out: a new or empty folder: a local path or a storage URI (``s3://``, ``gs://``, ``file://``).
        budget: a key of :data:`BUDGETS`.
        real_images: ``DIR/CLASS/IMAGE`` photos, or ``None``.
        reference: the model fooling images are transferred to; ``"auto"`` picks one with the
            same class names (see module docs); ``None`` or ``"none"``: no transfer.
        seed: seed of the searches and of the gradient ascent.
        device: scoring and ascent device (``None``: CUDA when present, else CPU).
        engine: scoring engine of the searches and the scorers (``"auto"``, ``"torch"``,
            ``"onnxruntime"``).
        workers: mutator actors of the searches (0: no Ray; see ``fooling evolve``).
        scorers: scorer actors of the searches (Ray only).
        address: Ray cluster address (``None``: start a local instance).
        show_progress: show a progress bar over the audit's stages.
        resume: continue the audit in ``out`` (call :func:`resume_audit`, which reads its settings).
        trackers: experiment trackers (``NAME[:ARG]``, as :func:`~fooling.evo.run.evolve`) each
            search reports to (``OUT/cppn``, ``OUT/direct``).

    Returns:
        The per-class table, the summary, the folder and the files written.

    Raises:
        UserError: unknown budget, a reference model with none of the model's classes, bad
            photos folder, an ``address`` with ``workers == 0``.
        RunFolderError: ``out`` not new or empty (or, with ``resume``, no audit), or in use.
        CheckpointError: with ``resume``, a search's model file or labels changed since.
        StorageError: a storage URI that cannot be reached or used.
        UnknownNameError, ModelUnavailableError, ModelFileError: a model that cannot be had.
    """
    if budget not in BUDGETS:
        raise UserError(f"--budget must be one of {', '.join(BUDGETS)}, not {budget!r}")
    plan = BUDGETS[budget]
    engine = check_engine(engine)  # before the folder is claimed: its settings record the name
    check_cluster_choice(address, workers)
    check_location(out, "--out")
    entries = folder_entries_or_none(out)
    if not resume and entries is not None and any(name != LOCK_NAME for name in entries):
        if SETTINGS_NAME in entries:
            raise RunFolderError(
                f"--out {out} holds an audit; continue it with fooling audit --resume {out}, "
                "or choose another folder"
            )
        raise RunFolderError(f"--out {out} already exists and is not empty; choose another folder")
    if resume:
        _check_sources(out, model_name)  # before loading: a changed file must not act
    model = load_or_train(model_name)
    if reference not in (None, "auto", "none"):
        # A bad name, or a model with none of these classes (the column would stay empty), fails
        # before any search.
        shared = {n.lower() for n in get_model_spec(reference).class_names} & {
            n.lower() for n in model.spec.class_names
        }
        if not shared:
            raise UserError(
                f"--reference {reference} has none of {model.spec.name}'s class names: its "
                "confidence in a class cannot be read (give a model of the same classes)"
            )
    # The photos are scored before any search, so an unreadable one fails before anything is written.
    photos = class_photo_folders(real_images, model.spec) if real_images is not None else {}
    real = real_photo_confidence(Scorer(model, device=device, engine=engine), photos) if photos else {}
    with claimed_run_folder(out, "audit", resume=resume, prelude=(SETTINGS_NAME,)):
        if not resume:
            settings = dict(model=model_name, budget=budget, real_images=real_images,
                            reference=reference, seed=seed, device=device, engine=engine)  # fmt: skip
            write_bytes(join(out, SETTINGS_NAME), (json.dumps(settings, indent=1) + "\n").encode())
        started = time.perf_counter()
        count = len(model.spec.class_names)
        table = _class_table(model.spec.class_names)
        images: dict[str, dict[int, str]] = {method: {} for method in METHODS}
        best_images: dict[int, torch.Tensor] = {}
        notes: list[str] = []
        has_gradients = differentiable(model)
        if reference == "auto":
            reference = _reference_for(model)
            if reference is None:
                notes.append(
                    "no reference model shares this model's class names: no transfer (give --reference)"
                )
        elif reference == "none":
            reference = None
        with tqdm(total=len(STAGES), desc="audit", unit="stage", disable=not show_progress) as bar:
            for method in ("cppn", "direct"):
                bar.set_description(f"audit: {METHOD_NAMES[method]} search")
                config = RunConfig(
                    model=model_name, encoding=method, generations=plan.generations,
                    population=plan.population, seed=seed, out=join(out, method), workers=workers,
                    scorers=scorers, address=address, device=device, engine=engine,
                    checkpoint_every=max(1, plan.generations // CHECKPOINTS_PER_SEARCH),
                )  # fmt: skip
                # The stage bar says what runs; each run's settings are in its folder.
                with _quiet(run_logger):
                    _search(config, resume, trackers)
                elites = load_elites(join(out, method), model_name)  # the audit's model, already checked
                _add_elites(table, images[method], best_images, method, elites)
                bar.update(1)
            bar.set_description("audit: gradient ascent")
            if has_gradients:
                chosen = _evenly(count, plan.ascent_classes)
                classes = torch.as_tensor(chosen)
                ascended, history = ascent(model, classes, steps=plan.ascent_steps, seed=seed, device=device)
                final = history.probabilities[-1].numpy()
                table.loc[chosen, "ascent"] = final[np.arange(len(chosen)), chosen].astype(np.float64)
                for row, class_id in enumerate(chosen):
                    images["ascent"][int(class_id)] = _png_data_uri(ascended[row].cpu())
            else:
                notes.append(
                    f"{model.spec.name} has no gradients (ONNX Runtime or an endpoint): no gradient ascent"
                )
            bar.update(1)
            bar.set_description("audit: transfer")
            table["best"] = table[["cppn", "direct"]].max(axis=1)
            table["best_method"] = np.where(table["direct"] > table["cppn"].fillna(-1), "direct", "cppn")
            if reference is not None:
                try:
                    _transfer(table, best_images, model, reference, device, engine)
                except ModelUnavailableError as error:
                    notes.append(f"reference {reference} unavailable here: {error_line(error)}")
                    reference = None
            bar.update(1)
            bar.set_description("audit: real photos")
            for class_id, (confidence, photo_count) in real.items():  # scored before the searches
                table.at[class_id, "real"] = confidence
                table.at[class_id, "real_count"] = photo_count
            bar.update(1)
            bar.set_description("audit: report")
            summary = _summary(
                model_name, model, table, plan, budget, reference, real_images, notes, has_gradients
            )
            summary["seconds"] = round(time.perf_counter() - started, 1)
            summary["queries"] = {
                method: queries_to_fool(
                    read_stats(join(out, method), generations=plan.generations), len(table)
                )
                for method in ("cppn", "direct")
            }
            files = _write(out, table, summary, images)
            bar.update(1)
        return AuditResult(table=table, summary=summary, out=out, files=files)


def _class_table(names: list[str]) -> pd.DataFrame:
    """The per-class table before any stage: ids and names, every result NaN, no photos."""
    table = pd.DataFrame({"class_id": np.arange(len(names)), "class_name": list(names)})
    for column in (*METHODS, "reference", "real"):
        table[column] = np.nan
    table["real_count"] = 0
    return table


def _add_elites(
    table: pd.DataFrame,
    images: dict[int, str],
    best_images: dict[int, torch.Tensor],
    method: str,
    elites: Elites,
) -> None:
    """Enter one search's elites: column ``method`` of ``table``, their images, the best images so far.

    Args:
        table: the per-class table (its ``method`` column is filled).
        images: class id -> data URI of the method's image (filled).
        best_images: class id -> the better image of CPPN and direct so far (updated).
        method: ``"cppn"`` (entered first) or ``"direct"``.
        elites: the search's elites.
    """
    ids = list(elites.cells)  # every class has a cell: cell = class id (names can repeat)
    table.loc[ids, method] = elites.fitness.astype(np.float64)
    for row, class_id in enumerate(ids):
        images[class_id] = _png_data_uri(elites.images[row])
        if method == "cppn" or not table.at[class_id, "cppn"] >= elites.fitness[row]:
            best_images[class_id] = elites.images[row]  # the better of CPPN and direct


def _check_sources(root: str, model_name: str) -> None:
    """Refuse to resume the audit in ``root`` when its model file or labels changed since.

    Each search's newest checkpoint records the model's file and labels; they are compared
    with the files now there before the model loads (where a changed file would act).

    Raises:
        CheckpointError: a file changed, naming it.
    """
    for method in ("cppn", "direct"):
        folder = join(root, method)
        if checkpoint_uris(folder):
            changed = source_change(read_latest_checkpoint(folder, GENOME_CLASSES).model_source, model_name)
            if changed:
                raise CheckpointError(f"--resume {root}: {changed}; refusing to mix two networks")


def _search(config: RunConfig, resume: bool, trackers: list | None = None) -> None:
    """Run the search ``config`` describes; with ``resume``, continue it from its newest checkpoint.

    A search that has all its generations is left as it is; one that never checkpointed (killed
    early) starts again: :func:`evolve` removes what it left (its record, statistics and the
    temporaries of a killed first checkpoint) when it claims the folder for a new run
    (:func:`~fooling.evo.store.runfolder.discard_unstarted`).
    """
    folder = config.out
    if resume and checkpoint_uris(folder):
        # The model is the audit's (checked by resume_audit), never one a search folder names.
        stored, checkpoint = resume_checkpoint(
            folder, model=config.model, device=config.device, engine=config.engine, workers=config.workers,
            scorers=config.scorers, address=config.address,
        )  # fmt: skip
        if checkpoint.generation + 1 < stored.generations:
            evolve(stored, resume=True, checkpoint=checkpoint, show_progress=False, trackers=trackers)
        return
    evolve(config, show_progress=False, trackers=trackers)


def _transfer(
    table: pd.DataFrame,
    best_images: dict[int, torch.Tensor],
    model: LoadedModel,
    reference: str,
    device: str | None,
    engine: str,
) -> None:
    """Fill ``table["reference"]``: the reference model's confidence in each class, matched by name.

    The confidence is that on the class's best fooling image (resized to the reference's input
    size).
    """
    target = load_or_train(reference)
    lookup = {name.lower(): i for i, name in enumerate(target.spec.class_names)}
    scorer = Scorer(target, device=device, engine=engine)
    ids = sorted(best_images)
    for start in range(0, len(ids), 64):
        chunk = ids[start : start + 64]
        batch = torch.stack([best_images[i] for i in chunk])
        if batch.shape[1] != target.spec.channels:
            batch = batch.mean(1, keepdim=True) if target.spec.channels == 1 else batch.expand(-1, 3, -1, -1)
        batch = torch.nn.functional.interpolate(
            batch, size=scorer.image_size, mode="bilinear", align_corners=False, antialias=True
        )
        probabilities = scorer.score(batch.clamp(0, 1))
        for row, class_id in enumerate(chunk):
            column = lookup.get(model.spec.class_names[class_id].lower())
            if column is not None:
                table.at[class_id, "reference"] = float(probabilities[row, column])
    table.attrs["reference"] = target.spec.name


# The levels of the queries-to-fool curve: stats column (evo.run.FOOLED_LEVELS) -> label.
QUERY_LEVELS = {"fooled_50": "50%", "fooled_90": "90%", "fooled_99": "99%", "fooled_9999": "99.99%"}


def queries_to_fool(records: list[dict], classes: int) -> dict:
    """The queries-to-fool curve of a run from its per-generation stats.

    Args:
        records: the run's stats rows (``queries`` and ``fooled_*`` per generation: images
            sent so far, and cells at or above each level).
        classes: the cells of the run.

    Returns:
        ``{"queries": spent, "levels": {label: {"first": queries when the first class reached
        it, "half": when half the classes had, "fraction": the fraction at the end}},
        "curve": [[queries, fraction per level...], ...]}``; ``{}`` for runs without the columns.
    """
    rows = [r for r in records if isinstance(r.get("queries"), int)]
    if not rows or not classes:
        return {}
    levels = {}
    for column, label in QUERY_LEVELS.items():
        counts = [(r["queries"], int(r.get(column) or 0)) for r in rows]
        first = next((q for q, n in counts if n >= 1), None)
        half = next((q for q, n in counts if n >= classes / 2), None)
        levels[label] = {"first": first, "half": half, "fraction": counts[-1][1] / classes}
    curve = [[r["queries"], *(int(r.get(c) or 0) / classes for c in QUERY_LEVELS)] for r in rows]
    return {"queries": rows[-1]["queries"], "levels": levels, "curve": curve}


def _counts(values: pd.Series) -> dict[str, int]:
    return {f">={round(100 * t)}%": int((values >= t).sum()) for t in THRESHOLDS}


def _summary(
    model_name: str,
    model: LoadedModel,
    table: pd.DataFrame,
    plan: Budget,
    budget: str,
    reference: str | None,
    real_images: str | None,
    notes: list[str],
    has_gradients: bool,
) -> dict:
    methods = {}
    for method in (*METHODS, "best"):
        values = table[method].dropna()
        if len(values):
            methods[method] = {
                "classes": int(len(values)),
                **_counts(values),
                "median": float(values.median()),
                "mean": float(values.mean()),
            }
    source = describe_model(model_name, model)
    source.pop("labels", None)
    summary = {
        "model": model.spec.name,
        "description": model.spec.description,
        "source": source,
        "classes": len(table),
        "budget": budget,
        "budget_detail": dataclasses.asdict(plan),
        "evaluations": {"cppn": plan.evaluations, "direct": plan.evaluations},
        "methods": methods,
        "gradients": has_gradients,
        "reference": table.attrs.get("reference", reference),
        "real_images": real_images,
        "notes": notes,
        "date": datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%d %H:%M UTC"),
    }
    if reference is not None and table["reference"].notna().any():
        both = (table["best"] >= 0.5) & (table["reference"] >= 0.5)
        summary["transfer"] = {
            "mean_source": float(table.loc[table["reference"].notna(), "best"].mean()),
            "mean_reference": float(table["reference"].mean()),
            "both_50": int(both.sum()),
        }
    if table["real"].notna().any():
        has = table["real"].notna()
        summary["real"] = {
            "classes": int(has.sum()),
            "mean_real": float(table.loc[has, "real"].mean()),
            "mean_fooling": float(table.loc[has, "best"].mean()),
        }
    return summary


# --- writing ------------------------------------------------------------------------------------


def _write(root: str, table: pd.DataFrame, summary: dict, images: dict[str, dict[int, str]]) -> list[str]:
    """Write the results into ``root`` (a local folder or a storage URI) through the store.

    Returns:
        URIs of ``audit.parquet``, ``summary.json``, ``report.md`` and ``report.html``.
    """
    files = [join(root, name) for name in ("audit.parquet", "summary.json", "report.md", "report.html")]
    table.attrs = {}  # summary.json holds what attrs held
    write_columns(files[0], {name: table[name].to_numpy() for name in table.columns})
    write_bytes(files[1], (json.dumps(summary, indent=1) + "\n").encode())
    write_bytes(files[2], write_markdown(summary, table, budget_table()).encode())
    budgets = [
        [name, f"{b.evaluations:,}", f"{b.evaluations:,}", f"{b.ascent_steps} steps, {_ascent_classes(b)}"]
        for name, b in BUDGETS.items()
    ]
    write_bytes(files[3], write_html(summary, table, images, budgets).encode())
    return files
