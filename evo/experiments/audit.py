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
"""

from __future__ import annotations

import base64
import contextlib
import dataclasses
import datetime
import html
import io
import json
import logging
import time
from collections.abc import Iterator

import numpy as np
import pandas as pd
import torch
from PIL import Image
from tqdm.auto import tqdm

from fooling.evo.config import RunConfig, check_cluster_choice
from fooling.evo.experiments.elites import load_elites
from fooling.evo.run import evolve, load_or_train
from fooling.evo.run import logger as run_logger
from fooling.evo.store.checkpoint import check_location, folder_entries, join, write_bytes, write_columns
from fooling.evo.store.runfolder import LOCK_NAME, RunLock, claim_folder, discard_if_empty
from fooling.fitness import (
    LoadedModel,
    ModelUnavailableError,
    Scorer,
    error_line,
    get_model_spec,
    imagenet_class_names,
)
from fooling.fitness.gradient import ascent
from fooling.fitness.images import class_photo_folders, real_photo_confidence
from fooling.fitness.sources import describe_model, differentiable

logger = logging.getLogger(__name__)

THRESHOLDS = (0.5, 0.9, 0.99)
METHODS = ("cppn", "direct", "ascent")
METHOD_NAMES = {"cppn": "CPPN", "direct": "direct", "ascent": "gradient ascent"}
NAME_CLASS = ' class="name"'
# Side of the thumbnails embedded in the HTML report (pixels).
THUMBNAIL = 64


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


def _png_data_uri(image: torch.Tensor) -> str:
    """``(channels, H, W)`` in [0, 1] -> a ``data:image/png`` URI of a thumbnail."""
    array = (image.clamp(0, 1) * 255).round().to(torch.uint8).permute(1, 2, 0).numpy()
    picture = Image.fromarray(array[..., 0] if array.shape[-1] == 1 else array)
    picture = picture.resize((THUMBNAIL, THUMBNAIL), Image.Resampling.NEAREST)
    buffer = io.BytesIO()
    picture.save(buffer, format="PNG")
    return "data:image/png;base64," + base64.b64encode(buffer.getvalue()).decode()


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

    Returns:
        The per-class table, the summary, the folder and the files written.

    Raises:
        ValueError: unknown budget, ``out`` not new or empty, bad photos folder, an ``address``
            with ``workers == 0``.
        StorageError: a storage URI that cannot be reached or used.
        UnknownNameError, ModelUnavailableError, ModelFileError: a model that cannot be had.
    """
    if budget not in BUDGETS:
        raise ValueError(f"--budget must be one of {', '.join(BUDGETS)}, not {budget!r}")
    plan = BUDGETS[budget]
    check_cluster_choice(address, workers)
    check_location(out, "--out")
    try:
        entries = folder_entries(out)
    except NotADirectoryError:
        entries = ["(a file)"]
    if entries is not None and any(name != LOCK_NAME for name in entries):
        raise ValueError(f"--out {out} already exists and is not empty; choose another folder")
    model = load_or_train(model_name)
    if reference not in (None, "auto", "none"):
        # A bad name, or a model with none of these classes (the column would stay empty), fails
        # before any search.
        shared = {n.lower() for n in get_model_spec(reference).class_names} & {
            n.lower() for n in model.spec.class_names
        }
        if not shared:
            raise ValueError(
                f"--reference {reference} has none of {model.spec.name}'s class names: its "
                "confidence in a class cannot be read (give a model of the same classes)"
            )
    # The photos are scored before any search, so an unreadable one fails before anything is written.
    photos = class_photo_folders(real_images, model.spec) if real_images is not None else {}
    real = real_photo_confidence(Scorer(model, device=device, engine=engine), photos) if photos else {}
    created = entries is None
    try:
        with RunLock(out, "audit"):
            claim_folder(out, "audit")
            return _audit_locked(
                model_name, model, out, plan, budget, real_images, real, reference, seed, device,
                engine, workers, scorers, address, show_progress,
            )  # fmt: skip
    except BaseException:
        if created:
            discard_if_empty(out)
        raise


