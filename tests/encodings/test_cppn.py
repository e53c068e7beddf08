"""CPPN genomes: validity under mutation, rendering against a slow reference, checkpoints."""

from __future__ import annotations

import math
import time

import numpy as np
import pyarrow.parquet as pq
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from rounding import cppn_reference

from fooling.encodings import ACTIVATIONS, CPPNEncoding, CPPNGenomes, cppn
from fooling.encodings._threads import in_threads
from fooling.evo.cli import main
from fooling.evo.config import RunConfig
from fooling.evo.run import evolve, resume_config
from fooling.evo.store.genomes import genome_columns

GRAY = CPPNEncoding(outputs=1, height=9, width=7, max_nodes=24, max_edges=64)
COLOUR = CPPNEncoding(outputs=3, height=8, width=8, max_nodes=24, max_edges=64, color_space="rgb")


def evolved(encoding: CPPNEncoding, count: int, steps: int, seed: int) -> CPPNGenomes:
    rng = np.random.default_rng(seed)
    genomes = encoding.random(count, rng)
    for _ in range(steps):
        genomes = encoding.mutate(genomes, rng)
    return genomes


@settings(max_examples=25, deadline=None)
@given(seed=st.integers(0, 2**32 - 1), outputs=st.sampled_from([1, 3]))
def test_thousands_of_mutations_keep_genomes_valid(seed, outputs):
    encoding = CPPNEncoding(outputs=outputs, height=4, width=4, max_nodes=20, max_edges=48)
    rng = np.random.default_rng(seed)
    genomes = encoding.random(20, rng)
    for _ in range(60):  # 25 examples x 20 genomes x 60 rounds of every operator
        genomes = encoding.mutate(genomes, rng)
        encoding.validate(genomes)
    first_hidden = 4 + outputs
    assert genomes.node_used[:, :first_hidden].all()
    assert (genomes.node_depth[:, :4] == 0).all() and (genomes.node_depth[:, 4:first_hidden] == 1).all()


def test_mutation_complexifies_and_leaves_parents_alone():
    rng = np.random.default_rng(0)
    parents = COLOUR.random(50, rng)
    before = parents.copy()
    children = COLOUR.mutate(parents, rng)
    assert parents.equals(before)
    assert not children.equals(parents)
    grown = evolved(COLOUR, 50, 30, seed=1)
    assert grown.node_used[:, 7:].sum(axis=1).mean() > 1  # hidden nodes appear


def reference_pixel(genomes: CPPNGenomes, row: int, outputs: int, x: float, y: float) -> list[float]:
    """Evaluate one genome at one pixel by recursion over its connections: slow, obviously right."""
    inputs = [x, y, math.sqrt(x * x + y * y), 1.0]
    functions = list(ACTIVATIONS.values())
    cache: dict[int, float] = {}

    def value(node: int) -> float:
        if node < 4:
            return inputs[node]
        if node not in cache:
            total = 0.0
            for slot in np.flatnonzero(genomes.edge_used[row]):
                if genomes.edge_target[row, slot] == node:
                    total += float(genomes.edge_weight[row, slot]) * value(
                        int(genomes.edge_source[row, slot])
                    )
            activation = functions[genomes.node_activation[row, node]]
            cache[node] = float(activation(torch.tensor(total, dtype=torch.float64)))
        return cache[node]

    return [min(abs(value(4 + k)), 1.0) for k in range(outputs)]


