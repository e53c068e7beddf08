"""Tiny 'installed' packages for the plugin tests (pytest puts ``tests/`` on ``sys.path``).

A package here is one module and its ``*.dist-info`` (whose ``entry_points.txt`` declares the
plugins) in a folder put first on ``sys.path``, as ``pip install --target`` would leave them.
"""

from __future__ import annotations

import contextlib
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

# A scoring engine written against the interface only: the network in float64 on the CPU.
# Each batch it scores is written down, so a test sees that this engine did the scoring.
FLOAT64_ENGINE = """
import torch

from fooling.fitness.engines import EngineSession, ScoringEngine, model_call

BATCHES = []


class Float64Session(EngineSession):
    def __init__(self, model):
        self.name = model.spec.name
        self.network = model.network
        self.mean = torch.tensor(model.spec.mean, dtype=torch.float64).view(1, -1, 1, 1)
        self.std = torch.tensor(model.spec.std, dtype=torch.float64).view(1, -1, 1, 1)

    def probabilities(self, images):
        BATCHES.append(tuple(images.shape))
        inputs = (images.detach().to("cpu", torch.float64) - self.mean) / self.std
        with torch.no_grad(), model_call(self.name):
            logits = self.network.double()(inputs)
        self.network.float()
        return torch.softmax(logits, 1).float().numpy()


class Float64Engine(ScoringEngine):
    name = "float64"
    title = "float64 torch"
    help = "the network in double precision on the CPU"
    devices = frozenset({"cpu"})

    def session(self, model, options):
        return Float64Session(model)


class NotAnEngine:
    name = "broken"
"""


@contextlib.contextmanager
def installed_package(
    site: Path, monkeypatch: pytest.MonkeyPatch, module: str, source: str, entry_points: str
) -> Iterator[Path]:
    """While inside: module ``module`` (``source``) and its dist-info declaring ``entry_points`` in ``site``.

    Args:
        site: the folder, put first on ``sys.path`` (``monkeypatch`` takes it off again).
        monkeypatch: the test's.
        module: the module's name (its distribution's, with ``-`` for ``_``); unloaded on leaving.
        source: the module's code.
        entry_points: the text of ``entry_points.txt`` (``[group]`` lines, ``name = module:object``).

    Yields:
        ``site``.
    """
    info = site / f"{module}-1.0.dist-info"
    info.mkdir(parents=True)
    (site / f"{module}.py").write_text(source)
    (info / "METADATA").write_text(f"Metadata-Version: 2.1\nName: {module.replace('_', '-')}\nVersion: 1.0\n")
    (info / "entry_points.txt").write_text(entry_points)
    monkeypatch.syspath_prepend(str(site))
    try:
        yield site
    finally:
        sys.modules.pop(module, None)
