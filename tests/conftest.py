"""Shared fixtures: a private FOOLING_HOME with a trained LeNet, never any download."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

# Tests never download: set before anything imports fooling.fitness.
os.environ["FOOLING_OFFLINE"] = "1"
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
