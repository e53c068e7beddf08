"""The paper's follow-up experiments on a finished run: transfer to other networks, occlusion.

Both read a run's newest checkpoint, score its elites and write a Markdown table and a
plot into the run folder:

- :func:`transfer`: do images evolved against DNN_A fool DNN_B (paper, section 3.4)?
- :func:`ablate`: how does confidence fall as parts of each elite are hidden, and when
  its repeated elements are removed (paper, section 3.2)?
"""

from __future__ import annotations

import dataclasses
import io
import json
import logging
import re

import numpy as np
import torch
import torch.nn.functional as F

# Figures are built with matplotlib.figure.Figure, never pyplot: no global backend is
# chosen at import (notebooks keep inline plots) and savefig picks Agg for PNG itself.
from matplotlib.figure import Figure
from PIL import Image

from fooling.fitness import LoadedModel, Scorer, get_model_spec
from fooling.fitness.occlusion import occlusion_curve, repetition_test

from .checkpoint import (
    CheckpointError,
    checkpoint_metadata,
    join,
    read_latest_checkpoint,
    read_latest_checkpoint_table,
    write_bytes,
)
from .config import RunConfig
from .report import percent

logger = logging.getLogger(__name__)

HIGH = 0.9999  # the paper's "99.99% confidence"
FAIR = 0.99


@dataclasses.dataclass
class Elites:
    """A run's elites, ready to score.

    Attributes:
        run: the run folder.
        config: its configuration.
        model: registry name of the network it was evolved against.
        class_names: ``(n,)`` class of each elite's cell.
        fitness: ``(n,)`` float32 confidence stored in the checkpoint.
        images: ``(n, channels, height, width)`` float in ``[0, 1]``.
        source: ``"genomes"`` (rendered again) or ``"stored images"`` (the checkpoint's PNGs,
            for genome classes this build does not know).
    """

    run: str
    config: RunConfig
    model: str
    class_names: list[str]
    fitness: np.ndarray
    images: torch.Tensor
    source: str
    weights_hash: str = ""


def _decode_png(data: bytes) -> np.ndarray:
    return np.asarray(Image.open(io.BytesIO(data)))


def load_elites(run: str) -> Elites:
    """The elites of run folder ``run``'s newest good checkpoint.

    Genomes are rendered again when their class is known (full resolution); otherwise
    (e.g. an encoding from a newer version) the stored PNG thumbnails are used.

    Raises:
        CheckpointError: no readable checkpoint, or one with no elites.
    """
    from .evaluation import make_encoding
    from .run import GENOME_CLASSES

    table = read_latest_checkpoint_table(run)
    metadata = checkpoint_metadata(table)
    if table.num_rows == 0:
        raise CheckpointError(f"{run}: the newest checkpoint holds no elites")
    config = RunConfig.from_json(json.dumps(metadata["config"]))
    model = str(metadata["model"])
    images = None
    source = "stored images"
    if metadata.get("genome_class") in GENOME_CLASSES:
        try:
            checkpoint = read_latest_checkpoint(run, GENOME_CLASSES)
            encoding = make_encoding(config, get_model_spec(model))
            cells = checkpoint.archive.occupied_cells()
            genomes = checkpoint.archive.genomes.take(cells)
            images = torch.cat(
                [encoding.render(genomes.take(slice(s, s + 256)), "cpu") for s in range(0, len(cells), 256)]
            ).clamp(0, 1)
            names = [checkpoint.archive.class_names[c] for c in cells]
            fitness = checkpoint.archive.fitness[cells]
            source = "genomes"
        except LookupError as error:  # an encoding this build does not have
            logger.info("rendering %s from stored images (%s)", run, error)
            images = None
    if images is None:
        rows = table.sort_by("class_id").to_pylist()
        if any(not row["image_png"] for row in rows):
            raise CheckpointError(f"{run}: genomes of an unknown kind and no stored images")
        arrays = [_decode_png(row["image_png"]) for row in rows]
        stacked = np.stack([a[..., None] if a.ndim == 2 else a[..., :3] for a in arrays])
        images = torch.from_numpy(stacked).permute(0, 3, 1, 2).float() / 255.0
        names = [row["class_name"] for row in rows]
        fitness = np.array([row["fitness"] for row in rows], dtype=np.float32)
    return Elites(
        run, config, model, names, np.asarray(fitness, np.float32), images, source,
        str(metadata.get("weights_hash", "")),
    )  # fmt: skip


