"""The scoring-engine registry: ``--engine``'s help, ``auto``, plugin engines (``fooling.engines``)."""

from __future__ import annotations

import argparse
import re
import sys

import numpy as np
import pytest
import torch
from plugin_packages import FLOAT64_ENGINE, installed_package

from fooling.evo.cli import main
from fooling.evo.cli.main import build_parser
from fooling.evo.run import GENOME_CLASSES
from fooling.evo.store.checkpoint import read_latest_checkpoint
from fooling.fitness import Scorer
from fooling.fitness.engines import (
    EngineUnavailableError,
    ScoringEngine,
    engine_help,
    engine_names,
    get_engine,
    plugin_engines,
    register_engine,
    resolve_engine,
)


@pytest.fixture
def plugin(tmp_path, monkeypatch):
    """A package declaring ``fooling.engines`` entry points, 'installed' on ``sys.path``."""
    points = (
        "[fooling.engines]\nfloat64 = fake_fooling_engine:Float64Engine\n"
        "broken = fake_fooling_engine:NotAnEngine\n"
    )
    with installed_package(
        tmp_path / "site", monkeypatch, "fake_fooling_engine", FLOAT64_ENGINE, points
    ) as site:
        yield site


def _engine_actions(parser: argparse.ArgumentParser, path: str = "fooling"):
    """``(command, --engine action)`` of every (sub)command that takes ``--engine``."""
    for action in parser._actions:
        if "--engine" in action.option_strings:
            yield path, action
        if isinstance(action, argparse._SubParsersAction):
            for name, child in action.choices.items():
                yield from _engine_actions(child, f"{path} {name}")


def _listed(help_text: str) -> list[str]:
    """The engine names a help text lists: ``scoring engine: NAME (...); NAME (...)``."""
    text = help_text.removeprefix("scoring engine: ")
    while re.search(r"\([^()]*\)", text):
        text = re.sub(r"\([^()]*\)", "", text)
    return [part.strip() for part in text.split(";")]


def test_engine_help_lists_exactly_the_registered_engines():
    actions = list(_engine_actions(build_parser()))
    assert {command for command, _ in actions} >= {"fooling evolve", "fooling transfer"}
    for command, action in actions:
        assert _listed(action.help.split(" (default:")[0]) == engine_names(), command
    # Nothing installed in this environment.
    assert engine_names() == ["auto", "endpoint", "onnxruntime", "torch"]
    for name in engine_names()[1:]:
        assert get_engine(name).help in engine_help()


def test_an_installed_engine_is_listed_without_loading_it(plugin):
    names = engine_names()
    assert names == ["auto", "endpoint", "onnxruntime", "torch", "broken", "float64"]
    for _, action in _engine_actions(build_parser()):
        assert _listed(action.help.split(" (default:")[0]) == names
    assert "fake_fooling_engine" not in sys.modules  # building the command line imported no plugin


def test_auto_and_explicit_engines_are_resolved_from_what_each_engine_declares(lenet):
    assert resolve_engine("auto", "cpu", lenet) == "onnxruntime"
    assert resolve_engine("auto", "cuda", lenet) == "torch"
    with pytest.raises(EngineUnavailableError, match="scores on the CPU, not cuda: use --engine torch"):
        resolve_engine("onnxruntime", "cuda")
    refusal = "--engine endpoint runs endpoint models only, and mnist-lenet is a module model: leave"
    with pytest.raises(EngineUnavailableError, match=refusal):
        resolve_engine("endpoint", "cpu", lenet)
    assert get_engine("onnxruntime").floats_depend_on_threads(torch.device("cpu")) is False
    assert get_engine("torch").floats_depend_on_threads(torch.device("cpu")) is True
    assert get_engine("torch").floats_depend_on_threads(torch.device("cuda")) is False


def test_a_plugin_engine_scores_a_tiny_mnist_run(plugin, fooling_home, lenet, tmp_path, capsys):
    assert set(plugin_engines()) == {"float64", "broken"}
    out = tmp_path / "run"
    args = ["--generations", "3", "--population", "20", "--no-progress", "--no-report"]
    assert main(["evolve", "--engine", "float64", "--out", str(out), *args]) == 0
    captured = capsys.readouterr()
    import fake_fooling_engine  # the plugin's module, imported by the registry

    assert fake_fooling_engine.BATCHES and all(
        shape[1:] == (1, 28, 28) for shape in fake_fooling_engine.BATCHES
    )
    # Every image of the 3 generations (20 each) went through it.
    assert sum(shape[0] for shape in fake_fooling_engine.BATCHES) == 60
    checkpoint = read_latest_checkpoint(str(out), GENOME_CLASSES)
    assert checkpoint.config.engine == "float64" and checkpoint.generation == 2, captured.out
    # Its scores are the network's: double precision agrees with torch's float32 to rounding.
    images = torch.rand(6, 1, 28, 28, generator=torch.Generator().manual_seed(0))
    by_plugin = Scorer(lenet, engine="FLOAT64", device="cpu")  # names are case-insensitive
    assert by_plugin.engine == "float64"
    np.testing.assert_allclose(
        by_plugin.score(images), Scorer(lenet, engine="torch", device="cpu").score(images), atol=1e-5
    )


def test_plugin_engines_refused_in_one_line(plugin, fooling_home, tmp_path, capsys):
    for engine, expected in [
        ("float6", "unknown engine 'float6'; did you mean 'float64'"),
        ("broken", "'broken' (fake_fooling_engine:NotAnEngine) is NotAnEngine, not a ScoringEngine"),
    ]:
        out = tmp_path / engine
        args = ["--generations", "2", "--out", str(out), "--no-progress"]
        assert main(["evolve", "--engine", engine, *args]) == 2
        err = capsys.readouterr().err.strip().splitlines()
        assert len(err) == 1 and expected in err[0], err
        assert not out.exists()
    with pytest.raises(EngineUnavailableError, match="scores on the CPU, not cuda: use --engine"):
        resolve_engine("float64", "cuda")


def test_engine_names_must_be_lower_case_and_not_auto():
    class Auto(ScoringEngine):
        name = "auto"

    class Shouting(ScoringEngine):
        name = "LOUD"

    for engine in (Auto(), Shouting()):
        with pytest.raises(ValueError, match="lower-case name"):
            register_engine(engine)