def _audit_locked(
    model_name: str,
    model: LoadedModel,
    root: str,
    plan: Budget,
    budget: str,
    real_images: str | None,
    real: dict[int, tuple[float, int]],
    reference: str | None,
    seed: int,
    device: str | None,
    engine: str,
    workers: int,
    scorers: int,
    address: str | None,
    show_progress: bool,
) -> AuditResult:
    """The body of :func:`audit`, holding the folder's lock."""
    started = time.perf_counter()
    names = list(model.spec.class_names)
    count = len(names)
    table = pd.DataFrame({"class_id": np.arange(count), "class_name": names})
    for column in (*METHODS, "reference", "real"):
        table[column] = np.nan
    table["real_count"] = 0
    images: dict[str, dict[int, str]] = {method: {} for method in METHODS}
    best_images: dict[int, torch.Tensor] = {}
    notes: list[str] = []
    has_gradients = differentiable(model)
    if reference == "auto":
        reference = _reference_for(model)
        if reference is None:
            notes.append("no reference model shares this model's class names: no transfer (give --reference)")
    elif reference == "none":
        reference = None
    stages = ["CPPN search", "direct search", "gradient ascent", "transfer", "real photos", "report"]
    with tqdm(total=len(stages), desc="audit", unit="stage", disable=not show_progress) as bar:
        for method in ("cppn", "direct"):
            bar.set_description(f"audit: {METHOD_NAMES[method]} search")
            config = RunConfig(
                model=model_name, encoding=method, generations=plan.generations, population=plan.population,
                seed=seed, out=join(root, method), checkpoint_every=0, workers=workers, scorers=scorers,
                address=address, device=device, engine=engine,
            )  # fmt: skip
            with _quiet(run_logger):  # the stage bar says what runs; each run's settings are in its folder
                evolve(config, show_progress=False)
            elites = load_elites(join(root, method))
            ids = list(elites.cells)  # every class has a cell: cell = class id (names can repeat)
            table.loc[ids, method] = elites.fitness.astype(np.float64)
            for row, class_id in enumerate(ids):
                images[method][class_id] = _png_data_uri(elites.images[row])
                if method == "cppn" or not table.at[class_id, "cppn"] >= elites.fitness[row]:
                    best_images[class_id] = elites.images[row]  # the better of CPPN and direct
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
            notes.append(f"{model.spec.name} has no gradients (ONNX Runtime): no gradient ascent")
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
        files = _write(root, table, summary, images)
        bar.update(1)
    return AuditResult(table=table, summary=summary, out=root, files=files)


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


def _plural(count: int, word: str) -> str:
    return f"{count} {word}" + ("" if count == 1 else "es" if word.endswith("s") else "s")


def _percent(value: float) -> str:
    return "" if value != value else f"{100 * value:.2f}%"


def _summary_rows(summary: dict) -> list[tuple[str, list[str]]]:
    """``(method name, cells)`` rows of the summary table."""
    rows = []
    for method, facts in summary["methods"].items():
        label = "best of CPPN and direct" if method == "best" else METHOD_NAMES[method]
        rows.append(
            (
                label,
                [
                    str(facts["classes"]),
                    *(str(facts[f">={round(100 * t)}%"]) for t in THRESHOLDS),
                    _percent(facts["median"]),
                    _percent(facts["mean"]),
                ],
            )  # fmt: skip
        )
    return rows


SUMMARY_HEADER = ["method", "classes searched", ">= 50%", ">= 90%", ">= 99%", "median", "mean"]


