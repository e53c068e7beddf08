"""Colour-space conversions of image batches, in torch so they run on the scorer's device."""

from __future__ import annotations

import torch


def hsv_to_rgb(images: torch.Tensor) -> torch.Tensor:
    """Convert ``(batch_size, 3, height, width)`` HSV in ``[0, 1]`` to RGB in ``[0, 1]``."""
    hue, saturation, value = images.unbind(1)
    # Standard piecewise-linear form: channel k is v - v*s*clamp(min(t, 4 - t), 0, 1).
    offsets = torch.tensor([5.0, 3.0, 1.0], device=images.device, dtype=images.dtype)
    t = (offsets.view(1, 3, 1, 1) + hue.unsqueeze(1) * 6.0) % 6.0
    weight = torch.clamp(torch.minimum(t, 4.0 - t), 0.0, 1.0)
    return value.unsqueeze(1) * (1.0 - saturation.unsqueeze(1) * weight)


def hls_to_rgb(images: torch.Tensor) -> torch.Tensor:
    """Convert ``(batch_size, 3, height, width)`` HLS in ``[0, 1]`` to RGB in ``[0, 1]``."""
    hue, lightness, saturation = images.unbind(1)
    chroma = (1.0 - torch.abs(2.0 * lightness - 1.0)) * saturation
    offsets = torch.tensor([0.0, 8.0, 4.0], device=images.device, dtype=images.dtype)
    k = (offsets.view(1, 3, 1, 1) + hue.unsqueeze(1) * 12.0) % 12.0
    amount = torch.clamp(torch.minimum(k - 3.0, 9.0 - k), -1.0, 1.0)
    return lightness.unsqueeze(1) - 0.5 * chroma.unsqueeze(1) * amount


def hls_bytes_to_rgb(outputs: torch.Tensor) -> torch.Tensor:
    """The original code's colour mapping: CPPN outputs as OpenCV 8-bit HLS, to RGB in ``[0, 1]``.

    Each output ``o`` becomes the byte ``trunc(|o| * 255)``; the three bytes are read as
    H, L, S and converted the way OpenCV's 8-bit ``COLOR_HLS2BGR`` does: hue is the byte
    times 2 degrees, so bytes past 180 wrap around the hue circle (``|o| = 1`` is 150
    degrees), lightness and saturation are the byte / 255, and each result channel is
    rounded to a byte (half to even, as ``cvRound``).

    Args:
        outputs: ``(batch_size, 3, height, width)`` CPPN outputs (any sign; ``|o| <= 1``).

    Returns:
        ``(batch_size, 3, height, width)`` RGB in ``[0, 1]``, multiples of 1/255.
    """
    levels = torch.floor(outputs.abs().clamp(0.0, 1.0) * 255.0)
    hue_degrees = torch.remainder(levels[:, 0] * 2.0, 360.0)
    hls = torch.stack([hue_degrees / 360.0, levels[:, 1] / 255.0, levels[:, 2] / 255.0], dim=1)
    return torch.round(hls_to_rgb(hls) * 255.0) / 255.0
