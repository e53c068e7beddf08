"""Emitters (``--emitter``): differentiable CPPN rendering, gradient steps on weights, determinism, resume."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import numpy as np
import pytest
import torch
from rounding import EPS32, UNIT_ROUNDOFF, converted_error, cppn_reference, probability_bound, to_numpy

from fooling.encodings import CPPNEncoding, CPPNGenomes
from fooling.encodings.color import hsv_to_rgb
from fooling.encodings.cppn_genomes import ACTIVATION_NAMES, NUM_INPUTS
from fooling.evo.archive import BatchBest, ClassArchive
from fooling.evo.cli import main
from fooling.evo.config import RunConfig
from fooling.evo.emitters import EMITTERS, get_emitter
from fooling.evo.evaluation import Evaluator
from fooling.evo.run import evolve, resume_config
from fooling.evo.search import LocalBackend, ParentPool, Search, Task, Variation
from fooling.evo.toolbox import make_toolbox
from fooling.fitness import LoadedModel, ModelSpec, Scorer, UnknownNameError, ten_crops
from fooling.fitness.models import weights_hash
from fooling.fitness.weight_ascent import ascend_parameters, target_log_probabilities

# Tiny CPPN searches on the LeNet: 16x16 renders, 3 generations of 12 children in 2 batches.
TINY = dict(model="mnist-lenet", encoding="cppn", population=12, batch_size=6, seed=5, image_size=16)


def run(tmp_path: Path, name: str, **fields) -> RunConfig:
    return RunConfig(**{**TINY, "out": str(tmp_path / name), "checkpoint_every": 0, **fields})


def mutated_genomes(encoding: CPPNEncoding, count: int, seed: int = 0, rounds: int = 20):
    rng = np.random.default_rng(seed)
    genomes = encoding.random(count, rng)
    for _ in range(rounds):
        genomes = encoding.mutate(genomes, rng)
    return genomes


# --- a set-up where gradient steps provably help --------------------------------------------
#
# A classifier of 8x8 gray images into "dark" and "bright" by their mean brightness m alone
# (logit of bright 4 (m - 1/2), of dark the opposite), and CPPNs without hidden nodes whose
# output node is the clipped linear activation, with weights that keep its input z = w_x x +
# w_y y + w_d d + w_b inside (0.8, 2.5) on every pixel (x, y in [-1, 1], d <= 1.42, bias 1).
# There the pixel is z / 3: linear in the weights, the mean m too, and Adam's steps (at most
# about 3.2 lr per weight and step) move z by less than the margins to 0 and 3 for 10 steps of
# lr 0.002. m rises with w_b and w_d and hardly moves with w_x, w_y (x and y average to 0), so
# every Adam step moves w_b and w_d toward the target and raises its log-probability, by about
# 2e-3 a step against a rounding of about 1e-7.
BRIGHTNESS_LABELS = ("dark", "bright")


def brightness_model() -> LoadedModel:
    """The dark/bright classifier of 8x8 gray images (see above)."""
    network = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(64, 2))
    with torch.no_grad():
        network[1].weight.copy_(torch.tensor([[-4.0 / 64], [4.0 / 64]]).expand(2, 64))
        network[1].bias.copy_(torch.tensor([2.0, -2.0]))
    network.eval().requires_grad_(False)
    spec = ModelSpec(
        name="brightness",
        channels=1,
        input_size=(8, 8),
        mean=(0.0,),
        std=(1.0,),
        class_names=BRIGHTNESS_LABELS,
        build=lambda: network,
    )
    return LoadedModel(spec=spec, network=network, weights_hash=weights_hash(network))


def linear_region_genomes(encoding: CPPNEncoding, count: int, seed: int = 0) -> CPPNGenomes:
    """``count`` CPPNs without hidden nodes whose output stays linear in their weights (see above)."""
    rng = np.random.default_rng(seed)
    genomes = encoding.random(count, rng)
    genomes.node_activation[:, NUM_INPUTS] = ACTIVATION_NAMES.index("linear")
    for row in range(count):
        slots = np.flatnonzero(genomes.edge_used[row])
        assert len(slots) == NUM_INPUTS  # every input to the one output
        sources = genomes.edge_source[row, slots]
        weights = np.where(
            sources == NUM_INPUTS - 1, rng.uniform(1.2, 1.8, len(slots)), rng.uniform(-0.2, 0.2, len(slots))
        )
        genomes.edge_weight[row, slots] = weights
    return genomes


def brightness_evaluator(tmp_path: Path) -> Evaluator:
    config = RunConfig(model="brightness", encoding="cppn", engine="torch", out=str(tmp_path / "unused"))
    evaluator = Evaluator(config, brightness_model(), device="cpu")
    assert evaluator.encoding.shape == (1, 8, 8) and evaluator.encoding.coordinates == "unit"
    return evaluator


@pytest.mark.parametrize("color_space", ["hsv", "hls-opencv", "rgb"])
@pytest.mark.parametrize("coordinates", ["unit", "pixel"])
def test_differentiable_render_equals_render_and_passes_gradients(color_space, coordinates):
    encoding = CPPNEncoding(outputs=3, height=12, width=10, color_space=color_space, coordinates=coordinates)
    genomes = mutated_genomes(encoding, 6)
    weights = torch.from_numpy(genomes.edge_weight.copy()).requires_grad_(True)
    images = encoding.render_differentiable(genomes, weights)
    rendered = encoding.render(genomes)
    # Both renderers are float32 and sum in other orders (a matrix product against index_add_),
    # so they agree up to rounding, and how much follows from the magnitudes: raw pixel
    # coordinates put terms of 9 x 10 into the sums, unit ones terms of 1 x 10. Each is held to
    # the bound cppn_reference derives from those magnitudes, around the float64 outputs.
    outputs, bound = cppn_reference(encoding, genomes)
    assert bound.max() < 1e-2  # far below what a wrong weight or a wrong order of nodes would do
    if color_space == "hls-opencv":
        # Bytes trunc(|o| x 255): where the float64 output is exact in float32 too (bound 0), or
        # farther from a byte's edges than both renderers' error (and the x 255's rounding), both
        # take the same bytes, hence the same colour; the straight-through sum of
        # render_differentiable rounds twice more. Byte 0 has no lower edge (|o| >= 0).
        levels = outputs * 255.0
        below = np.where(np.floor(levels) > 0, levels - np.floor(levels), np.inf)
        margin = np.minimum(below, np.floor(levels) + 1 - levels)
        safe = ((bound == 0) | (margin > 255.0 * bound + 255.0 * EPS32)).all(axis=1)
        assert safe.mean() > 0.5  # the others are outputs within rounding of 1 or of a byte's edge
        difference = np.abs(to_numpy(images) - to_numpy(rendered)).max(axis=1)
        assert (difference[safe] <= 2 * EPS32).all()
    else:
        expected = outputs if color_space == "rgb" else to_numpy(hsv_to_rgb(torch.from_numpy(outputs)))
        allowed = bound if color_space == "rgb" else converted_error(bound)
        for image in (images, rendered):
            assert (np.abs(to_numpy(image) - expected) <= allowed).all()
    images.sum().backward()
    gradient = weights.grad.numpy()
    assert np.all(gradient[~genomes.edge_used] == 0)  # unused slots take no part
    assert np.count_nonzero(gradient[genomes.edge_used]) > genomes.edge_used.sum() // 4


def _brightness_setup(tmp_path: Path):
    """The brightness scorer, 8 linear-region CPPNs, targets dark and bright in turn, their
    weights, the renderer of weights, and the target log-probability of weights."""
    evaluator = brightness_evaluator(tmp_path)
    genomes = linear_region_genomes(evaluator.encoding, 8)
    targets = torch.arange(8) % 2

    def generate(weights: torch.Tensor) -> torch.Tensor:
        return evaluator.encoding.render_differentiable(genomes, weights)

    def log_probability(weights: torch.Tensor) -> torch.Tensor:
        with torch.no_grad():
            return target_log_probabilities(evaluator.scorer, generate(weights), targets)

    return (
        evaluator.scorer,
        genomes,
        targets,
        torch.from_numpy(genomes.edge_weight),
        generate,
        log_probability,
    )


def test_ascend_parameters_raises_each_target_log_probability(tmp_path):
    scorer, genomes, targets, start, generate, log_probability = _brightness_setup(tmp_path)
    after = ascend_parameters(scorer, generate, start, targets, steps=10, lr=0.002, low=-10.0, high=10.0)
    assert torch.equal(start, torch.from_numpy(genomes.edge_weight))  # the input is not modified
    assert after.abs().max() <= 10.0
    unused = ~torch.from_numpy(genomes.edge_used).any(0)
    assert torch.equal(after[:, unused], start[:, unused])
    # Every row, dark and bright alike: each step raises its target (see the set-up above).
    gained = log_probability(after) - log_probability(start)
    assert (gained > 0).all(), gained
    with pytest.raises(ValueError, match="lr"):
        ascend_parameters(scorer, generate, start, targets, steps=1, lr=0.0, low=-10.0, high=10.0)


@pytest.mark.parametrize("crops", [1, 10])
def test_gradient_objective_is_the_probability_the_search_scores(lenet, crops):
    # With 10 crops, the softmax averaged over the crops of the 32 px image, as Scorer.score has it.
    scorer = Scorer(lenet, device="cpu", engine="torch", crops=crops)
    images = torch.rand(5, 1, *scorer.image_size, generator=torch.Generator().manual_seed(0))
    targets = torch.tensor([0, 3, 5, 7, 9])
    expected = scorer.score(images)[np.arange(5), targets.numpy()]
    got = target_log_probabilities(scorer, images, targets).exp().detach().numpy()
    # Both are float32 evaluations of the same probabilities, each within the rounding bound the
    # network's magnitudes give (tests/rounding.py) of the float64 ones; the mean over 10 crops
    # (or its log-sum-exp) rounds at most 12 more times.
    inputs = ten_crops(images, scorer.spec.input_size).flatten(0, 1) if crops == 10 else images
    exact, bound = probability_bound(lenet.network, inputs)
    rows = np.tile(np.arange(5), crops)  # ten_crops puts the crops first
    exact = np.stack([exact[rows == i].mean(0) for i in range(5)])[np.arange(5), targets.numpy()]
    bound = np.stack([bound[rows == i].max(0) for i in range(5)])[np.arange(5), targets.numpy()]
    allowed = bound + 12 * UNIT_ROUNDOFF * exact
    assert (np.abs(got - exact) <= allowed).all() and (np.abs(expected - exact) <= allowed).all()


def test_ascend_parameters_keep_best_never_returns_worse_than_the_start(tmp_path):
    scorer, genomes, targets, start, generate, log_probability = _brightness_setup(tmp_path)
    # Steps of 3: Adam's first moves w_b and w_d by 3 each. Bright rows' z passes 3, so their
    # pixels clip at 1 (brightest: better); dark rows' z falls below 0 by up to 5.6, and |z| / 3
    # makes their images brighter than at the start (worse). The best weights never are worse.
    last = ascend_parameters(scorer, generate, start, targets, steps=4, lr=3.0, low=-10.0, high=10.0)
    best = ascend_parameters(scorer, generate, start, targets, steps=4, lr=3.0, low=-10.0, high=10.0,
                             keep_best=True)  # fmt: skip
    dark, bright = targets == 0, targets == 1
    assert (log_probability(last)[dark] < log_probability(start)[dark]).all()  # the premise
    # The start is a candidate, so the best is no worse, up to the rounding of recomputing the
    # same forward pass: a few float32 eps of the log-probabilities' size (here below 3).
    before = log_probability(start)
    tolerance = 8 * EPS32 * before.abs().max().item()
    assert (log_probability(best) >= before - tolerance).all()
    assert (log_probability(best)[bright] > before[bright]).all()
    assert not torch.equal(best[bright], start[bright])


def test_refine_in_smaller_chunks_gives_the_same_weights(lenet, tmp_path, monkeypatch):
    # Large renders are refined fewer genomes at a time (memory): with room for one genome per
    # pass, each row gets the weights it gets when refined alone (the same computation, bit for
    # bit), in its own place.
    evaluator = Evaluator(run(tmp_path, "chunks"), lenet, device="cpu")
    genomes = mutated_genomes(evaluator.encoding, 5, seed=3, rounds=8)
    cells = np.arange(5) % len(evaluator.class_ids)
    alone = [evaluator.refine(genomes.take([i]), cells[i : i + 1], steps=3, lr=0.02) for i in range(5)]
    monkeypatch.setattr(Evaluator, "REFINE_FLOATS", 1)  # one genome per pass
    one_by_one = evaluator.refine(genomes, cells, steps=3, lr=0.02)
    assert np.array_equal(one_by_one.edge_weight, np.concatenate([a.edge_weight for a in alone]))
    assert np.array_equal(one_by_one.edge_used, genomes.edge_used)


def test_refined_rows_of_each_batch():
    ascent = get_emitter("ascent")
    assert ascent.refine_every == 8 and ascent.keep_best
    assert ascent.refined_rows(0, 6).tolist() == [0]
    assert ascent.refined_rows(6, 6).tolist() == [2]  # row 8 of the generation
    assert ascent.refined_rows(12, 4).tolist() == []
    assert ascent.evaluations_per_child == 1 + 3 * 10 / 8
    assert get_emitter("gradient").refined_rows(6, 3).tolist() == [0, 1, 2]
    assert not get_emitter("paper").refines and get_emitter("ascent").refines


def test_perturb_weights_keeps_topology_and_bounds():
    encoding = CPPNEncoding(outputs=3, height=8, width=8)
    genomes = mutated_genomes(encoding, 16)
    moved = encoding.perturb_weights(genomes, np.random.default_rng(0))
    for name in ("node_used", "node_activation", "node_depth", "edge_used", "edge_source", "edge_target"):
        assert np.array_equal(getattr(moved, name), getattr(genomes, name))
    assert not np.array_equal(moved.edge_weight[genomes.edge_used], genomes.edge_weight[genomes.edge_used])
    assert np.array_equal(moved.edge_weight[~genomes.edge_used], genomes.edge_weight[~genomes.edge_used])
    encoding.validate(moved)


def test_focus_draws_parents_among_the_weaker_half():
    archive = ClassArchive([f"c{i}" for i in range(10)])
    archive.occupied[:7] = True  # cells 7-9 empty
    archive.fitness[:7] = [0.5, 0.1, 0.9, 0.2, 0.05, 0.7, 0.3]
    weaker_half = {4, 1, 3, 6}  # the 4 lowest of 7 occupied cells

    def draw(name: str) -> np.ndarray:
        emitter = (
            dataclasses.replace(get_emitter("focus"), focus=0.5)
            if name == "focus-half"
            else get_emitter(name)
        )
        return emitter.select_parents(archive, 4000, np.random.default_rng(3))

    assert np.array_equal(draw("paper"), archive.sample_parents(4000, np.random.default_rng(3)))
    assert set(draw("focus").tolist()) == weaker_half
    half = draw("focus-half")
    assert set(half.tolist()) == set(range(7))
    assert 0.7 < np.isin(half, list(weaker_half)).mean() < 0.8  # 1/2 + 1/2 * 4/7 = 0.79 expected
    assert np.array_equal(draw("focus"), draw("focus"))  # a function of the generator alone


# ascent refines one child in 8, so its population is a multiple of 8 (16: rows 0 and 8, the
# second one in the second batch of 6).
POPULATION = {"ascent": 16}


@pytest.mark.parametrize("emitter", ["finetune", "gradient", "ascent", "focus"])
def test_emitter_same_seed_same_archive(fooling_home, tmp_path, emitter):
    population = POPULATION.get(emitter, 12)
    first = evolve(
        run(tmp_path, "a", generations=3, emitter=emitter, population=population), show_progress=False
    )
    second = evolve(
        run(tmp_path, "b", generations=3, emitter=emitter, population=population), show_progress=False
    )
    # What each emitter does to the children is tested directly (below): that it shows in the
    # archive of so small a run is luck, not a property.
    assert first.archive.equals(second.archive)
    per_child = EMITTERS[emitter].evaluations_per_child
    varied = population * per_child
    assert varied == int(varied)  # every child's cost counted, none rounded away
    assert [r["evals"] for r in first.logbook] == [population, varied, varied]


def _generation_tasks(population: int, batch_size: int, parent_cells: np.ndarray) -> list[Task]:
    """One generation's tasks whose parent pool holds one genome per cell, in cell order."""
    starts = range(0, population, batch_size)
    return [
        Task(
            1,
            index,
            min(batch_size, population - start),
            parent_cells[start : start + batch_size],
            parent_cells[start : start + batch_size],
            offset=start,
        )  # fmt: skip
        for index, start in enumerate(starts)
    ]