def write_markdown(summary: dict, table: pd.DataFrame) -> str:
    """The report as Markdown: summary, budget, transfer, real photos, per-class table."""
    lines = [
        f"# Fooling audit of `{summary['model']}`",
        "",
        f"{summary['description']}. Budget **{summary['budget']}**: {summary['evaluations']['cppn']:,} CPPN "
        f"and {summary['evaluations']['direct']:,} direct evaluations"
        + (
            f", {summary['budget_detail']['ascent_steps']} gradient-ascent steps"
            if summary["gradients"]
            else ""
        )
        + f"; {summary['classes']} classes; {summary['date']}, {summary['seconds']} s.",
        "",
        "Classes for which an image was found that the model labels with at least the given confidence:",
        "",
        "| " + " | ".join(SUMMARY_HEADER) + " |",
        "|" + "---|" * len(SUMMARY_HEADER),
    ]
    lines += [f"| {label} | " + " | ".join(cells) + " |" for label, cells in _summary_rows(summary)]
    if "transfer" in summary:
        transfer = summary["transfer"]
        lines += [
            "",
            f"Transfer to `{summary['reference']}`: mean confidence {_percent(transfer['mean_source'])} on "
            f"{summary['model']} -> {_percent(transfer['mean_reference'])} on the reference; "
            f"{transfer['both_50']} classes >= 50% on both.",
        ]
    if "real" in summary:
        real = summary["real"]
        lines += [
            "",
            f"Real photos ({_plural(real['classes'], 'class')}): mean confidence "
            f"{_percent(real['mean_real'])} on real photos, {_percent(real['mean_fooling'])} on the fooling "
            "images of the same classes.",
        ]
    if summary["notes"]:
        lines += ["", *(f"- {note}" for note in summary["notes"])]
    lines += ["", "## Budgets", "", budget_table(), "", "## Per class", ""]
    columns = ["class", "CPPN", "direct", "gradient ascent", "reference", "real photos"]
    lines += ["| " + " | ".join(columns) + " |", "|" + "---|" * len(columns)]
    for row in table.sort_values("best", ascending=False).itertuples():
        cells = [str(row.class_name), _percent(row.cppn), _percent(row.direct), _percent(row.ascent),
                 _percent(row.reference), _percent(row.real)]  # fmt: skip
        lines.append("| " + " | ".join(cell.replace("|", "\\|") for cell in cells) + " |")
    return "\n".join(lines) + "\n"


def _histogram_svg(table: pd.DataFrame) -> str:
    """Grouped bars: how many classes' best CPPN / direct / ascent image falls in each 10% bin."""
    colours = {"cppn": "#1f77b4", "direct": "#ff7f0e", "ascent": "#2ca02c"}
    present = [m for m in METHODS if table[m].notna().any()]
    counts = {m: np.histogram(table[m].dropna().clip(0, 1), bins=10, range=(0, 1))[0] for m in present}
    tallest = max([1, *(int(c.max()) for c in counts.values())])
    width, height, left, bottom = 660, 240, 40, 30
    group = (width - left - 30) / 10
    bar = group / (len(present) + 1)
    parts = [f'<svg width="{width}" height="{height + 40}" role="img" '
             'aria-label="histogram of per-class confidence">']  # fmt: skip
    for index, method in enumerate(present):
        for b, value in enumerate(counts[method]):
            h = (height - bottom) * int(value) / tallest
            x = left + b * group + index * bar
            parts.append(f'<rect x="{x:.1f}" y="{height - h:.1f}" width="{bar:.1f}" height="{h:.1f}" '
                         f'fill="{colours[method]}"><title>{METHOD_NAMES[method]} {10 * b}-{10 * b + 10}%: '
                         f'{int(value)} classes</title></rect>')  # fmt: skip
    for b in range(11):
        x = left + b * group
        parts.append(
            f'<text x="{x:.1f}" y="{height + 14}" font-size="10" text-anchor="middle">{10 * b}%</text>'
        )
    parts.append(f'<text x="4" y="{bottom - 10}" font-size="10">{tallest} classes</text>')
    for index, method in enumerate(present):
        parts.append(f'<rect x="{left + 150 * index}" y="{height + 24}" width="10" height="10" '
                     f'fill="{colours[method]}"/><text x="{left + 150 * index + 14}" y="{height + 33}" '
                     f'font-size="11">{METHOD_NAMES[method]}</text>')  # fmt: skip
    parts.append("</svg>")
    return "".join(parts)


