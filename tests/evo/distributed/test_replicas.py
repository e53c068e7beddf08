"""Archive replicas of the scorer actors: the changes the driver sends keep them equal to its archive."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from fooling.evo.config import RunConfig
from fooling.evo.distributed.replicas import ArchiveReplica, archive_sync
from fooling.evo.run import evolve

CPU = torch.device("cpu")


@pytest.fixture(scope="module")
def generations(tmp_path_factory):
    """The archive after each of 4 generations of a small MNIST search (copies)."""
    snapshots = []

    def keep(search):
        archive = search.archive
        snapshot = type(archive)(archive.class_names)
        for name in ("fitness", "occupied", "individual_id", "parent_id", "parent_cell", "birth_generation"):
            setattr(snapshot, name, getattr(archive, name).copy())
        snapshot.genomes = archive.genomes.copy()
        snapshots.append(snapshot)

    out = tmp_path_factory.mktemp("replicas") / "run"
    config = RunConfig(model="mnist-lenet", population=30, batch_size=10, seed=2, generations=4,
                       checkpoint_every=0, out=str(out))  # fmt: skip
    evolve(config, show_progress=False, on_generation=keep)
    return snapshots


def held(replica: ArchiveReplica, archive) -> bool:
    cells = archive.occupied_cells()
    return replica.genomes.take(cells).equals(archive.genomes.take(cells))


def test_changes_keep_a_replica_equal_to_the_archive(generations):
    replica = ArchiveReplica(CPU, generations[0].num_cells)
    assert replica.apply(archive_sync(generations[0], 1, None))  # the whole archive after generation 0
    assert held(replica, generations[0])
    for generation in range(2, len(generations) + 1):
        archive = generations[generation - 1]
        sync = archive_sync(archive, generation, since=generation - 1)
        # Only the cells born in the last generation travel.
        assert sync.cells.tolist() == np.flatnonzero(archive.birth_generation == generation - 1).tolist()
        # A child that won several cells travels once.
        assert len(sync.genomes) == len(np.unique(archive.individual_id[sync.cells])) < len(sync.cells)
        assert np.array_equal(sync.fitness, archive.fitness)
        assert replica.apply(sync)
        assert replica.apply(sync)  # a later call of the same generation: nothing to do
        assert held(replica, archive)
        cells = archive.occupied_cells()[::2]
        assert replica.parents(generation, cells).equals(archive.genomes.take(cells))


def test_a_replica_without_the_base_of_the_changes_says_so_and_takes_a_whole_copy(generations):
    last = generations[-1]
    fresh = ArchiveReplica(CPU, last.num_cells)  # an actor that restarted
    changes = archive_sync(last, len(generations), since=len(generations) - 1)
    assert not fresh.apply(changes)
    assert fresh.genomes is None and fresh.generation is None
    assert fresh.apply(archive_sync(last, len(generations), since=None))
    assert held(fresh, last)
    skipped = ArchiveReplica(CPU, last.num_cells)
    skipped.apply(archive_sync(generations[0], 1, None))
    assert not skipped.apply(changes)  # it holds generation 1's archive, the changes start at 3
    with pytest.raises(RuntimeError, match="replica at generation 1, parents asked for 4"):
        skipped.parents(4, np.array([0]))
