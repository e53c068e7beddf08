"""A finished run's elites as the experiments use them: images, scores, tables, figures."""

from __future__ import annotations

import dataclasses
import json
import logging

import numpy as np
import torch
import torch.nn.functional as F

from fooling.encodings import GENOME_CLASSES, UserError
from fooling.evo.config import RunConfig
from fooling.evo.evaluation import make_encoding
from fooling.evo.models import named_stored_model
from fooling.evo.report.cells import decode_png, png_size
from fooling.evo.store.checkpoint import CheckpointError, read_latest_rows
from fooling.evo.store.thumbnails import THUMBNAIL_SIDE
from fooling.fitness import LoadedModel, Scorer, get_model_spec

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
        weights_hash: hash of the network's weights when the run was made.
        cells: ``(n,)`` int64 archive cell of each elite (the class id when the run has
            every class); names alone are ambiguous where two classes share one.
    """

    run: str
    config: RunConfig
    model: str
    class_names: list[str]
    fitness: np.ndarray
    images: torch.Tensor
    source: str
    weights_hash: str = ""
    cells: np.ndarray | None = None


def stored_images(rows: list[dict], source: str) -> np.ndarray:
    """The thumbnails a checkpoint stores for ``rows``, as one ``(n, height, width, channels)`` array.

    Each is checked before it is decoded (a PNG of at most
    :data:`~fooling.evo.report.cells.MAX_PNG_SIDE` pixels a side, from its header), then
    against the :data:`~fooling.evo.store.thumbnails.THUMBNAIL_SIDE` a run writes, and all must
    have one size and mode: a run folder may come from someone else, and a 20000x20000 PNG of
    a few hundred KB must not be decoded.

    Args:
        rows: checkpoint rows, each with ``image_png`` bytes.
        source: the checkpoint, named in errors.

    Returns:
        uint8 pixels, ``channels`` 1 (gray) or 3 (RGB).

    Raises:
        CheckpointError: a thumbnail that is not a PNG, too large or damaged, or thumbnails
            of different sizes (one line naming the row).
    """
    arrays = []
    for index, row in enumerate(rows):
        try:
            width, height = png_size(row["image_png"])  # from the header, before decoding
            if max(width, height) > THUMBNAIL_SIDE:  # all are held at once: no larger than a run writes
                raise ValueError(
                    f"a {width}x{height} PNG, larger than the {THUMBNAIL_SIDE}x{THUMBNAIL_SIDE} a run stores"
                )
            array = np.asarray(decode_png(row["image_png"]))
        except ValueError as error:
            raise CheckpointError(f"{source}: the stored image of row {index} is {error}") from None
        array = array[..., None] if array.ndim == 2 else array
        if arrays and array.shape != arrays[0].shape:
            first, this = (f"{h}x{w}x{c}" for h, w, c in (arrays[0].shape, array.shape))
            raise CheckpointError(
                f"{source}: the stored images of rows 0 and {index} differ in size (height x width x "
                f"channels {first} and {this}); a run stores one size"
            )
        arrays.append(array)
    return np.stack(arrays)


def load_elites(run: str, model: str | None = None) -> Elites:
    """The elites of run folder ``run``'s newest good checkpoint.

    The checkpoint is read once. Genomes are rendered again when their class is known (full
    resolution); otherwise (e.g. an encoding from a newer version) the stored PNG thumbnails
    are used.

    Args:
        run: the run folder.
        model: the run's model as the command line names it (``--model``), or ``None``. A run
            of a model behind an endpoint needs it: nothing is sent to an endpoint only the
            run folder names (see :func:`~fooling.evo.models.named_stored_model`).

    Raises:
        CheckpointError: no readable checkpoint, one with no elites, or stored images that are
            not what a run writes (not PNG, too large, or of different sizes).
        UserError: a run of an endpoint that ``model`` does not name, or a ``model`` other
            than the run's (both before anything is sent or loaded).
    """
    stored = read_latest_rows(run, GENOME_CLASSES)  # the file is read once
    metadata, rows = stored.metadata, stored.rows
    if not rows:
        raise CheckpointError(f"{run}: the newest checkpoint holds no elites")
    config = RunConfig.from_json(json.dumps(metadata["config"]))
    model_name = str(metadata["model"])
    given = named_stored_model(model_name, model, where=run)
    if given is not None and given != model_name:
        raise UserError(
            f"--model {given} is not {run}'s network ({model_name}); its elites are scored on the "
            "network they were evolved against (name other networks with --to)"
        )
    images = None
    source = "stored images"
    if stored.checkpoint is not None:
        try:
            archive = stored.checkpoint.archive
            encoding = make_encoding(config, get_model_spec(model_name))
            cells = archive.occupied_cells()
            genomes = archive.genomes.take(cells)
            images = torch.cat(
                [encoding.render(genomes.take(slice(s, s + 256)), "cpu") for s in range(0, len(cells), 256)]
            ).clamp(0, 1)
            names = [archive.class_names[c] for c in cells]
            fitness = archive.fitness[cells]
            elite_cells = cells
            source = "genomes"
        except LookupError as error:  # an encoding this build does not have
            logger.info("rendering %s from stored images (%s)", run, error)
            images = None
    if images is None:
        if any(not row["image_png"] for row in rows):
            raise CheckpointError(f"{run}: genomes of an unknown kind and no stored images")
        images = torch.from_numpy(stored_images(rows, stored.uri)).permute(0, 3, 1, 2).float() / 255.0
        names = [row["class_name"] for row in rows]
        fitness = np.array([row["fitness"] for row in rows], dtype=np.float32)
        elite_cells = [row["class_id"] for row in rows]
    return Elites(
        run, config, model_name, names, np.asarray(fitness, np.float32), images, source,
        str(metadata.get("weights_hash", "")), np.asarray(elite_cells, np.int64),
    )  # fmt: skip


def check_weights(elites: Elites, model: LoadedModel) -> None:
    """Refuse to rescore ``elites`` when their network's weights changed since the run.

    Resuming refuses it too: the stored confidences would belong to another network.

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


def score_all(scorer: Scorer, images: torch.Tensor, batch_size: int = 128) -> np.ndarray:
    """Probabilities ``(n, num_classes)`` of ``images`` (any size; fitted first)."""
    parts = [
        scorer.score(fit_images(images[start : start + batch_size], scorer))
        for start in range(0, len(images), batch_size)
    ]
    return np.concatenate(parts)


def markdown_table(header: list[str], rows: list[list[str]]) -> str:
    """A Markdown table, without a trailing newline.

    Args:
        header: the column titles.
        rows: the cells of each row, as text, one per column.

    Returns:
        The header line, the separator line and one line per row.
    """
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(row) + " |" for row in rows]
    return "\n".join(lines)


# --- transfer --------------------------------------------------------------------------------


def class_map(source: tuple[str, ...], target: tuple[str, ...], names: list[str]) -> np.ndarray:
    """Index in ``target`` of each of ``names`` matched by name, case-insensitively (-1: none)."""
    index = {name.lower(): i for i, name in enumerate(target)}
    return np.array([index.get(name.lower(), -1) for name in names], dtype=np.int64)
