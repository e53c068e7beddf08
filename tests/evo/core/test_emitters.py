"""Emitters (``--emitter``): differentiable CPPN rendering, gradient steps on weights, determinism, resume."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from fooling.encodings import CPPNEncoding
from fooling.evo.archive import ClassArchive
from fooling.evo.cli import main
from fooling.evo.config import RunConfig
from fooling.evo.emitters import EMITTERS, get_emitter
from fooling.evo.evaluation import Evaluator
from fooling.evo.run import evolve, resume_config
from fooling.fitness import Scorer, UnknownNameError
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


@pytest.mark.parametrize("color_space", ["hsv", "hls-opencv", "rgb"])
@pytest.mark.parametrize("coordinates", ["unit", "pixel"])
def test_differentiable_render_equals_render_and_passes_gradients(color_space, coordinates):
    encoding = CPPNEncoding(outputs=3, height=12, width=10, color_space=color_space, coordinates=coordinates)
    genomes = mutated_genomes(encoding, 6)
    weights = torch.from_numpy(genomes.edge_weight.copy()).requires_grad_(True)
    images = encoding.render_differentiable(genomes, weights)
    torch.testing.assert_close(images, encoding.render(genomes), atol=1e-6, rtol=0)
    images.sum().backward()
    gradient = weights.grad.numpy()
    assert np.all(gradient[~genomes.edge_used] == 0)  # unused slots take no part
    assert np.count_nonzero(gradient[genomes.edge_used]) > genomes.edge_used.sum() // 4


def _ascent_setup(lenet, seed: int):
    """A LeNet scorer, 8 mutated CPPNs, a target digit each, their weights, the renderer of
    weights, and the target log-probability of weights."""
    scorer = Scorer(lenet, device="cpu", engine="torch")
    encoding = CPPNEncoding(outputs=1, height=28, width=28)
    genomes = mutated_genomes(encoding, 8, seed=seed, rounds=5)
    targets = torch.arange(8) % 10

    def generate(weights: torch.Tensor) -> torch.Tensor:
        return encoding.render_differentiable(genomes, weights)

    def log_probability(weights: torch.Tensor) -> torch.Tensor:
        with torch.no_grad():
            return F.log_softmax(scorer.logits(generate(weights)), dim=1).gather(1, targets[:, None])[:, 0]

    return scorer, genomes, targets, torch.from_numpy(genomes.edge_weight), generate, log_probability


def test_ascend_parameters_raises_each_target_log_probability(lenet):
    scorer, genomes, targets, start, generate, log_probability = _ascent_setup(lenet, 1)
    after = ascend_parameters(scorer, generate, start, targets, steps=5, lr=0.02, low=-10.0, high=10.0)
    assert torch.equal(start, torch.from_numpy(genomes.edge_weight))  # the input is not modified
    assert after.abs().max() <= 10.0
    assert torch.equal(after[:, ~torch.from_numpy(genomes.edge_used).any(0)], start[:, ~torch.from_numpy(
        genomes.edge_used).any(0)])  # fmt: skip
    gained = log_probability(after) - log_probability(start)
    assert (gained > 0).sum() >= 6 and gained.mean() > 0
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
    np.testing.assert_allclose(got, expected, rtol=1e-4, atol=1e-7)


def test_ascend_parameters_keep_best_never_returns_worse_than_the_start(lenet):
    scorer, genomes, targets, start, generate, log_probability = _ascent_setup(lenet, 2)
    # Steps far too long for the rugged weight landscape: the last weights are worse for some rows,
    # the best ones never are.
    last = ascend_parameters(scorer, generate, start, targets, steps=4, lr=3.0, low=-10.0, high=10.0)
    best = ascend_parameters(scorer, generate, start, targets, steps=4, lr=3.0, low=-10.0, high=10.0,
                             keep_best=True)  # fmt: skip
    assert (log_probability(last) < log_probability(start)).any()
    assert (log_probability(best) >= log_probability(start) - 1e-5).all()
    assert not torch.equal(best, start)


def test_refine_in_smaller_chunks_gives_the_same_weights(lenet, tmp_path, monkeypatch):
    # Large renders are refined fewer genomes at a time (memory); rows do not interact.
    evaluator = Evaluator(run(tmp_path, "chunks"), lenet, device="cpu")
    genomes = mutated_genomes(evaluator.encoding, 5, seed=3, rounds=8)
    cells = np.arange(5) % len(evaluator.class_ids)
    whole = evaluator.refine(genomes, cells, steps=3, lr=0.02)
    monkeypatch.setattr(Evaluator, "REFINE_FLOATS", 1)  # one genome per pass
    one_by_one = evaluator.refine(genomes, cells, steps=3, lr=0.02)
    assert not np.array_equal(whole.edge_weight, genomes.edge_weight)
    np.testing.assert_allclose(one_by_one.edge_weight, whole.edge_weight, rtol=0, atol=1e-5)


def test_refined_rows_of_each_batch():
    ascent = get_emitter("ascent")
    assert ascent.refine_every == 8 and ascent.keep_best
    assert ascent.refined_rows(0, 6).tolist() == [0]
    assert ascent.refined_rows(6, 6).tolist() == [2]  # row 8 of the generation
    assert ascent.refined_rows(12, 4).tolist() == []
    assert ascent.evaluations_per_child == 1 + 3 * 10 / 8
    assert get_emitter("gradient").refined_rows(6, 3).tolist() == [0, 1, 2]
    assert get_emitter("paper").refined_rows(0, 6).tolist() == []


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
    paper = evolve(run(tmp_path, "c", generations=3, population=population), show_progress=False)
    assert first.archive.equals(second.archive)
    assert not first.archive.equals(paper.archive)  # the emitter changed the children
    per_child = EMITTERS[emitter].evaluations_per_child
    varied = population * per_child
    assert varied == int(varied)  # every child's cost counted, none rounded away
    assert [r["evals"] for r in first.logbook] == [population, varied, varied]


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
        (["--emitter", "gradient", "--workers", "2"], "--emitter gradient does not run on Ray yet"),
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