def check_weights(elites: Elites, model: LoadedModel) -> None:
    """Refuse to rescore ``elites`` when their network's weights changed since the run,
    as resuming does: the stored confidences would belong to another network.

    Raises:
        CheckpointError: the weights hash differs from the checkpoint's.
    """
    if elites.weights_hash and elites.weights_hash != model.weights_hash:
        raise CheckpointError(
            f"{elites.run} was evolved against {elites.model} with weights {elites.weights_hash}, "
            f"but {elites.model} now has weights {model.weights_hash}; refusing to mix them"
        )


def fit_images(images: torch.Tensor, scorer: Scorer) -> torch.Tensor:
    """``images`` ``(n, c, h, w)`` resized (bilinear) and converted to the scorer's input.

    Gray images are repeated over 3 channels for colour networks; colour images are
    averaged to gray for gray networks.
    """
    channels = scorer.spec.channels
    if images.shape[1] != channels:
        images = images.mean(1, keepdim=True) if channels == 1 else images.expand(-1, 3, -1, -1)
    if tuple(images.shape[-2:]) != scorer.image_size:
        images = F.interpolate(images, size=scorer.image_size, mode="bilinear", align_corners=False)
    return images.contiguous()


def _score_all(scorer: Scorer, images: torch.Tensor, batch_size: int = 128) -> np.ndarray:
    """Probabilities ``(n, num_classes)`` of ``images`` (any size; fitted first)."""
    parts = [
        scorer.score(fit_images(images[start : start + batch_size], scorer))
        for start in range(0, len(images), batch_size)
    ]
    return np.concatenate(parts)


def _png(figure) -> bytes:
    buffer = io.BytesIO()
    figure.savefig(buffer, format="png", dpi=110, bbox_inches="tight")
    return buffer.getvalue()


def _markdown_table(header: list[str], rows: list[list[str]]) -> str:
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(row) + " |" for row in rows]
    return "\n".join(lines)


# --- transfer --------------------------------------------------------------------------------

TRANSFER_COLUMNS = (
    "target",
    "elites",
    "same_top1",
    "both_9999",
    "both_99",
    "mean_source",
    "mean_target",
)


@dataclasses.dataclass
class TransferResult:
    """How a run's elites fare on other networks.

    Attributes:
        elites: the run's elites.
        rows: one dict per target with the keys of :data:`TRANSFER_COLUMNS`: ``elites``
            (elites whose class the target has), ``same_top1`` (fraction with the same
            top-1 label on both networks), ``both_9999`` / ``both_99`` (fraction at
            >= 99.99% / >= 99% in the elite's class on both), ``mean_source`` /
            ``mean_target`` (mean confidence in the elite's class).
        source_confidence: ``(n,)`` confidence of the source network in each elite's class.
        target_confidence: target name -> ``(n,)`` confidence (NaN where it lacks the class).
        target_top1: target name -> ``(n,)`` the target's top-1 class names.
        uris: files written.
    """

    elites: Elites
    rows: list[dict]
    source_confidence: np.ndarray
    target_confidence: dict[str, np.ndarray]
    target_top1: dict[str, list[str]]
    uris: list[str]


def _class_map(source: tuple[str, ...], target: tuple[str, ...], names: list[str]) -> np.ndarray:
    """Index in ``target`` of each of ``names`` matched by name, case-insensitively (-1: none)."""
    index = {name.lower(): i for i, name in enumerate(target)}
    return np.array([index.get(name.lower(), -1) for name in names], dtype=np.int64)


