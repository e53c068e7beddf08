"""Models from outside the registry on Ray: model files reach the scorer actors through the object
store (never through the driver's path), and an installed plugin (a model, or a scoring engine)
resolves on the workers.

Every network here is tiny, built and saved inside the test; every run uses the session's
loopback-only Ray instance.
"""

from __future__ import annotations

import os
import warnings
from pathlib import Path

import pytest
import torch
from plugin_packages import FLOAT64_ENGINE, installed_package
from torch import nn

import fooling.evo.run as run_module
import fooling.fitness._plugins as plugins
from fooling.evo.cli import main
from fooling.evo.config import RunConfig
from fooling.evo.distributed.backend import model_for_actors
from fooling.evo.run import GENOME_CLASSES, evolve
from fooling.evo.store.checkpoint import read_latest_checkpoint
from fooling.fitness import load_model
from fooling.fitness.engines import engine_import_paths
from fooling.fitness.sources import plugin_entry_points, plugin_import_paths

SIZE = 16
# Seconds any ray.get here may wait.
GET_TIMEOUT_S = 120


class ConvNet(nn.Module):
    """``(batch, 3, H, W)`` -> ``(batch, 5)`` logits."""

    def __init__(self) -> None:
        super().__init__()
        self.features = nn.Sequential(nn.Conv2d(3, 6, 3), nn.ReLU(), nn.AdaptiveAvgPool2d(2), nn.Flatten())
        self.head = nn.Linear(24, 5)

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        return self.head(self.features(images)) * 4.0


def tiny() -> nn.Module:
    torch.manual_seed(0)
    return ConvNet().eval()


def save(path: Path) -> Path:
    """``tiny()`` saved in the format ``path``'s suffix names (TorchScript, torch.export, ONNX)."""
    example = torch.zeros(2, 3, SIZE, SIZE)
    with warnings.catch_warnings(), torch.no_grad():
        warnings.simplefilter("ignore")
        if path.suffix == ".pt":
            torch.jit.save(torch.jit.script(tiny()), str(path))
        elif path.suffix == ".pt2":
            batch = torch.export.Dim("batch")
            torch.export.save(
                torch.export.export(tiny(), (example,), dynamic_shapes=({0: batch},)), str(path)
            )
        else:
            torch.onnx.export(tiny(), (example,), str(path), dynamo=False, input_names=["x"],
                              dynamic_axes={"x": {0: "n"}})  # fmt: skip
    return path


@pytest.fixture(autouse=True)
def private_home(tmp_path, monkeypatch):
    """A fresh FOOLING_HOME (the ONNX cache) for each test, unless a session one is set up."""
    if "FOOLING_HOME" not in os.environ:
        monkeypatch.setenv("FOOLING_HOME", str(tmp_path / "home"))


# --- model files: through the object store, checked on arrival --------------------------------


@pytest.mark.parametrize("suffix", [".pt", ".pt2", ".onnx"])
def test_a_model_file_reaches_the_scorers_through_the_object_store(
    ray_session, tmp_path, monkeypatch, suffix
):
    path = save(tmp_path / f"net{suffix}")
    reference = f"{path.absolute()}?input-size={SIZE},{SIZE}"
    tiny_run = {"model": reference, "generations": 3, "population": 24, "batch_size": 8, "engine": "torch"}
    local = evolve(RunConfig(**tiny_run, out=str(tmp_path / "local")), show_progress=False)
    original = run_module.load_or_train
    moved = tmp_path / "elsewhere"

    def load_then_move(name):
        model = original(name)
        path.rename(moved)  # the driver has read the file: the actors can only get it from the driver
        return model

    monkeypatch.setattr(run_module, "load_or_train", load_then_move)
    remote = evolve(
        RunConfig(**tiny_run, out=str(tmp_path / "ray"), workers=1, scorers=1), show_progress=False
    )
    assert not path.exists() and moved.exists()
    assert remote.archive.equals(local.archive)


def test_a_scorer_rebuilds_a_model_file_from_the_object_store_alone(ray_session, tmp_path):
    """The bytes travel with their SHA-256; the actor never sees the driver's file."""
    path = save(tmp_path / "net.pt2")
    model = load_model(f"{path}?input-size={SIZE},{SIZE}")
    reference = ray_session.put(model)
    path.unlink()

    @ray_session.remote(num_cpus=0.01, num_gpus=0)
    def score(model, images):
        with torch.no_grad():
            return model.network.sha256, model.network(images)

    images = torch.rand(3, 3, SIZE, SIZE)
    sha256, logits = ray_session.get(score.remote(reference, images), timeout=GET_TIMEOUT_S)
    assert sha256 == model.network.sha256
    with torch.no_grad():
        torch.testing.assert_close(logits, tiny()(images))


