"""Run settings on Ray actors give the archive the same run finds in this process."""

from __future__ import annotations

import pytest

from fooling.evo.config import RunConfig
from fooling.evo.emitters import EMITTERS
from fooling.evo.run import GENOME_CLASSES, evolve
from fooling.evo.store.checkpoint import read_latest_checkpoint

# Tiny CPPN searches on the LeNet: 16x16 renders, 3 generations of 12 children in 2 batches.
CPPN = dict(model="mnist-lenet", encoding="cppn", population=12, batch_size=6, seed=5, image_size=16,
            generations=3, checkpoint_every=0)  # fmt: skip
DIRECT = dict(model="mnist-lenet", population=40, batch_size=20, seed=5, generations=4, checkpoint_every=2)


def in_process_and_on_ray(tmp_path, **fields):
    """The searches of ``fields`` in this process and on one mutator and one scorer actor."""
    local = evolve(RunConfig(**fields, out=str(tmp_path / "local")), show_progress=False)
    config = RunConfig(**fields, workers=1, scorers=1, out=str(tmp_path / "ray"))
    return local, evolve(config, show_progress=False), config


# Every emitter but the paper's (which the other tests here run): those that refine beside
# the network (gradient, ascent) and the stateful cma-me included.
ON_RAY = sorted(name for name in EMITTERS if name != "paper")


@pytest.mark.parametrize("emitter", ON_RAY)
def test_emitter_on_ray_gives_the_in_process_archive(ray_session, tmp_path, emitter):
    sizes = dict(population=16, batch_size=8) if emitter == "ascent" else {}  # ascent: 8 | population
    local, on_ray, _ = in_process_and_on_ray(tmp_path, **{**CPPN, **sizes}, emitter=emitter)
    assert on_ray.archive.equals(local.archive)


def test_ray_run_with_onnxruntime_matches_in_process(ray_session, tmp_path):
    local, remote, config = in_process_and_on_ray(tmp_path, **DIRECT, engine="onnxruntime")
    # The actor scores with 1 thread (its Ray share), this process with all its cores.
    assert remote.archive.equals(local.archive)
    assert read_latest_checkpoint(config.out, GENOME_CLASSES).config.engine == "onnxruntime"