def transfer(
    run: str,
    targets: list[str],
    *,
    map_classes: bool = False,
    device: str | None = None,
    engine: str = "auto",
    write: bool = True,
) -> TransferResult:
    """Score run ``run``'s elites on ``targets`` and write ``transfer-to-TARGETS.md`` and ``.png``.

    Results of other targets stay; a result of the same targets that differs from the
    earlier one (e.g. retrained weights) is written beside it as ``...-2.md``, never over it.

    Args:
        run: run folder (an evolved or gradient-ascent run).
        targets: registry names of the networks to test (MNIST LeNets are trained on demand).
        map_classes: allow targets whose class set differs from the run's network, matching
            classes by name (elites whose class the target lacks are left out of its row).
        device: scoring device (default: CUDA when present).
        engine: scoring engine (``auto``, ``torch``, ``onnxruntime``).
        write: write the two files into the run folder.

    Raises:
        CheckpointError: the run has no readable checkpoint.
        ValueError: no targets, or a target with another class set without ``map_classes``.
        UnknownNameError, ModelUnavailableError: a model that cannot be had.
    """
    from .run import load_or_train

    if not targets:
        raise ValueError("give at least one --to MODEL")
    elites = load_elites(run)
    source = load_or_train(elites.model)
    check_weights(elites, source)
    models: list[LoadedModel] = []
    for name in targets:
        spec = get_model_spec(name)  # cheap: checks names and class sets before any training
        if spec.class_names != source.spec.class_names and not map_classes:
            raise ValueError(
                f"{spec.name} has other classes ({spec.num_classes}) than {source.spec.name} "
                f"({source.spec.num_classes}), the run's network; --map-classes matches them by name"
            )
        if not (_class_map(source.spec.class_names, spec.class_names, elites.class_names) >= 0).any():
            raise ValueError(
                f"{spec.name} has none of the classes of {run}'s elites (matched by name): nothing to compare"
            )
    for name in targets:
        models.append(load_or_train(name))
    source_scorer = Scorer(source, device=device, crops=elites.config.crops, engine=engine)
    source_probs = _score_all(source_scorer, elites.images)
    source_ids = _class_map(source.spec.class_names, source.spec.class_names, elites.class_names)
    rows_index = np.arange(len(elites.images))
    source_conf = source_probs[rows_index, source_ids]
    source_top1 = [source.spec.class_names[i].lower() for i in source_probs.argmax(1)]
    rows, confidences, top1s = [], {}, {}
    for model in models:
        probs = _score_all(Scorer(model, device=device, engine=engine), elites.images)
        mapped = _class_map(source.spec.class_names, model.spec.class_names, elites.class_names)
        has = mapped >= 0
        conf = np.full(len(mapped), np.nan, dtype=np.float32)
        conf[has] = probs[rows_index[has], mapped[has]]
        top1 = [model.spec.class_names[i] for i in probs.argmax(1)]
        same = np.array([a == b.lower() for a, b in zip(source_top1, top1)])
        count = int(has.sum())

        def fraction(values: np.ndarray, has: np.ndarray = has, count: int = count) -> float:
            return float(values[has].mean()) if count else float("nan")

        rows.append(
            dict(
                target=model.spec.name,
                elites=count,
                same_top1=fraction(same),
                both_9999=fraction((source_conf >= HIGH) & (np.nan_to_num(conf) >= HIGH)),
                both_99=fraction((source_conf >= FAIR) & (np.nan_to_num(conf) >= FAIR)),
                mean_source=fraction(source_conf),
                mean_target=float(conf[has].mean()) if count else float("nan"),
            )
        )
        confidences[model.spec.name], top1s[model.spec.name] = conf, top1
    result = TransferResult(elites, rows, source_conf, confidences, top1s, [])
    if write:
        result.uris = _write_transfer(result, source.spec.name)
    return result


def _transfer_uris(run: str, targets: list[str], text: bytes) -> tuple[str, str]:
    """``RUN/transfer-to-TARGETS.md`` and ``.png``; when that file already holds another
    result (e.g. the target's weights changed), ``-2``, ``-3``, ... instead: nothing is overwritten."""
    from .checkpoint import exists, read_bytes

    stem = "transfer-to-" + "+".join(re.sub(r"[^A-Za-z0-9._-]+", "_", target) for target in targets)
    for number in range(1, 10_000):
        name = stem if number == 1 else f"{stem}-{number}"
        md_uri = join(run, f"{name}.md")
        if not exists(md_uri) or read_bytes(md_uri) == text:
            return md_uri, join(run, f"{name}.png")
    raise ValueError(f"{run} holds too many transfer results named {stem}-N; move some away")


