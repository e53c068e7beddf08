"""The ``cma-me`` emitter: a CMA-ES on one elite's weights, its state in every checkpoint."""

from __future__ import annotations

import json

import numpy as np
import pytest

from fooling.encodings import GENOME_CLASSES, CPPNEncoding, UserError
from fooling.evo import RunConfig, evolve
from fooling.evo.archive import ClassArchive
from fooling.evo.emitters import CMAMEEmitter, get_emitter
from fooling.evo.emitters.cma_me import topology_key
from fooling.evo.run import resume_config
from fooling.evo.search import Search
from fooling.evo.store.checkpoint import read_latest_checkpoint
from fooling.evo.toolbox import make_toolbox

TOPOLOGY = ("node_used", "node_activation", "node_depth", "edge_used", "edge_source", "edge_target")
POPULATION = 12


def filled_archive(cells: int = 4, seed: int = 0) -> tuple[CPPNEncoding, ClassArchive]:
    """An archive of ``cells`` cells, each holding a random (mutated) 16x16 CPPN."""
    encoding = CPPNEncoding(outputs=3, height=16, width=16)
    rng = np.random.default_rng(seed)
    genomes = encoding.mutate(encoding.random(cells, rng), rng)
    archive = ClassArchive([f"class{i}" for i in range(cells)])
    archive.add_batch(
        genomes, np.eye(cells, dtype=np.float32) * 0.5, individual_id=np.arange(cells), generation=0
    )
    return encoding, archive


def one_generation(emitter: CMAMEEmitter, archive: ClassArchive, generation: int, improvement=None):
    """Parents, instructions and a tell with ``improvement`` (default: a fixed spread), as a search does."""
    rng = np.random.default_rng([7, generation])
    cells = emitter.select_parents(archive, POPULATION, rng)
    samples = emitter.instructions(archive, cells, rng)
    if improvement is None:
        improvement = np.linspace(-0.2, 0.1, POPULATION)
    emitter.tell(archive, cells, np.asarray(improvement, dtype=np.float64))
    return cells, samples


def test_children_keep_their_anchor_topology_and_take_their_samples_as_weights():
    encoding, archive = filled_archive()
    emitter = CMAMEEmitter(climbers=3, cma_share=1.0)
    rng = np.random.default_rng(1)
    cells = emitter.select_parents(archive, POPULATION, rng)
    assert [len(set(cells[rows])) for rows in np.split(np.arange(POPULATION), 3)] == [
        1,
        1,
        1,
    ]  # an anchor each
    samples = emitter.instructions(archive, cells, rng)
    parents = archive.genomes.take(cells)
    weights = parents.edge_used.sum(axis=1)
    assert samples.shape == (POPULATION, weights.max())
    given = ~np.isnan(samples)
    np.testing.assert_array_equal(given.sum(axis=1), weights)  # NaN past each child's own weights
    assert (np.abs(samples[given]) <= 10).all()  # the CMA-ES's bounds: the weight range
    children = emitter.vary(make_toolbox(encoding), parents, rng, generation=1, instructions=samples)
    for field in TOPOLOGY:
        np.testing.assert_array_equal(getattr(children, field), getattr(parents, field))
    np.testing.assert_array_equal(children.edge_weight[children.edge_used], samples[given].astype(np.float32))
    unused = ~children.edge_used
    np.testing.assert_array_equal(children.edge_weight[unused], parents.edge_weight[unused])
    encoding.validate(children)


def test_the_other_children_are_the_papers_mutations_of_uniform_elites():
    encoding, archive = filled_archive(cells=8)
    emitter = get_emitter("cma-me")  # half the children from 2 climbers, half the paper's
    rng = np.random.default_rng(2)
    cells = emitter.select_parents(archive, POPULATION, rng)
    samples = emitter.instructions(archive, cells, rng)
    climbed = round(POPULATION * emitter.cma_share)
    assert np.isnan(samples[climbed:]).all() and not np.isnan(samples[:climbed, 0]).any()
    parents = archive.genomes.take(cells)
    toolbox = make_toolbox(encoding)
    children = emitter.vary(toolbox, parents, np.random.default_rng(5), generation=1, instructions=samples)
    rows = np.arange(climbed, POPULATION)
    paper = get_emitter("paper").vary(toolbox, parents.take(rows), np.random.default_rng(5), generation=1)
    assert children.take(rows).equals(paper)


