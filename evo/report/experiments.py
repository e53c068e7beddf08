"""Figures of the experiments (transfer, ablation, retraining), as PNG bytes."""

from __future__ import annotations

import numpy as np
from matplotlib.figure import Figure

from fooling.evo.report.figures import figure_png


def transfer_figure(result, source: str, targets: list[str]) -> bytes:
    """PNG: each elite's confidence on the source network against each target network's.

    ``result`` is a :class:`~fooling.evo.experiments.transfer.TransferResult`.
    """
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
    return figure_png(figure)


def ablation_figure(result, repeats: dict[str, np.ndarray], has: np.ndarray) -> bytes:
    """PNG: confidence as tiles are hidden, and with repeated motifs removed vs a random control.

    ``result`` is an :class:`~fooling.evo.experiments.ablation.AblationResult`; ``repeats``
    maps original / without_repeats / random_control to per-elite confidences ``(elites,)``,
    ``has`` ``(elites,)`` bool marks the elites with repeated tiles.
    """
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
    return figure_png(figure)


def retrain_figure(rows: list[dict]) -> bytes:
    """PNG: median fooling confidence, test accuracy and classes >= 99.99% per retraining round."""
    rounds = [row["round"] for row in rows]
    figure = Figure(figsize=(6, 3.6))
    axis = figure.subplots()
    axis.plot(rounds, [100 * row["median"] for row in rows], "o-", label="median confidence (evolved)")
    axis.plot(rounds, [100 * row["test_accuracy"] for row in rows], "s--", label="test accuracy")
    axis.plot(
        rounds, [100 * row["at_9999"] / row["cells"] for row in rows], "^:", label="classes >= 99.99% (%)"
    )
    axis.set_xlabel("network DNN_k")
    axis.set_ylabel("%")
    axis.set_ylim(-2, 102)
    axis.set_xticks(rounds)
    axis.grid(alpha=0.3)
    axis.legend(fontsize=8, loc="lower left")
    axis.set_title("Fooling-class retraining", fontsize=10)
    return figure_png(figure)