def _write_transfer(result: TransferResult, source: str) -> list[str]:
    elites = result.elites
    header = [
        "target",
        "elites",
        "same top-1 label",
        ">= 99.99% on both",
        ">= 99% on both",
        f"mean confidence on {source}",
        "mean confidence on target",
    ]
    rows = [
        [
            row["target"],
            str(row["elites"]),
            f"{100 * row['same_top1']:.1f}%",
            f"{100 * row['both_9999']:.1f}%",
            f"{100 * row['both_99']:.1f}%",
            percent(row["mean_source"]),
            percent(row["mean_target"]),
        ]
        for row in result.rows
    ]
    # Per-elite detail, best first, capped so 1000-class runs stay readable.
    order = np.argsort(-result.source_confidence)[:50]
    targets = list(result.target_confidence)
    detail = [
        [
            elites.class_names[i],
            percent(float(result.source_confidence[i])),
            *[
                f"{percent(float(result.target_confidence[t][i]))} ({result.target_top1[t][i]})"
                if not np.isnan(result.target_confidence[t][i])
                else f"- ({result.target_top1[t][i]})"
                for t in targets
            ],
        ]
        for i in order
    ]
    text = "\n\n".join(
        [
            f"# Transfer of {elites.run}'s elites",
            f"Evolved against **{source}** ({elites.config.encoding} encoding, {len(elites.images)} elites, "
            f"scored from {elites.source}). Confidence is each network's probability of the elite's class; "
            "the paper (section 3.4) found many images fooling DNN_B as well, with DNN_A scoring higher.",
            _markdown_table(header, rows),
            "## Per elite (best 50 on the source): confidence in the class (target's top-1 label)",
            _markdown_table(["class", source, *targets], detail),
        ]
    )
    md_uri, png_uri = _transfer_uris(elites.run, targets, (text + "\n").encode())
    write_bytes(md_uri, (text + "\n").encode())
    figure = Figure(figsize=(5, 4.5))
    axis = figure.subplots()
    for target in targets:
        axis.scatter(
            100 * result.source_confidence,
            100 * result.target_confidence[target],
            s=14,
            alpha=0.7,
            label=target,
        )
    axis.plot([0, 100], [0, 100], color="gray", lw=0.8, ls="--")
    axis.set_xlim(-2, 102)
    axis.set_ylim(-2, 102)
    axis.set_xlabel(f"confidence on {source} (%)")
    axis.set_ylabel("confidence on target (%)")
    axis.set_title("Elites scored by other networks", fontsize=10)
    axis.grid(alpha=0.3)
    axis.legend(fontsize=8, loc="lower right")
    write_bytes(png_uri, _png(figure))
    return [md_uri, png_uri]


# --- ablation --------------------------------------------------------------------------------

DEFAULT_FRACTIONS = (1.0, 0.9, 0.75, 0.5, 0.25, 0.1, 0.0)


@dataclasses.dataclass
class AblationResult:
    """Confidence of a run's elites under occlusion and repetition removal.

    Attributes:
        elites: the run's elites.
        fractions_kept: ``(k,)`` fractions of the image left visible.
        curves: ``(n, k)`` confidence in each elite's class per fraction kept.
        rows: one dict per fraction: ``kept``, ``mean``, ``median``, ``mean_drop`` (mean
            of full-image confidence minus this one), ``at_99`` (fraction of elites >= 99%).
        repeats: ``removed`` (repeated tiles per elite), ``original``, ``without_repeats``,
            ``random_control`` confidences, ``(n,)`` each.
        uris: files written.
    """

    elites: Elites
    fractions_kept: np.ndarray
    curves: np.ndarray
    rows: list[dict]
    repeats: dict[str, np.ndarray]
    uris: list[str]


def ablate(
    run: str,
    *,
    fractions_kept: tuple[float, ...] = DEFAULT_FRACTIONS,
    grid: int = 4,
    tolerance: float = 0.05,
    seed: int = 0,
    device: str | None = None,
    engine: str = "auto",
    write: bool = True,
) -> AblationResult:
    """Occlude growing fractions of each elite of ``run`` and remove its repeated tiles.

    Writes ``ablation.md`` and ``ablation.png`` into the run folder.

    Args:
        run: run folder.
        fractions_kept: fractions of the tiles left visible, each in ``[0, 1]``.
        grid: tiles per side of the occlusion grid.
        tolerance: mean absolute pixel difference under which two tiles count as repeats.
        seed: seeds the tile orders and the random control.
        device: scoring device.
        engine: scoring engine (``auto``, ``torch``, ``onnxruntime``).
        write: write the files.

    Raises:
        CheckpointError: the run has no readable checkpoint.
        ValueError: a fraction outside ``[0, 1]`` or ``grid < 1``.
    """
    from .run import load_or_train

    fractions = np.asarray(sorted(set(fractions_kept), reverse=True), dtype=np.float64)
    if ((fractions < 0) | (fractions > 1)).any():
        raise ValueError("--keep fractions must lie in [0, 1]")
    if grid < 1:
        raise ValueError(f"--grid must be >= 1, not {grid}")
    if not tolerance >= 0:
        raise ValueError(f"--tolerance must be >= 0, not {tolerance}")
    elites = load_elites(run)
    side = min(elites.images.shape[-2:])
    if grid > side:
        raise ValueError(f"--grid {grid} is more tiles per side than {run}'s {side}-pixel images have pixels")
    model = load_or_train(elites.model)
    check_weights(elites, model)
    scorer = Scorer(model, device=device, crops=elites.config.crops, engine=engine)
    images = fit_images(elites.images, scorer)
    ids = _class_map(model.spec.class_names, model.spec.class_names, elites.class_names)
    curves = occlusion_curve(scorer, images, ids, fractions, grid=grid, seed=seed)
    # Repeats are looked for in the image as evolved (before resizing to the network).
    repetition = repetition_test(
        scorer, elites.images, ids, grid=grid, tolerance=tolerance, seed=seed,
        prepare=lambda batch: fit_images(batch, scorer),
    )  # fmt: skip
    full = curves[:, 0] if fractions[0] == 1.0 else repetition.original
    rows = [
        dict(
            kept=float(kept),
            mean=float(curves[:, k].mean()),
            median=float(np.median(curves[:, k])),
            mean_drop=float((full - curves[:, k]).mean()),
            at_99=float((curves[:, k] >= FAIR).mean()),
        )
        for k, kept in enumerate(fractions)
    ]
    result = AblationResult(
        elites,
        fractions,
        curves,
        rows,
        dataclasses.asdict(repetition),
        [],  # type: ignore[arg-type]
    )
    if write:
        result.uris = _write_ablation(result, model.spec.name, grid, tolerance)
    return result