def test_a_climber_restarts_when_its_anchor_cell_gets_another_topology():
    encoding, archive = filled_archive()
    emitter = CMAMEEmitter(climbers=1, cma_share=1.0)
    one_generation(emitter, archive, 1)
    anchor, restarts = emitter.state()["climbers"][0]["anchor"], emitter.state()["restarts"]
    one_generation(emitter, archive, 2)
    assert emitter.state()["restarts"] == restarts  # same topology: the climber goes on
    grown = encoding.mutate(archive.genomes.take([anchor]), np.random.default_rng(9))
    while topology_key(grown, 0) == topology_key(archive.genomes, anchor):
        grown = encoding.mutate(grown, np.random.default_rng(10))
    winner = np.zeros((1, archive.num_cells), np.float32)
    winner[0, anchor] = 1.0
    archive.add_batch(grown, winner, individual_id=np.array([99]), generation=2)
    one_generation(emitter, archive, 3)
    assert emitter.state()["restarts"] == restarts + 1


def test_the_cma_es_moves_its_mean_toward_the_child_that_improves():
    _, archive = filled_archive()
    emitter = CMAMEEmitter(climbers=1, cma_share=1.0)
    rng = np.random.default_rng(4)
    cells = emitter.select_parents(archive, POPULATION, rng)
    samples = emitter.instructions(archive, cells, rng)
    start = np.array(emitter.state()["climbers"][0]["cma"]["mean"])
    best = 3
    gains = np.full(POPULATION, -0.5)
    gains[best] = 0.4
    emitter.tell(archive, cells, gains)
    moved = np.array(emitter.state()["climbers"][0]["cma"]["mean"]) - start
    assert float(moved @ (samples[best] - start)) > 0


