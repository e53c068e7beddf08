"""``--vary-on scorer`` on Ray: the scorer actors make their tasks' children on their own device.

The session cluster has two fake GPUs: each scorer actor holds one while torch, finding no CUDA,
varies and scores on the CPU with torch's CPU generator. The archive must not depend on the
number of scorer actors, and must be the one the same search finds in this process.
"""

from __future__ import annotations

import json

import pyarrow.parquet as pq
import pytest

from fooling.evo.config import RunConfig
from fooling.evo.run import evolve
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
