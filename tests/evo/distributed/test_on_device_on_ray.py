"""``--vary-on scorer`` on Ray: the scorer actors make their tasks' children on their own device.

The session cluster has two fake GPUs: each scorer actor holds one while torch, finding no CUDA,
varies and scores on the CPU with torch's CPU generator. The archive must not depend on the
number of scorer actors, and must be the one the same search finds in this process.
"""

from __future__ import annotations

import json
import logging

import pyarrow.parquet as pq
import pytest
from backend_wrappers import ActorKiller, Recording

import fooling.evo.run as run_module
import fooling.evo.search as search_module
from fooling.evo.archive import BatchBest
from fooling.evo.config import RunConfig
from fooling.evo.run import evolve
from fooling.evo.search import Candidates
from fooling.evo.store.checkpoint import METADATA_KEY, checkpoint_uris

DIRECT = dict(model="mnist-lenet", population=40, batch_size=10, seed=7, generations=3, checkpoint_every=0,
              vary_on="scorer", crossover_probability=0.5)  # fmt: skip
CPPN = dict(DIRECT, encoding="cppn", image_size=16, population=12, batch_size=4, crossover_probability=0.0)


@pytest.mark.parametrize("fields", [DIRECT, CPPN], ids=["direct", "cppn"])
def test_one_or_two_scorer_actors_give_the_in_process_archive(ray_session, tmp_path, fields):
    local = evolve(RunConfig(**fields, out=str(tmp_path / "local")), show_progress=False)
    two = evolve(RunConfig(**fields, workers=1, scorers=2, out=str(tmp_path / "two")), show_progress=False)
    assert two.archive.equals(local.archive)
    if fields is DIRECT:  # one actor doing every task: the same archive again
        config = RunConfig(**fields, workers=1, scorers=1, out=str(tmp_path / "one"))
        one = evolve(config, show_progress=False)
        assert one.archive.equals(local.archive)
    newest = checkpoint_uris(str(tmp_path / "two"))[0]  # newest first
    assert json.loads(pq.read_schema(newest).metadata[METADATA_KEY])["rng"]["kind"] == "torch-cpu"


def test_parents_never_leave_the_driver_and_only_candidates_come_back(ray_session, tmp_path, monkeypatch):
    # The parent pool's genomes are never taken out of the driver's archive: the scorers take
    # their parents from their replicas. Each batch sends back only rows that can win a cell.
    def no_genomes(self):
        raise AssertionError("the parent pool's genomes were taken on the driver")

    monkeypatch.setattr(search_module.ParentPool, "genomes", property(no_genomes))
    returned = []
    original = run_module.make_backend

    def make(*args, **kwargs):
        return Recording(original(*args, **kwargs), returned)

    monkeypatch.setattr(run_module, "make_backend", make)
    config = RunConfig(**DIRECT, workers=1, scorers=2, out=str(tmp_path / "ray"))
    search = evolve(config, show_progress=False)
    monkeypatch.undo()
    local = evolve(RunConfig(**DIRECT, out=str(tmp_path / "local")), show_progress=False)
    assert search.archive.equals(local.archive)
    cells = search.archive.num_cells
    batches = DIRECT["generations"] * DIRECT["population"] // DIRECT["batch_size"]
    assert len(returned) == batches
    for candidates, best in returned:
        assert isinstance(candidates, Candidates)
        assert len(candidates.rows) == len(candidates.genomes) <= cells
        # Each held row is some cell's best row of its batch, reduced on the scorer: the driver
        # receives one row and one value per cell, not the (batch, cells) probabilities.
        assert isinstance(best, BatchBest) and best.size == DIRECT["batch_size"] and len(best.row) == cells
        assert set(candidates.rows) <= set(best.row)


def test_a_killed_scorer_gets_the_whole_archive_and_the_archive_is_unchanged(
    ray_session, tmp_path, monkeypatch, caplog
):
    fields = dict(DIRECT, generations=4)
    local = evolve(RunConfig(**fields, out=str(tmp_path / "local")), show_progress=False)
    killers = []
    original = run_module.make_backend

    def make(*args, **kwargs):
        killers.append(ActorKiller(original(*args, **kwargs), {2: "scorer"}, index=1))
        return killers[0]

    monkeypatch.setattr(run_module, "make_backend", make)
    caplog.set_level(logging.INFO, logger="fooling.evo.distributed.backend")
    config = RunConfig(**fields, workers=1, scorers=2, out=str(tmp_path / "killed"))
    search = evolve(config, show_progress=False)
    killer = killers[0]
    assert len(killer.killed) == 1
    assert [s.restarts for s in killer.inner.stats if s.kind == "scorer"] == [0, 1]
    assert "scorer1 lacks the archive's changes (restarted): sending it the whole archive" in caplog.text
    assert search.archive.equals(local.archive)