_SORT_SCRIPT = """
document.querySelectorAll('th[data-key]').forEach(function (th) {
  th.addEventListener('click', function () { sortBy(th.dataset.key); });
});
function sortBy(key) {
  var body = document.querySelector('#classes tbody');
  var rows = Array.prototype.slice.call(body.rows);
  var th = document.querySelector('th[data-key="' + key + '"]');
  var descending = th.dataset.order !== 'desc';
  document.querySelectorAll('th[data-key]').forEach(function (h) { delete h.dataset.order; });
  th.dataset.order = descending ? 'desc' : 'asc';
  rows.sort(function (a, b) {
    var x = a.querySelector('[data-' + key + ']').getAttribute('data-' + key);
    var y = b.querySelector('[data-' + key + ']').getAttribute('data-' + key);
    var nx = parseFloat(x), ny = parseFloat(y);
    var c = (isNaN(nx) || isNaN(ny)) ? x.localeCompare(y) : nx - ny;
    if (isNaN(nx) !== isNaN(ny)) { c = isNaN(nx) ? -1 : 1; }
    return descending ? -c : c;
  });
  rows.forEach(function (row) { body.appendChild(row); });
}
var wanted = new URLSearchParams(location.search).get('sort');
if (wanted) { sortBy(wanted); }
"""

_STYLE = """
body { font-family: system-ui, sans-serif; margin: 2em; color: #222; }
table { border-collapse: collapse; margin: 1em 0; }
th, td { border: 1px solid #ccc; padding: 4px 8px; text-align: right; }
td.name, th.name { text-align: left; }
th[data-key] { cursor: pointer; background: #f3f3f3; }
th[data-order="desc"]::after { content: " \\25BC"; }
th[data-order="asc"]::after { content: " \\25B2"; }
td img { display: block; margin: 0 auto; image-rendering: pixelated; }
.note { color: #a50; }
"""