def _children(backend: LocalBackend, tasks: list[Task], pool: CPPNGenomes) -> tuple[list, list]:
    archive = ClassArchive([f"cell{i}" for i in range(len(pool))])
    archive.genomes = pool
    results = list(backend.run(tasks, ParentPool(archive, np.arange(len(pool)))))
    return [children for children, _ in results], [probabilities for _, probabilities in results]


TOPOLOGY = ("node_used", "node_activation", "node_depth", "edge_used", "edge_source", "edge_target")


def test_ascent_emitter_refines_copies_of_parents_toward_their_cells(tmp_path):
    evaluator = brightness_evaluator(tmp_path)
    pool = linear_region_genomes(evaluator.encoding, 2, seed=1)  # the elites of "dark" and "bright"
    cells = (np.arange(16) >= 8).astype(np.int32)  # rows 0-7 from the dark elite, 8-15 from the bright
    tasks = _generation_tasks(16, 6, cells)
    toolbox = make_toolbox(evaluator.encoding)
    ascent = get_emitter("ascent")
    refined, probabilities = _children(
        LocalBackend(Variation(toolbox, seed=3, emitter=ascent), evaluator), tasks, pool
    )
    paper, _ = _children(LocalBackend(Variation(toolbox, seed=3), evaluator), tasks, pool)
    seen = []
    for task, offset, children, paper_children, scores in zip(
        tasks, (0, 6, 12), refined, paper, probabilities
    ):
        rows = ascent.refined_rows(offset, task.count)
        seen += (offset + rows).tolist()
        others = np.setdiff1d(np.arange(task.count), rows)
        assert children.take(others).equals(paper_children.take(others))  # the paper's children
        expected = BatchBest.of(evaluator.evaluate(children))  # scored as they are, reduced per cell
        assert scores.size == expected.size == task.count
        np.testing.assert_array_equal(scores.row, expected.row)
        np.testing.assert_array_equal(scores.probability, expected.probability)
        for row in rows:
            cell = int(task.parent_cells[row])
            child, parent = children.take([row]), pool.take([cell])
            for name in TOPOLOGY:  # a copy of its parent, not of the mutated child
                assert np.array_equal(getattr(child, name), getattr(parent, name)), name
            # Every Adam step raises the target here (see the set-up), so the best weights are
            # the last ones tried: new weights, a higher probability of the parent's class.
            assert not np.array_equal(child.edge_weight, parent.edge_weight)
            assert evaluator.evaluate(child)[0, cell] > evaluator.evaluate(parent)[0, cell]
    assert seen == [0, 8]  # one child in 8: from the dark elite and from the bright one


