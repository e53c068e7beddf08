"""Small set-ups that tests in several folders share (pytest puts ``tests/`` on ``sys.path``)."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import torch
from torch import nn

from fooling.evo.config import RunConfig
from fooling.evo.experiments.retrain import RetrainResult, RetrainSettings, retrain

LABELS = ("cat", "dog", "owl", "fox", "yak")


def tiny(seed: int) -> nn.Module:
    """A tiny classifier of 3-channel images (16x16 or larger) into :data:`LABELS`."""
    torch.manual_seed(seed)
    layers = [
        nn.Conv2d(3, 6, 3),
        nn.ReLU(),
        nn.AdaptiveAvgPool2d(2),
        nn.Flatten(),
        nn.Linear(24, len(LABELS)),
    ]
    return nn.Sequential(*layers).eval()


def torchscript_reference(folder: Path, seed: int = 0) -> tuple[Path, str]:
    """``tiny(seed)`` saved as TorchScript in ``folder`` with ``labels.txt``.

    Returns:
        The file and the ``--model`` reference that reads it (16x16 inputs, :data:`LABELS`).
    """
    path = folder / f"net{seed}.pt"
    torch.jit.save(torch.jit.script(tiny(seed)), str(path))
    (folder / "labels.txt").write_text("\n".join(LABELS) + "\n")
    return path, f"{path.absolute()}?labels={folder.absolute() / 'labels.txt'}&input-size=16,16"


def small_retrain(out: Path, **changes) -> RetrainResult:
    """Two MNIST retraining rounds of 3 generations x 16 children, seed 5, 1 LeNet epoch.

    Args:
        out: the retraining folder.
        **changes: :class:`RunConfig` fields go to every round's run, others to the retraining.
    """
    run_fields = {field.name for field in dataclasses.fields(RunConfig)}
    given = {key: value for key, value in changes.items() if key in run_fields}
    run = RunConfig(**{"generations": 3, "population": 16, "seed": 5, "out": str(out), **given})
    own = {key: value for key, value in changes.items() if key not in run_fields}
    return retrain(RetrainSettings(run=run, **{"rounds": 2, "epochs": 1, **own}))
