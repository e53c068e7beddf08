"""Emitters (``--emitter``): differentiable CPPN rendering, gradient steps on weights, determinism, resume."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from fooling.encodings import CPPNEncoding
from fooling.evo.cli import main
from fooling.evo.config import RunConfig
from fooling.evo.emitters import EMITTERS, get_emitter
from fooling.evo.run import evolve, resume_config
from fooling.fitness import Scorer, UnknownNameError
from fooling.fitness.weight_ascent import ascend_parameters

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


def test_ascend_parameters_raises_each_target_log_probability(lenet):
    scorer = Scorer(lenet, device="cpu", engine="torch")
    encoding = CPPNEncoding(outputs=1, height=28, width=28)
    genomes = mutated_genomes(encoding, 8, seed=1, rounds=5)
    targets = torch.arange(8) % 10

    def log_probability(weights: torch.Tensor) -> torch.Tensor:
        with torch.no_grad():
            logits = scorer.logits(encoding.render_differentiable(genomes, weights))
            return F.log_softmax(logits, dim=1).gather(1, targets[:, None])[:, 0]

    start = torch.from_numpy(genomes.edge_weight)
    generate = lambda w: encoding.render_differentiable(genomes, w)  # noqa: E731
    after = ascend_parameters(scorer, generate, start, targets, steps=5, lr=0.02, low=-10.0, high=10.0)
    assert torch.equal(start, torch.from_numpy(genomes.edge_weight))  # the input is not modified
    assert after.abs().max() <= 10.0
    assert torch.equal(after[:, ~torch.from_numpy(genomes.edge_used).any(0)], start[:, ~torch.from_numpy(
        genomes.edge_used).any(0)])  # fmt: skip
    gained = log_probability(after) - log_probability(start)
    assert (gained > 0).sum() >= 6 and gained.mean() > 0
    with pytest.raises(ValueError, match="lr"):
        ascend_parameters(scorer, generate, start, targets, steps=1, lr=0.0, low=-10.0, high=10.0)


def test_perturb_weights_keeps_topology_and_bounds():
    encoding = CPPNEncoding(outputs=3, height=8, width=8)
    genomes = mutated_genomes(encoding, 16)
    moved = encoding.perturb_weights(genomes, np.random.default_rng(0))
    for name in ("node_used", "node_activation", "node_depth", "edge_used", "edge_source", "edge_target"):
        assert np.array_equal(getattr(moved, name), getattr(genomes, name))
    assert not np.array_equal(moved.edge_weight[genomes.edge_used], genomes.edge_weight[genomes.edge_used])
    assert np.array_equal(moved.edge_weight[~genomes.edge_used], genomes.edge_weight[~genomes.edge_used])
    encoding.validate(moved)


@pytest.mark.parametrize("emitter", ["finetune", "gradient"])
def test_emitter_same_seed_same_archive(fooling_home, tmp_path, emitter):
    first = evolve(run(tmp_path, "a", generations=3, emitter=emitter), show_progress=False)
    second = evolve(run(tmp_path, "b", generations=3, emitter=emitter), show_progress=False)
    paper = evolve(run(tmp_path, "c", generations=3), show_progress=False)
    assert first.archive.equals(second.archive)
    assert not first.archive.equals(paper.archive)  # the emitter changed the children
    per_child = EMITTERS[emitter].evaluations_per_child
    assert [r["evals"] for r in first.logbook] == [12, 12 * per_child, 12 * per_child]


@pytest.mark.parametrize("emitter", ["finetune", "gradient"])
def test_emitter_resume_gives_the_uninterrupted_archive(fooling_home, tmp_path, emitter):
    straight = evolve(run(tmp_path, "straight", generations=4, emitter=emitter), show_progress=False)
    evolve(run(tmp_path, "split", generations=2, emitter=emitter), show_progress=False)
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
    ],
)
def test_bad_emitter_is_one_line_and_exit_2(fooling_home, tmp_path, capsys, arguments, message):
    code = main(["evolve", "--model", "mnist-lenet", "--encoding", "cppn", "--generations", "2",
                 "--out", str(tmp_path / "bad"), "--no-progress", *arguments])  # fmt: skip
    assert code == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and message in err[0], err
    assert not (tmp_path / "bad").exists()