def test_gradient_emitter_refines_every_mutated_child(tmp_path):
    evaluator = brightness_evaluator(tmp_path)
    pool = linear_region_genomes(evaluator.encoding, 2, seed=1)
    cells = (np.arange(6) % 2).astype(np.int32)
    tasks = _generation_tasks(6, 6, cells)
    toolbox = make_toolbox(evaluator.encoding)
    gradient = get_emitter("gradient")
    (refined,), _ = _children(
        LocalBackend(Variation(toolbox, seed=3, emitter=gradient), evaluator), tasks, pool
    )
    (mutated,), _ = _children(LocalBackend(Variation(toolbox, seed=3), evaluator), tasks, pool)
    expected = evaluator.refine(mutated, cells, steps=gradient.gradient_steps, lr=gradient.gradient_lr)
    assert refined.equals(expected)


def test_finetune_emitter_perturbs_the_weights_of_about_half_the_parents(tmp_path):
    encoding = CPPNEncoding(outputs=1, height=8, width=8)
    pool = mutated_genomes(encoding, 2, seed=4)
    cells = (np.arange(400) % 2).astype(np.int32)
    (task,) = _generation_tasks(400, 400, cells)
    toolbox = make_toolbox(encoding)
    children = Variation(toolbox, seed=3, emitter=get_emitter("finetune"))(task, pool)
    paper = Variation(toolbox, seed=3)(task, pool)
    tuned = np.flatnonzero([not children.take([i]).equals(paper.take([i])) for i in range(400)])
    # Each child is finetuned with probability 1/2: 200 of 400 expected, standard deviation 10.
    assert 150 < tuned.size < 250
    parents = pool.take(cells[tuned])
    tuned_children = children.take(tuned)
    for name in TOPOLOGY:
        assert np.array_equal(getattr(tuned_children, name), getattr(parents, name)), name
    moved = (tuned_children.edge_weight != parents.edge_weight).any(axis=1)
    assert moved.all()  # every finetuned child's weights moved (Gaussian noise on every weight)