@pytest.mark.parametrize("encoding", [GRAY, COLOUR], ids=["gray", "colour"])
def test_rendering_matches_slow_reference(encoding):
    genomes = evolved(encoding, 6, 25, seed=2)
    images = encoding.render(genomes).numpy()
    outputs, height, width = encoding.shape
    # The float32 coordinates the renderer takes, and its float32 rounding bounded from the
    # magnitudes of each node's sum (see tests/rounding.py).
    planes = cppn.coordinate_inputs(height, width).double().numpy()
    xs, ys = planes[0, :width], planes[1, ::width]
    _, bound = cppn_reference(encoding, genomes)
    for row in range(len(genomes)):
        for i in (0, height // 2, height - 1):
            for j in (0, width // 3, width - 1):
                expected = reference_pixel(genomes, row, outputs, xs[j], ys[i])
                assert (np.abs(images[row, :, i, j] - expected) <= bound[row, :, i, j]).all()


def test_batched_rendering_equals_one_by_one_and_is_deterministic():
    genomes = evolved(COLOUR, 12, 20, seed=3)
    together = COLOUR.render(genomes, chunk=5)
    alone = torch.cat([COLOUR.render(genomes.take([i])) for i in range(len(genomes))])
    # Every pixel of every genome is summed in the same order whatever else shares its batch.
    assert torch.equal(together, alone)
    assert torch.equal(COLOUR.render(evolved(COLOUR, 12, 20, seed=3)), COLOUR.render(genomes))
    assert together.shape == (12, 3, 8, 8) and together.min() >= 0 and together.max() <= 1


def test_threads_do_not_change_the_image_and_tiles_only_round_differently(monkeypatch):
    genomes = evolved(COLOUR, 7, 40, seed=5)
    whole = COLOUR.render(genomes)
    monkeypatch.setattr(cppn, "RENDER_TILE", 5)  # 64 pixels in 13 tiles, the last one short
    before = torch.get_num_threads()
    tiled = []
    try:
        for threads in (1, 2):  # tiles are spread over this many threads
            torch.set_num_threads(threads)
            tiled.append(COLOUR.render(genomes))
    finally:
        torch.set_num_threads(before)
    # The tiles are fixed, so which thread renders one never matters: the same bits.
    assert torch.equal(tiled[0], tiled[1])
    # Other tiles may round differently in the last bit: on AVX-512, torch's sigmoid takes
    # another code path for the short rows of a tile than for whole vectors (seen: 1 pixel of
    # 1,344 off by 1.2e-7), and later nodes carry that on through their weights. Each is within
    # the rounding bound of the float64 outputs, so they differ by at most twice that. The tile
    # size is a constant, so a run's images never depend on it.
    _, bound = cppn_reference(COLOUR, genomes)
    assert (np.abs(tiled[0].double().numpy() - whole.double().numpy()) <= 2 * bound).all()


def test_resolution_independent_rendering():
    genomes = evolved(GRAY, 3, 10, seed=4)
    large = CPPNEncoding(outputs=1, height=33, width=33, max_nodes=24, max_edges=64).render(genomes)
    assert large.shape == (3, 1, 33, 33)


def test_validate_refuses_cycles_dangling_and_bad_ids():
    genomes = evolved(GRAY, 4, 20, seed=5)
    GRAY.validate(genomes)
    cyclic = genomes.copy()
    slot = int(np.flatnonzero(cyclic.edge_used[0])[0])
    cyclic.edge_source[0, slot], cyclic.edge_target[0, slot] = 4, 4  # output feeding itself
    with pytest.raises(ValueError, match="cycle"):
        GRAY.validate(cyclic)
    dangling = genomes.copy()
    dangling.edge_source[0, slot] = 20
    dangling.node_used[0, 20] = False
    with pytest.raises(ValueError, match="dangling"):
        GRAY.validate(dangling)
    unknown = genomes.copy()
    unknown.node_activation[0, 4] = 9
    with pytest.raises(ValueError, match="activation"):
        GRAY.validate(unknown)


def test_cppn_round_trips_and_resumes_on_mnist(fooling_home, tmp_path):
    common = dict(model="mnist-lenet", encoding="cppn", population=20, batch_size=10, seed=1)
    straight = evolve(RunConfig(**common, generations=6, out=str(tmp_path / "a")), show_progress=False)
    evolve(RunConfig(**common, generations=3, out=str(tmp_path / "b")), show_progress=False)
    resumed = evolve(resume_config(str(tmp_path / "b"), generations=6), resume=True, show_progress=False)
    assert isinstance(resumed.archive.genomes, CPPNGenomes)
    assert resumed.archive.equals(straight.archive)


def test_corrupt_cppn_genome_in_checkpoint_is_refused(fooling_home, tmp_path, capsys):
    out = tmp_path / "corrupt"
    config = RunConfig(model="mnist-lenet", encoding="cppn", population=20, generations=2, out=str(out))
    search = evolve(config, show_progress=False)
    path = out / "checkpoints" / "gen-000001.parquet"
    table = pq.read_table(path)
    genomes = search.archive.genomes.take(search.archive.occupied_cells())
    slot = int(np.flatnonzero(genomes.edge_used[0])[0])
    genomes.edge_source[0, slot], genomes.edge_target[0, slot] = 4, 4
    for name, column in genome_columns(genomes)[0].items():
        table = table.set_column(table.schema.get_field_index(name), name, column)
    pq.write_table(table, path)
    assert main(["evolve", "--resume", str(out), "--generations", "3"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "cycle" in err[0]


def test_in_threads_raises_only_after_every_part_finished():
    finished = []

    def work(part: int) -> None:
        if part == 0:
            raise RuntimeError("part 0 failed")
        time.sleep(0.05)
        finished.append(part)

    with pytest.raises(RuntimeError, match="part 0 failed"):
        in_threads(work, 3)
    assert sorted(finished) == [1, 2]


def test_in_place_activations_give_the_same_bits():
    """The renderer's in-place activations are the registry's functions, in its order, bit for bit."""
    assert len(cppn._ACTIVATIONS_IN_PLACE) == len(ACTIVATIONS)
    values = torch.randn(5, 4099, generator=torch.Generator().manual_seed(0)) * 40.0  # past every bend
    for function, in_place in zip(ACTIVATIONS.values(), cppn._ACTIVATIONS_IN_PLACE):
        expected = function(values)
        got = values.clone()
        assert in_place(got) is got
        assert torch.equal(got, expected), function
        assert torch.equal(got.view(torch.int32), expected.view(torch.int32))  # signs of zeros too
