"""Genomes as uint8 images: the thumbnails checkpoints store, the images experiments train on.

Scoring renders float images on the scorer's device (:mod:`fooling.evo.evaluation`); this is
the rendering into 8-bit pixels that files and training sets hold (on the CPU unless asked).
"""

from __future__ import annotations

import numpy as np
import torch

from fooling.encodings import GenomeBatch


def render_uint8(
    encoding, genomes: GenomeBatch, batch_size: int = 256, device: str | torch.device = "cpu"
) -> np.ndarray:
    """Images of ``genomes`` as uint8, ``(n, height, width)`` gray or ``(n, height, width, 3)``.

    Args:
        encoding: renders the genomes (``encoding.render(genomes, device)``: floats in [0, 1],
            ``(n, channels, height, width)``), as :func:`fooling.evo.evaluation.make_encoding`
            makes it.
        genomes: the genomes to render.
        batch_size: genomes rendered at a time.
        device: where they are rendered (a run on a CUDA GPU renders its checkpoints'
            thumbnails there; only the bytes come back).

    Returns:
        One image per genome, pixels rounded from [0, 1] to 0..255.
    """
    parts = []
    for start in range(0, len(genomes), batch_size):
        images = encoding.render(genomes.take(slice(start, start + batch_size)), device)
        parts.append((images.clamp(0, 1) * 255).round().to(torch.uint8).permute(0, 2, 3, 1).cpu().numpy())
    images = np.concatenate(parts) if parts else np.zeros((0, 1, 1, 1), np.uint8)
    return images[..., 0] if images.shape[-1] == 1 else images