def _write_ablation(result: AblationResult, model: str, grid: int, tolerance: float) -> list[str]:
    elites, repeats = result.elites, result.repeats
    table = _markdown_table(
        ["fraction kept", "mean confidence", "median confidence", "mean drop", "elites >= 99%"],
        [
            [
                f"{row['kept']:.2f}",
                percent(row["mean"]),
                percent(row["median"]),
                f"{100 * row['mean_drop']:.2f} points",
                f"{100 * row['at_99']:.0f}%",
            ]
            for row in result.rows
        ],
    )
    has = repeats["removed"] > 0
    if has.any():
        repeat_text = _markdown_table(
            [
                "elites with repeated tiles",
                "tiles removed (mean)",
                "original",
                "repeats removed",
                "random control",
            ],
            [
                [
                    f"{int(has.sum())}/{len(has)}",
                    f"{repeats['removed'][has].mean():.1f} of {grid * grid}",
                    percent(float(repeats["original"][has].mean())),
                    percent(float(repeats["without_repeats"][has].mean())),
                    percent(float(repeats["random_control"][has].mean())),
                ]
            ],
        )
    else:
        repeat_text = (
            f"No elite has a {grid}x{grid}-grid tile repeated elsewhere (tolerance {tolerance}): "
            "nothing to remove (expected for direct-encoded noise)."
        )
    text = "\n\n".join(
        [
            f"# Occlusion and repetition ablation of {elites.run}",
            f"{len(elites.images)} elites evolved against **{model}** ({elites.config.encoding} encoding, "
            f"scored from {elites.source}). Tiles of a {grid}x{grid} grid are replaced by the image's mean "
            "colour in a random order fixed per elite; confidence is the network's probability of the "
            "elite's class.",
            table,
            "## Repeated elements (paper, section 3.2: removing them lowers confidence a little)",
            "A tile (not flat) whose motif also appears, fully visible, anywhere else in the image "
            f"(mean absolute difference <= {tolerance}, searched at every position) is replaced by the "
            "mean, so each motif keeps one copy; the control replaces as many random tiles.",
            repeat_text,
        ]
    )
    md_uri, png_uri = join(elites.run, "ablation.md"), join(elites.run, "ablation.png")
    write_bytes(md_uri, (text + "\n").encode())
    figure = Figure(figsize=(9, 3.8))
    left, right = figure.subplots(1, 2, gridspec_kw={"width_ratios": [3, 2]})
    kept = 100 * result.fractions_kept
    for curve in result.curves:
        left.plot(kept, 100 * curve, color="tab:blue", alpha=0.15, lw=0.8)
    left.plot(kept, [100 * r["mean"] for r in result.rows], color="tab:blue", lw=2, label="mean")
    left.plot(kept, [100 * r["median"] for r in result.rows], color="tab:orange", lw=2, label="median")
    left.set_xlabel("fraction of the image kept (%)")
    left.set_ylabel("confidence in the class (%)")
    left.invert_xaxis()
    left.set_ylim(-2, 102)
    left.grid(alpha=0.3)
    left.legend(fontsize=8)
    labels = ["original", "repeats\nremoved", "random\ncontrol"]
    values = [
        100 * float(repeats[key][has].mean()) if has.any() else 0.0
        for key in ("original", "without_repeats", "random_control")
    ]
    right.bar(labels, values, color=["tab:gray", "tab:red", "tab:green"])
    right.set_ylim(0, 102)
    right.set_title(f"{int(has.sum())} elites with repeated tiles", fontsize=9)
    right.set_ylabel("mean confidence (%)")
    figure.suptitle("Confidence under occlusion", fontsize=10)
    write_bytes(png_uri, _png(figure))
    return [md_uri, png_uri]