def write_html(summary: dict, table: pd.DataFrame, images: dict[str, dict[int, str]]) -> str:
    """The report as one self-contained HTML page (images inline, no external resources)."""

    def cell(method: str, row) -> str:
        value = getattr(row, method)
        picture = images.get(method, {}).get(int(row.class_id))
        img = f'<img src="{picture}" width="{THUMBNAIL}" height="{THUMBNAIL}" alt="">' if picture else ""
        sort_value = "-1" if value != value else f"{value:.6f}"
        return f'<td data-{method}="{sort_value}">{img}{_percent(value)}</td>'

    def plain(key: str, value: float) -> str:
        return f'<td data-{key}="{"-1" if value != value else f"{value:.6f}"}">{_percent(value)}</td>'

    escape = html.escape
    rows = []
    for row in table.sort_values("best", ascending=False).itertuples():
        rows.append(
            f'<tr><td class="name" data-class_name="{escape(str(row.class_name))}">'
            f"{escape(str(row.class_name))}</td>"
            + "".join(cell(method, row) for method in METHODS)
            + plain("best", row.best) + plain("reference", row.reference) + plain("real", row.real)
            + "</tr>"
        )  # fmt: skip
    summary_rows = "".join(
        f"<tr><td class='name'>{escape(label)}</td>"
        + "".join(f"<td>{escape(c)}</td>" for c in cells)
        + "</tr>"
        for label, cells in _summary_rows(summary)
    )
    extra = []
    if "transfer" in summary:
        transfer = summary["transfer"]
        extra.append(
            f"<p>Transfer to <code>{escape(str(summary['reference']))}</code>: mean confidence "
            f"{_percent(transfer['mean_source'])} on this model, {_percent(transfer['mean_reference'])} "
            f"on the reference; {transfer['both_50']} classes &ge; 50% on both.</p>"
        )
    if "real" in summary:
        real = summary["real"]
        extra.append(
            f"<p>Real photos of {_plural(real['classes'], 'class')}: mean confidence "
            f"{_percent(real['mean_real'])}, against {_percent(real['mean_fooling'])} on the fooling images "
            "of the same classes.</p>"
        )
    extra += [f'<p class="note">{escape(note)}</p>' for note in summary["notes"]]
    budget_rows = "".join(
        f"<tr><td class='name'>{name}</td><td>{b.evaluations:,}</td><td>{b.evaluations:,}</td>"
        f"<td>{b.ascent_steps} steps, {_ascent_classes(b)}</td></tr>"
        for name, b in BUDGETS.items()
    )  # fmt: skip
    headers = [("class_name", "class"), ("cppn", "CPPN"), ("direct", "direct"), ("ascent", "gradient ascent"),
               ("best", "best search"), ("reference", f"on {summary.get('reference') or 'reference'}"),
               ("real", "real photos")]  # fmt: skip
    header_cells = "".join(
        f'<th data-key="{key}"{NAME_CLASS if key == "class_name" else ""}>{escape(label)}</th>'
        for key, label in headers
    )
    evaluations = summary["evaluations"]
    description = escape(
        f"{summary['description']}; budget {summary['budget']}: {evaluations['cppn']:,} CPPN and "
        f"{evaluations['direct']:,} direct evaluations; {summary['classes']} classes; {summary['date']}, "
        f"{summary['seconds']} s"
    )
    return f"""<!DOCTYPE html>
<html lang="en"><head><meta charset="utf-8">
<title>Fooling audit of {escape(summary["model"])}</title>
<style>{_STYLE}</style></head><body>
<h1>Fooling audit of <code>{escape(summary["model"])}</code></h1>
<p>{description}</p>
<h2>Classes fooled</h2>
<p>Classes for which an image was found that the model labels with at least the given confidence.</p>
<table id="summary"><thead><tr><th class="name">{escape(SUMMARY_HEADER[0])}</th>
{"".join(f"<th>{escape(h)}</th>" for h in SUMMARY_HEADER[1:])}</tr></thead>
<tbody>{summary_rows}</tbody></table>
{"".join(extra)}
<h2>Confidence per class</h2>
{_histogram_svg(table)}
<h2>Per class</h2>
<p>Click a column to sort. CPPN and direct images side by side; confidence of the model in the class.</p>
<table id="classes"><thead><tr>{header_cells}</tr></thead><tbody>
{"".join(rows)}
</tbody></table>
<h2>Budgets</h2>
<table id="budgets"><thead><tr><th class="name">budget</th><th>CPPN evaluations</th>
<th>direct evaluations</th><th>gradient ascent</th></tr></thead><tbody>{budget_rows}</tbody></table>
<script>{_SORT_SCRIPT}</script>
</body></html>
"""


def _write(root: str, table: pd.DataFrame, summary: dict, images: dict[str, dict[int, str]]) -> list[str]:
    """Write the results into ``root`` (a local folder or a storage URI) through the store.

    Returns:
        URIs of ``audit.parquet``, ``summary.json``, ``report.md`` and ``report.html``.
    """
    files = [join(root, name) for name in ("audit.parquet", "summary.json", "report.md", "report.html")]
    table.attrs = {}  # summary.json holds what attrs held
    write_columns(files[0], {name: table[name].to_numpy() for name in table.columns})
    write_bytes(files[1], (json.dumps(summary, indent=1) + "\n").encode())
    write_bytes(files[2], write_markdown(summary, table).encode())
    write_bytes(files[3], write_html(summary, table, images).encode())
    return files
