"""Occlusion and repetition removal: how much of an image a classifier's confidence rests on.

The paper (section 3.2) removed repeated elements of CPPN images by hand and saw the
confidence drop "by a little". Here the same test is automated on a tile grid:

- *occlusion*: tiles, in a random order fixed per image, are replaced by the image's
  mean colour, so the fraction of the image kept shrinks from 1 to 0;
- *repetition removal*: a tile whose motif also appears elsewhere in the image (at any
  position, not only on the grid) is replaced by the mean, as long as one copy stays
  visible, compared with replacing as many randomly chosen tiles.

Nothing here knows of archives or runs: images in, probabilities out.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable

import numpy as np
import torch

from fooling.fitness.scorer import Scorer

# Largest tile side (pixels) at which repeats are searched for: the image is shrunk so
# that a tile is at most this wide, which bounds the search's cost whatever the image size.
SEARCH_TILE = 16


def _tile_slices(height: int, width: int, grid: int) -> list[tuple[slice, slice]]:
    """``grid * grid`` (row, column) slices covering the image; edge tiles take the remainder."""
    rows = np.linspace(0, height, grid + 1).round().astype(int)
    cols = np.linspace(0, width, grid + 1).round().astype(int)
    return [
        (slice(rows[i], rows[i + 1]), slice(cols[j], cols[j + 1])) for i in range(grid) for j in range(grid)
    ]


def replace_tiles(images: torch.Tensor, masks: np.ndarray, grid: int) -> torch.Tensor:
    """Copies of ``images`` whose masked tiles hold the image's per-channel mean.

    Args:
        images: ``(n, channels, height, width)`` float in ``[0, 1]``.
        masks: ``(n, grid * grid)`` bool, True for tiles to replace.
        grid: tiles per side.

    Returns:
        ``(n, channels, height, width)`` float.

    Raises:
        ValueError: ``masks`` of the wrong shape.
    """
    if masks.shape != (images.shape[0], grid * grid):
        raise ValueError(f"masks of shape {masks.shape}, expected ({images.shape[0]}, {grid * grid})")
    out = images.clone()
    # The mean of the whole image, not of the tile: a grey-ish patch that carries no
    # texture, as in "replaced by the mean" of occlusion studies.
    means = images.mean(dim=(2, 3), keepdim=True)
    for tile, (rows, cols) in enumerate(_tile_slices(images.shape[2], images.shape[3], grid)):
        hit = torch.from_numpy(masks[:, tile])
        if hit.any():
            out[hit, :, rows, cols] = means[hit].expand(
                -1, -1, rows.stop - rows.start, cols.stop - cols.start
            )
    return out


def _score(
    scorer: Scorer,
    images: torch.Tensor,
    class_ids: np.ndarray,
    batch_size: int,
    prepare: Callable[[torch.Tensor], torch.Tensor] | None = None,
) -> np.ndarray:
    """Probability of ``class_ids[i]`` for each image, ``(n,)`` float32.

    ``prepare`` is applied to each batch first, e.g. a resize to the scorer's input size.
    """
    parts = []
    for start in range(0, images.shape[0], batch_size):
        batch = images[start : start + batch_size]
        probabilities = scorer.score(prepare(batch) if prepare is not None else batch)
        parts.append(probabilities[np.arange(probabilities.shape[0]), class_ids[start : start + batch_size]])
    return np.concatenate(parts) if parts else np.zeros(0, np.float32)


def occlusion_curve(
    scorer: Scorer,
    images: torch.Tensor,
    class_ids: np.ndarray,
    fractions_kept: np.ndarray,
    *,
    grid: int = 4,
    seed: int = 0,
    batch_size: int = 256,
) -> np.ndarray:
    """Confidence in each image's class as growing parts of it are occluded.

    The occluded tiles are nested: every image gets one random tile order (drawn from
    ``seed``), and keeping a fraction ``f`` occludes the first ``round((1 - f) * grid**2)``
    tiles of that order, so a smaller fraction kept never shows a tile a larger one hid.

    Args:
        scorer: the classifier (images must already be of ``scorer.image_size``).
        images: ``(n, channels, height, width)`` float in ``[0, 1]``.
        class_ids: ``(n,)`` class whose probability is tracked for each image.
        fractions_kept: ``(k,)`` fractions of tiles left visible, in ``[0, 1]``.
        grid: tiles per side (``grid * grid`` tiles).
        seed: seeds the tile orders.
        batch_size: images per scoring batch.

    Returns:
        ``(n, k)`` float32 probabilities.

    Raises:
        ValueError: a fraction outside ``[0, 1]`` or ``grid < 1``.
    """
    fractions_kept = np.asarray(fractions_kept, dtype=np.float64)
    if grid < 1:
        raise ValueError(f"grid must be >= 1, not {grid}")
    if ((fractions_kept < 0) | (fractions_kept > 1)).any():
        raise ValueError("fractions kept must lie in [0, 1]")
    tiles = grid * grid
    rng = np.random.default_rng(seed)
    orders = np.stack([rng.permutation(tiles) for _ in range(images.shape[0])]) if len(images) else None
    curves = np.zeros((images.shape[0], len(fractions_kept)), dtype=np.float32)
    if orders is None:
        return curves
    for column, kept in enumerate(fractions_kept):
        hidden = int(round((1 - kept) * tiles))
        masks = np.zeros((images.shape[0], tiles), dtype=bool)
        np.put_along_axis(masks, orders[:, :hidden], True, axis=1)
        curves[:, column] = _score(scorer, replace_tiles(images, masks, grid), class_ids, batch_size)
    return curves


def repeated_tiles(images: torch.Tensor, *, grid: int = 4, tolerance: float = 0.05) -> np.ndarray:
    """Tiles whose motif also appears, fully visible, elsewhere in the same image.

    Each tile is searched for at every position of the image (not only at other grid
    tiles), so a motif repeated with a period that does not match the grid is found too.
    Tiles are visited in raster order; a tile is marked for removal when a window that
    nearly equals it (mean absolute pixel difference at most ``tolerance``, images in
    ``[0, 1]``) lies entirely in the part of the image still visible, i.e. outside this
    tile and the tiles already marked. So every motif keeps one visible copy. Flat tiles
    (standard deviation below ``tolerance``) are background, not motifs, and stay.
    The search runs on a copy shrunk to at most :data:`SEARCH_TILE` pixels per tile side
    (area averaging), which keeps it to one small matrix per tile.

    Args:
        images: ``(n, channels, height, width)`` float in ``[0, 1]``.
        grid: tiles per side.
        tolerance: largest mean absolute pixel difference of two copies of a motif.

    Returns:
        ``(n, grid * grid)`` bool, True for tiles to remove.
    """
    n, channels, height, width = images.shape
    side = max(1, min(SEARCH_TILE, height // grid, width // grid))
    size = grid * side
    small = torch.nn.functional.interpolate(images.float(), size=(size, size), mode="area")
    positions = size - side + 1
    # windows[i, :, y * positions + x]: the side x side window at (y, x) of image i.
    windows = torch.nn.functional.unfold(small, side)  # (n, channels * side * side, positions**2)
    masks = np.zeros((n, grid * grid), dtype=bool)
    for index in range(n):
        hidden = torch.zeros(1, 1, size, size)
        for tile in range(grid * grid):
            top, left = (tile // grid) * side, (tile % grid) * side
            motif = windows[index, :, top * positions + left]
            if motif.std() < tolerance:
                continue  # flat: background, not a repeated element
            hidden_here = hidden.clone()
            hidden_here[..., top : top + side, left : left + side] = 1
            # A window is usable when no pixel of it is hidden (this tile or one removed).
            usable = torch.nn.functional.avg_pool2d(hidden_here, side, stride=1).flatten() == 0
            if not usable.any():
                continue
            difference = (windows[index][:, usable] - motif[:, None]).abs().mean(0)
            if float(difference.min()) <= tolerance:
                masks[index, tile] = True
                hidden = hidden_here
    return masks


@dataclasses.dataclass
class RepetitionResult:
    """Confidences with and without repeated tiles, per image.

    Attributes:
        removed: ``(n,)`` int, repeated tiles removed from each image.
        original: ``(n,)`` float32 confidence in the image's class.
        without_repeats: ``(n,)`` confidence with the repeats replaced by the mean.
        random_control: ``(n,)`` confidence with as many random tiles replaced instead.
    """

    removed: np.ndarray
    original: np.ndarray
    without_repeats: np.ndarray
    random_control: np.ndarray


def repetition_test(
    scorer: Scorer,
    images: torch.Tensor,
    class_ids: np.ndarray,
    *,
    grid: int = 4,
    tolerance: float = 0.05,
    seed: int = 0,
    batch_size: int = 256,
    prepare: Callable[[torch.Tensor], torch.Tensor] | None = None,
) -> RepetitionResult:
    """Remove repeated tiles of each image and score it, with a random-tile control.

    Args:
        scorer: the classifier (images of ``scorer.image_size``, or made so by ``prepare``).
        images: ``(n, channels, height, width)`` float in ``[0, 1]``.
        class_ids: ``(n,)`` class tracked for each image.
        grid: tiles per side (see :func:`repeated_tiles`).
        tolerance: largest mean absolute pixel difference of two copies of a motif (see
            :func:`repeated_tiles`).
        seed: seeds the control's random tiles.
        batch_size: images per scoring batch.
        prepare: applied to each batch before scoring (tiles are found and replaced at the
            images' own size, as evolved), e.g. a resize to ``scorer.image_size``.

    Returns:
        The tiles removed and the confidences of the originals, without repeats and of the
        random-tile control.
    """
    masks = repeated_tiles(images, grid=grid, tolerance=tolerance)
    removed = masks.sum(axis=1)
    rng = np.random.default_rng(seed)
    control = np.zeros_like(masks)
    for index, count in enumerate(removed):
        control[index, rng.permutation(masks.shape[1])[:count]] = True
    return RepetitionResult(
        removed=removed,
        original=_score(scorer, images, class_ids, batch_size, prepare),
        without_repeats=_score(scorer, replace_tiles(images, masks, grid), class_ids, batch_size, prepare),
        random_control=_score(scorer, replace_tiles(images, control, grid), class_ids, batch_size, prepare),
    )
