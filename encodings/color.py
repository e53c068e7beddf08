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