@pytest.mark.parametrize("emitter", ["finetune", "gradient", "ascent", "focus"])
def test_emitter_resume_gives_the_uninterrupted_archive(fooling_home, tmp_path, emitter):
    population = POPULATION.get(emitter, 12)
    straight = evolve(
        run(tmp_path, "straight", generations=4, emitter=emitter, population=population), show_progress=False
    )
    evolve(run(tmp_path, "split", generations=2, emitter=emitter, population=population), show_progress=False)
    config = resume_config(str(tmp_path / "split"), generations=4)
    assert config.emitter == emitter  # stored in the checkpoint
    resumed = evolve(config, resume=True, show_progress=False)
    assert resumed.archive.equals(straight.archive)
    assert resumed.next_id == straight.next_id


def test_unknown_emitter_suggests_close_names():
    with pytest.raises(UnknownNameError, match="did you mean 'gradient'"):
        get_emitter("gradiant")
    assert get_emitter("PAPER").name == "paper"


@pytest.mark.parametrize(
    ("arguments", "message"),
    [
        (["--emitter", "gradiant"], "unknown emitter 'gradiant'; did you mean 'gradient'"),
        (["--emitter", "finetune", "--encoding", "direct"], "it needs --encoding cppn"),
        (["--emitter", "ascent", "--population", "12"], "--population must be a multiple of 8, not 12"),
    ],
)
def test_bad_emitter_is_one_line_and_exit_2(fooling_home, tmp_path, capsys, arguments, message):
    code = main(["evolve", "--model", "mnist-lenet", "--encoding", "cppn", "--generations", "2",
                 "--out", str(tmp_path / "bad"), "--no-progress", *arguments])  # fmt: skip
    assert code == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and message in err[0], err
    assert not (tmp_path / "bad").exists()


