"""Animated 4-panel views of a gradient run: image, change, class probabilities, loss."""

from __future__ import annotations

import io
from collections.abc import Sequence

import numpy as np
import torch

# Figures are built with matplotlib.figure.Figure, never pyplot: no global backend is
# chosen at import (notebooks keep inline plots) and savefig picks Agg for PNG itself.
from matplotlib.figure import Figure
from PIL import Image

PANELS = ("image", "change since previous frame", "class probability", "loss")


def _to_display(image: torch.Tensor) -> np.ndarray:
    """``(channels, height, width)`` in [0, 1] -> ``(height, width[, 3])`` for imshow."""
    array = image.clamp(0, 1).permute(1, 2, 0).numpy()
    return array[..., 0] if array.shape[-1] == 1 else array


def frame_figure(
    frames: torch.Tensor,
    frame_steps: Sequence[int],
    index: int,
    probabilities: torch.Tensor,
    loss: torch.Tensor,
    class_names: Sequence[str],
    *,
    source: int,
    target: int | None,
    others: int = 3,
):
    """The figure of frame ``index`` of one image's run.

    Args:
        frames: ``(num_frames, channels, height, width)`` snapshots.
        frame_steps: step of each snapshot.
        index: which frame to draw (0-based; frame ``index - 1`` gives the change panel).
        probabilities: ``(steps + 1, num_classes)`` softmax per step.
        loss: ``(steps + 1,)`` loss per step.
        class_names: ``(num_classes,)`` names for titles and legend labels.
        source: the image's original label.
        target: the class pushed towards (or None).
        others: how many other top classes (at the end) get a labelled line.

    Returns:
        A matplotlib figure with the four panels of :data:`PANELS`.
    """
    figure = Figure(figsize=(13, 3.3), layout="constrained")
    axes = figure.subplots(1, 4)
    step = int(frame_steps[index])
    image = frames[index]
    axes[0].imshow(_to_display(image), cmap="gray", vmin=0, vmax=1)
    top = int(probabilities[step].argmax())
    axes[0].set_title(f"step {step}: {class_names[top][:22]} {100 * float(probabilities[step, top]):.1f}%",
                      fontsize=9)  # fmt: skip
    change = (image - frames[index - 1]) if index > 0 else torch.zeros_like(image)
    magnitude = change.abs().mean(0).numpy()
    axes[1].imshow(magnitude, cmap="magma", vmin=0, vmax=max(float(magnitude.max()), 1e-6))
    axes[1].set_title(
        f"change since previous frame (max {255 * float(change.abs().max()):.1f}/255)", fontsize=9
    )
    for axis in axes[:2]:
        axis.set_xticks([])
        axis.set_yticks([])
    steps = np.arange(probabilities.shape[0])
    shown = steps <= step
    final = probabilities[-1]
    highlighted = [c for c in final.argsort(descending=True).tolist() if c not in (source, target)][:others]
    for cls in highlighted:
        axes[2].plot(steps[shown], probabilities[shown, cls].numpy(), color="gray", lw=1,
                     label=class_names[cls][:20])  # fmt: skip
    axes[2].plot(steps[shown], probabilities[shown, source].numpy(), color="tab:blue", lw=2,
                 label=f"source: {class_names[source][:18]}")  # fmt: skip
    if target is not None:
        axes[2].plot(steps[shown], probabilities[shown, target].numpy(), color="red", lw=2.5,
                     label=f"target: {class_names[target][:18]}")  # fmt: skip
    axes[2].set_xlim(0, max(1, len(steps) - 1))
    axes[2].set_ylim(-0.02, 1.02)
    axes[2].set_xlabel("step")
    axes[2].set_title("class probability", fontsize=9)
    axes[2].legend(fontsize=7, loc="center right")
    axes[3].plot(steps[shown], loss[shown].numpy(), color="black")
    axes[3].set_xlim(0, max(1, len(steps) - 1))
    low, high = float(loss.min()), float(loss.max())
    axes[3].set_ylim(low - 0.05 * (high - low + 1e-6), high + 0.05 * (high - low + 1e-6))
    axes[3].set_xlabel("step")
    axes[3].set_title("loss", fontsize=9)
    return figure


def _figure_image(figure) -> Image.Image:
    buffer = io.BytesIO()
    figure.savefig(buffer, format="png", dpi=80)
    buffer.seek(0)
    return Image.open(buffer).convert("RGB")


def animation_frames(frames: torch.Tensor, frame_steps: Sequence[int], probabilities: torch.Tensor,
                     loss: torch.Tensor, class_names: Sequence[str], *, source: int,
                     target: int | None) -> list[Image.Image]:  # fmt: skip
    """One picture per snapshot (see :func:`frame_figure` for the arguments)."""
    return [
        _figure_image(
            frame_figure(
                frames, frame_steps, i, probabilities, loss, class_names, source=source, target=target
            )
        )  # fmt: skip
        for i in range(len(frame_steps))
    ]


def save_gif(pictures: list[Image.Image], path, *, frame_ms: int = 150, last_ms: int = 2000) -> None:
    """Write ``pictures`` as a looping GIF to ``path`` (a file or a stream); the last frame stays longer."""
    durations = [frame_ms] * (len(pictures) - 1) + [last_ms]
    pictures[0].save(path, format="GIF", save_all=True, append_images=pictures[1:], duration=durations,
                     loop=0, optimize=False)  # fmt: skip
