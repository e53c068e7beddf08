"""Shared fixtures: a private FOOLING_HOME with a trained LeNet, never any download."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

# Tests never download: set before anything imports fooling.fitness.
os.environ["FOOLING_OFFLINE"] = "1"
os.environ["HF_HUB_OFFLINE"] = "1"  # a second guard: the hub's client never downloads in tests
_HOME = Path(os.environ.get("FOOLING_TEST_HOME", "")) if os.environ.get("FOOLING_TEST_HOME") else None


@pytest.fixture(scope="session")
def fooling_home(tmp_path_factory) -> Path:
    """A session-wide ``$FOOLING_HOME`` holding ``mnist-lenet`` (trained once, ~20 s on 2 cores)."""
    home = _HOME or tmp_path_factory.mktemp("fooling-home")
    os.environ["FOOLING_HOME"] = str(home)
    from fooling.fitness import lenet_weights_path, train_lenet

    if not lenet_weights_path(0).exists():
        train_lenet(0)
    return home


@pytest.fixture(scope="session")
def lenet(fooling_home):
    """The trained ``mnist-lenet`` as a :class:`fooling.fitness.LoadedModel`."""
    from fooling.fitness import load_model

    return load_model("mnist-lenet")


class ReplayingCapture:
    """A CPU stand-in for :func:`fooling.encodings.graphs.capture_cuda_graph`; counts recordings.

    It records by running the function and replays by running it again into the recorded
    outputs, from the recording's inputs and generator: what a CUDA graph's replay computes.
    ``fail``: every recording raises as a capture that met a wait for the device does.
    """

    def __init__(self, fail: bool = False) -> None:
        self.recorded = 0
        self.fail = fail

    def __call__(self, function, inputs, generator):
        self.recorded += 1
        if self.fail:
            raise RuntimeError("operation not permitted when stream is capturing\nCUDA kernel errors ...")
        outputs = function(inputs, generator)

        def replay() -> None:
            for name, tensor in function(inputs, generator).items():
                outputs[name].copy_(tensor)

        return outputs, replay


@pytest.fixture
def replaying_capture() -> type[ReplayingCapture]:
    """:class:`ReplayingCapture`, for a :class:`~fooling.encodings.graphs.GraphedFunction`'s ``capture``."""
    return ReplayingCapture


@pytest.fixture
def replayed_graphs(monkeypatch) -> ReplayingCapture:
    """Every :class:`~fooling.encodings.graphs.GraphedFunction` records and replays, on any device.

    On the CPU they call their function otherwise; here they go through one
    :class:`ReplayingCapture` (returned, to count its recordings), as on CUDA through graphs.
    """
    from fooling.encodings import cppn_triton
    from fooling.encodings.graphs import GraphedFunction

    capture = ReplayingCapture()
    monkeypatch.setattr(GraphedFunction, "_capture_for", lambda self, device: capture)
    monkeypatch.setattr(cppn_triton, "_GRAPHED_COMPILE", {})
    return capture
