"""``RunConfig.init``: the direct encoding's multiscale first images, for top-1 answers."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from fooling.encodings import UserError
from fooling.evo.config import RunConfig
from fooling.evo.evaluation import make_encoding
from fooling.evo.run import GENOME_CLASSES, evolve
from fooling.evo.store.checkpoint import read_latest_checkpoint
from fooling.fitness import get_model_spec


def test_init_defaults_to_paper_and_old_configs_read_as_paper():
    assert RunConfig().init == "paper"
    stored = json.loads(RunConfig(out="x").to_json())
    del stored["init"]  # a config written before the field existed
    assert RunConfig.from_json(json.dumps(stored)).init == "paper"


def test_bad_init_is_one_user_error():
    with pytest.raises(UserError, match="--init must be paper or multiscale, not 'smooth'"):
        RunConfig(init="smooth")
    with pytest.raises(UserError, match="--init multiscale is for --encoding direct; --encoding cppn takes"):
        RunConfig(encoding="cppn", init="multiscale")


def test_the_run_encoding_draws_as_init_says():
    spec = get_model_spec("mnist-lenet")
    paper = make_encoding(RunConfig(), spec)
    multiscale = make_encoding(RunConfig(init="multiscale"), spec)
    assert (paper.init, multiscale.init) == ("paper", "multiscale")


def _labels(lenet, pixels: np.ndarray) -> np.ndarray:
    with torch.no_grad():
        return lenet.network(torch.from_numpy(pixels)).argmax(1).numpy()


def test_multiscale_first_images_fall_into_many_lenet_classes(lenet):
    # What the option is for: with top-1 answers a class is seen only where it is an image's
    # best, and the LeNet labels uniform noise as one or two digits; multiscale noise is
    # labelled as most of the ten (measured: all ten for 200 images with seeds 0, 1 and 2).
    spec = get_model_spec("mnist-lenet")
    rng = np.random.default_rng(0)
    paper = make_encoding(RunConfig(), spec).random(200, rng).pixels
    multiscale = make_encoding(RunConfig(init="multiscale"), spec).random(200, rng).pixels
    assert np.unique(_labels(lenet, paper)).size <= 2
    assert np.unique(_labels(lenet, multiscale)).size >= 7


@pytest.mark.parametrize("vary_on", ["host", "scorer"])
def test_a_multiscale_run_stores_its_init_and_repeats(fooling_home, tmp_path, vary_on):
    fields = dict(generations=2, population=20, checkpoint_every=0, init="multiscale", vary_on=vary_on)
    evolve(RunConfig(out=str(tmp_path / "a"), **fields), show_progress=False)
    evolve(RunConfig(out=str(tmp_path / "b"), **fields), show_progress=False)
    first, second = (read_latest_checkpoint(str(tmp_path / n), GENOME_CLASSES) for n in "ab")
    assert first.config.init == "multiscale"
    np.testing.assert_array_equal(first.archive.fitness, second.archive.fitness)
    np.testing.assert_array_equal(first.archive.genomes.pixels, second.archive.genomes.pixels)