def test_a_climber_restarts_after_patience_generations_without_improvement():
    _, archive = filled_archive(cells=8)
    emitter = CMAMEEmitter(patience=3, climbers=2, cma_share=1.0)
    improving_second = np.r_[np.full(POPULATION // 2, -0.1), np.full(POPULATION // 2, 0.1)]
    one_generation(emitter, archive, 1, improvement=np.full(POPULATION, 0.1))
    assert emitter.state()["restarts"] == 2  # both started
    for generation in range(2, 5):
        one_generation(emitter, archive, generation, improvement=improving_second)
    first, second = emitter.state()["climbers"]
    assert (first["stall"], second["stall"], emitter.state()["restarts"]) == (3, 0, 2)
    one_generation(emitter, archive, 5, improvement=improving_second)
    first, second = emitter.state()["climbers"]
    assert emitter.state()["restarts"] == 3  # only the first climber restarted
    assert first["cma"]["generation"] == 1 and second["cma"]["generation"] == 5


def test_state_through_json_continues_bit_identically():
    _, archive = filled_archive()
    straight, stopped = get_emitter("cma-me"), get_emitter("cma-me")
    for generation in range(1, 4):
        one_generation(straight, archive, generation)
        one_generation(stopped, archive, generation)
    resumed = get_emitter("cma-me")
    resumed.restore(json.loads(json.dumps(stopped.state())))
    assert resumed.state() == straight.state()
    for generation in range(4, 8):
        _, expected = one_generation(straight, archive, generation)
        _, got = one_generation(resumed, archive, generation)
        np.testing.assert_array_equal(got, expected)
    assert resumed.state() == straight.state()


def test_registry_hands_out_fresh_copies():
    _, archive = filled_archive()
    first = get_emitter("cma-me")
    one_generation(first, archive, 1)
    assert first.state() and get_emitter("cma-me").state() == {}


def cma(state: dict) -> dict:
    """The first climber's CMA-ES fields in ``state``."""
    return state["climbers"][0]["cma"]


def damaged(change) -> dict:
    _, archive = filled_archive()
    emitter = get_emitter("cma-me")
    one_generation(emitter, archive, 1)
    state = json.loads(json.dumps(emitter.state()))
    change(state)
    return state


@pytest.mark.parametrize(
    ("change", "message"),
    [
        (lambda s: s["climbers"][0].update(anchor="0"), "'anchor' is not an integer"),
        (lambda s: s["climbers"][0].update(stall=True), "'stall' is not an integer"),
        (lambda s: s.update(restarts=-1), "'restarts' is not an integer"),
        (lambda s: s["climbers"][0].update(topology="../x"), "'topology' is not a SHA-256"),
        (lambda s: s.update(climbers=[]), "'climbers' is not a list"),
        (lambda s: s.update(climbers=s["climbers"] * 2), "'climbers' is not a list"),
        (lambda s: s["climbers"].__setitem__(0, 3), "a climber is not an object"),
        (lambda s: cma(s).update(mean=cma(s)["mean"][:-1]), "is damaged: '(C|funhist)' is not"),
        (lambda s: cma(s).update(sigma=float("nan")), "'sigma' is not a positive finite number"),
        (lambda s: cma(s).update(sigma=-1.0), "'sigma' is not a positive"),
        (lambda s: cma(s)["C"].__setitem__(0, -1.0), "a variance is not positive"),
        (lambda s: cma(s)["pc"].__setitem__(0, float("inf")), "'pc' is not finite"),
        (lambda s: cma(s)["C"].__setitem__(0, "1"), "'C' is not"),
        (lambda s: cma(s).update(population=1), "'population' is not an integer"),
        (lambda s: s["climbers"][0].update(cma=[1, 2]), "'cma' is not an object"),
        (lambda s: cma(s).update(mean=[1.0]), "fewer than 2 weights"),
    ],
)
def test_a_damaged_state_is_refused_in_one_line(change, message):
    with pytest.raises(UserError, match=message) as caught:
        get_emitter("cma-me").restore(damaged(change))
    assert "\n" not in str(caught.value)


def test_a_state_that_does_not_match_the_archive_is_refused():
    _, archive = filled_archive()
    state = damaged(lambda s: None)
    extra = len(cma(state)["mean"]) + 1
    for key in ("mean", "C", "p_sigma", "pc"):
        cma(state)[key] = [0.5] * extra
    population = cma(state)["population"]
    cma(state)["funhist"] = [0.0] * 2 * (10 + -(-30 * extra // population))  # cmaes' history length
    emitter = get_emitter("cma-me")
    emitter.restore(state)
    with pytest.raises(UserError, match="does not match its archive"):
        emitter.instructions(archive, np.zeros(POPULATION, np.int64), np.random.default_rng(0))


def test_a_population_past_the_runs_is_never_built():
    # A checkpoint's climber with a CMA-ES of 2**31 - 1 children (its history sized to match):
    # building it allocated tens of GB. It is built only when its population is the climber's
    # share of the run's children; this one never is, so the climber restarts instead.
    _, archive = filled_archive()
    state = damaged(lambda s: None)
    huge = 2**31 - 1
    cma(state)["population"] = huge
    cma(state)["funhist"] = [0.0] * 2 * (10 + -(-30 * len(cma(state)["mean"]) // huge))
    emitter = get_emitter("cma-me")
    emitter.restore(state)
    assert emitter.state() == state  # kept as stored until a generation needs it
    restarts = state["restarts"]
    one_generation(emitter, archive, 2)
    climbers = emitter.state()["climbers"]
    assert climbers[0]["cma"]["population"] == POPULATION // 2 // 2  # the run's, after a restart
    assert emitter.state()["restarts"] == restarts + 1


def test_a_stateless_emitter_refuses_a_state():
    get_emitter("paper").restore({})
    with pytest.raises(UserError, match="keeps none"):
        get_emitter("paper").restore({"anchor": 1})


class FailingBackend:
    """Fails while the generation's children are made (an interrupt, a dead actor...)."""

    def run(self, tasks, pool):
        raise KeyboardInterrupt
        yield

    def close(self) -> None:
        pass


def test_an_interrupted_generation_leaves_the_emitter_as_it_was():
    _, archive = filled_archive()
    emitter = get_emitter("cma-me")
    one_generation(emitter, archive, 1)
    search = Search(archive=archive, backend=FailingBackend(), seed=0, population=POPULATION,
                    batch_size=6, generation=2, emitter=emitter)  # fmt: skip
    emitter._climbers[0].stall = emitter.patience  # the next generation restarts one: the state would change
    before = emitter.state()
    with pytest.raises(KeyboardInterrupt):
        search.step()
    assert emitter.state() == before


def test_a_cma_me_run_resumes_bit_identically(fooling_home, tmp_path):
    def config(name: str, generations: int) -> RunConfig:
        return RunConfig(model="mnist-lenet", encoding="cppn", emitter="cma-me", population=12, batch_size=6,
                         image_size=16, seed=2, generations=generations, checkpoint_every=0,
                         out=str(tmp_path / name))  # fmt: skip

    straight = evolve(config("straight", 7), show_progress=False)
    evolve(config("split", 4), show_progress=False)
    stored = read_latest_checkpoint(str(tmp_path / "split"), GENOME_CLASSES).emitter_state
    assert all(climber["cma"]["generation"] >= 1 for climber in stored["climbers"])  # the CMA-ES went in
    resumed = evolve(resume_config(str(tmp_path / "split"), generations=7), resume=True, show_progress=False)
    assert resumed.archive.equals(straight.archive) and resumed.next_id == straight.next_id
    assert resumed.emitter.state() == straight.emitter.state()