class _FixedScores:
    """A backend whose children are random genomes, scored as given, batch after batch."""

    def __init__(self, encoding, scores: list[np.ndarray]) -> None:
        self.encoding, self.scores = encoding, iter(scores)

    def run(self, tasks, parents):
        for task in tasks:
            yield self.encoding.random(task.count, np.random.default_rng(task.generation)), next(self.scores)

    def close(self) -> None:
        pass


@dataclasses.dataclass(frozen=True)
class _Listening(type(EMITTERS["paper"])):
    told: list = dataclasses.field(default_factory=list)

    def tell(self, archive, cells, improvement):
        self.told.append((cells.copy(), improvement))


def test_only_an_emitter_that_learns_is_told_its_childrens_gains(monkeypatch):
    assert [name for name, emitter in EMITTERS.items() if emitter.learns] == ["cma-me"]
    encoding = CPPNEncoding(outputs=1, height=4, width=4)
    generation0 = np.array([[0.5, 0.0, 0.0], [0.0, 0.2, 0.0]], np.float32)  # cell 2 stays empty
    generation1 = np.array([[0.4, 0.3, 0.0], [0.7, 0.1, 0.05], [0.1, 0.1, 0.1]], np.float32)

    def search(emitter):
        backend = _FixedScores(encoding, [generation0, generation1[:2], generation1[2:]])
        return Search(archive=ClassArchive(["a", "b", "c"]), backend=backend, seed=0, population=2,
                      batch_size=2, emitter=emitter)  # fmt: skip

    listening = _Listening()
    assert listening.learns
    learner = search(listening)
    learner.step()
    assert listening.told == []  # generation 0: random genomes, no parents to learn about
    learner.population = 3
    learner.step()
    (cells, improvement), = listening.told  # fmt: skip
    # Gains over the elites as generation 1 found them (0.5, 0.2, empty = 0), the best per child,
    # in float64 of the float32 scores.
    p, elites = generation1.astype(np.float64), generation0.max(axis=0).astype(np.float64)
    np.testing.assert_array_equal(improvement, [p[0, 1] - elites[1], p[1, 0] - elites[0], p[2, 2]])
    assert len(cells) == 3

    # The paper's emitter learns nothing: the search never computes the gains.
    monkeypatch.setattr(Search, "_improvement", lambda *args: pytest.fail("gains computed for no one"))
    paper = search(EMITTERS["paper"])
    paper.step()
    paper.population = 3
    paper.step()
    assert paper.archive.fitness.tolist() == pytest.approx([0.7, 0.3, 0.1])