# --- plugins: resolved on the workers as on the driver -----------------------------------------

PLUGIN = """
import torch
from torch import nn

from fooling.fitness import ModelSpec


class Compass(nn.Module):
    def __init__(self):
        super().__init__()
        torch.manual_seed(0)
        self.head = nn.Linear(144, 4)

    def forward(self, images):
        return self.head(images.flatten(1)) * 3.0


def make_spec():
    return ModelSpec(name="fake-plugin", channels=1, input_size=(12, 12), mean=(0.0,), std=(1.0,),
                     class_names=("north", "south", "east", "west"), build=lambda: Compass().eval())
"""


@pytest.fixture
def plugin(tmp_path, monkeypatch):
    """A package declaring a ``fooling.models`` entry point, 'installed' in a folder that only
    this process has on ``sys.path`` (the Ray instance started before it existed)."""
    points = "[fooling.models]\nfake-plugin = fake_ray_plugin:make_spec\n"
    with installed_package(tmp_path / "site", monkeypatch, "fake_ray_plugin", PLUGIN, points) as site:
        yield site


def test_a_plugin_resolves_on_the_workers(ray_session, plugin):
    model = load_model("fake-plugin")
    assert plugin_import_paths(model.spec) == (str(plugin.resolve()),)

    @ray_session.remote(num_cpus=0.01, num_gpus=0)
    def on_worker(model):
        return sorted(plugin_entry_points()), model.spec.class_names, type(model.network).__module__

    found = ray_session.get(on_worker.remote(model_for_actors(model)), timeout=GET_TIMEOUT_S)
    assert found == (["fake-plugin"], ("north", "south", "east", "west"), "fake_ray_plugin")


def _here_and_on_ray(tmp_path, capsys, *flags: str):
    """The checkpoints of a tiny ``evolve`` with ``flags``: here, then on one mutator and one scorer."""
    args = ["evolve", *flags, "--generations", "3", "--population", "24", "--batch-size", "8",
            "--no-progress", "--no-report"]  # fmt: skip
    assert main([*args, "--out", str(tmp_path / "local")]) == 0
    code = main([*args, "--out", str(tmp_path / "ray"), "--workers", "1", "--scorers", "1"])
    captured = capsys.readouterr()
    assert code == 0, captured.err
    local = read_latest_checkpoint(str(tmp_path / "local"), GENOME_CLASSES)
    return local, read_latest_checkpoint(str(tmp_path / "ray"), GENOME_CLASSES)


def test_a_plugin_model_evolves_on_ray_as_in_process(ray_session, plugin, tmp_path, capsys):
    local, remote = _here_and_on_ray(tmp_path, capsys, "--model", "fake-plugin")
    assert remote.model_source["kind"] == "plugin" and remote.config.workers == 1
    assert list(remote.archive.class_names) == ["north", "south", "east", "west"]
    assert remote.archive.equals(local.archive)


def test_a_plugin_in_site_packages_travels_as_it_is(plugin, lenet, monkeypatch):
    model = load_model("fake-plugin")
    assert model_for_actors(model) is not model
    # Installed in the interpreter's own site-packages, every worker of the environment sees it.
    monkeypatch.setattr(plugins, "_interpreter_folders", lambda: {plugin.resolve()})
    assert plugin_import_paths(model.spec) == () and model_for_actors(model) is model
    assert plugin_import_paths(lenet.spec) == () and model_for_actors(lenet) is lenet


@pytest.fixture
def engine_plugin(tmp_path, monkeypatch):
    """The float64 scoring engine, on this process's ``sys.path`` only (not the Ray workers')."""
    points = "[fooling.engines]\nfloat64 = fake_ray_engine:Float64Engine\n"
    with installed_package(
        tmp_path / "engine", monkeypatch, "fake_ray_engine", FLOAT64_ENGINE, points
    ) as site:
        yield site


def test_a_plugin_engine_scores_on_ray_as_in_process(ray_session, engine_plugin, lenet, tmp_path, capsys):
    assert engine_import_paths("float64") == (str(engine_plugin.resolve()),)
    assert engine_import_paths("torch") == engine_import_paths("auto") == ()
    assert model_for_actors(lenet, "float64") is not lenet and model_for_actors(lenet, "torch") is lenet
    local, remote = _here_and_on_ray(tmp_path, capsys, "--engine", "float64")
    assert remote.config.engine == "float64" and remote.config.workers == 1
    assert remote.archive.equals(local.archive)
