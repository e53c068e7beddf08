"""Ablation (paper, section 3.2): how confidence falls as parts of each elite are hidden.

Also how it falls when an elite's repeated elements are removed. Writes a table and a plot
into the run folder.
"""

from __future__ import annotations

import dataclasses
import logging

import numpy as np

from fooling.encodings import UserError
from fooling.evo.experiments.elites import (
    FAIR,
    Elites,
    check_weights,
    class_map,
    fit_images,
    load_elites,
    markdown_table,
)
from fooling.evo.models import load_or_train
from fooling.evo.report.escape import markdown_text
from fooling.evo.report.experiments import ablation_figure
from fooling.evo.report.figures import percent
from fooling.evo.store.location import join, write_bytes
from fooling.fitness import Scorer
from fooling.fitness.occlusion import occlusion_curve, repetition_test

logger = logging.getLogger(__name__)

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
    model: str | None = None,
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
        model: the run's network named again (``--model``); needed when it is behind an
            endpoint, which is never contacted on the run folder's word alone.

    Raises:
        CheckpointError: the run has no readable checkpoint.
        UserError: a fraction outside ``[0, 1]``, ``grid < 1`` or more tiles than pixels, a
            negative ``tolerance``, or a run of an endpoint that ``model`` does not name (see
            :func:`~fooling.evo.experiments.elites.load_elites`).
    """
    fractions = np.asarray(sorted(set(fractions_kept), reverse=True), dtype=np.float64)
    if ((fractions < 0) | (fractions > 1)).any():
        raise UserError("--keep fractions must lie in [0, 1]")
    if grid < 1:
        raise UserError(f"--grid must be >= 1, not {grid}")
    if not tolerance >= 0:
        raise UserError(f"--tolerance must be >= 0, not {tolerance}")
    elites = load_elites(run, model)
    side = min(elites.images.shape[-2:])
    if grid > side:
        raise UserError(f"--grid {grid} is more tiles per side than {run}'s {side}-pixel images have pixels")
    model = load_or_train(elites.model)
    check_weights(elites, model)
    scorer = Scorer(model, device=device, crops=elites.config.crops, engine=engine)
    images = fit_images(elites.images, scorer)
    ids = class_map(model.spec.class_names, model.spec.class_names, elites.class_names)
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
    table = markdown_table(
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
        repeat_text = markdown_table(
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
            f"# Occlusion and repetition ablation of {markdown_text(elites.run)}",
            f"{len(elites.images)} elites evolved against **{markdown_text(model)}** "
            f"({markdown_text(elites.config.encoding)} encoding, "
            f"scored from {markdown_text(elites.source)}). "
            f"Tiles of a {grid}x{grid} grid are replaced by the image's mean "
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
    write_bytes(png_uri, ablation_figure(result, repeats, has))
    return [md_uri, png_uri]
