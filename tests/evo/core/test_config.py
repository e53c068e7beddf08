"""The run config: each encoding's own colour spaces, and stored configs of older versions."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from fooling.encodings import CPPNEncoding, UserError
from fooling.evo import RunConfig
from fooling.evo.evaluation import make_encoding
from fooling.fitness import ModelSpec

# A 3-channel model of 16x16 inputs (never built: only its shape is read).
COLOUR_MODEL = ModelSpec(
    name="colour", channels=3, input_size=(16, 16), mean=(0.0,) * 3, std=(1.0,) * 3,
    class_names=("a", "b"), build=lambda: torch.nn.Identity(),
)  # fmt: skip


def stored_config(**fields) -> str:
    """A run config as a checkpoint written before each encoding named its own colour spaces
    stores it: every field, the colour space ``"rgb"`` whatever the encoding."""
    config = json.loads(RunConfig(**fields).to_json())
    return json.dumps({**config, "color_space": "rgb", **fields})


def test_the_colour_space_default_is_the_encodings_own():
    assert RunConfig().color_space == "rgb"
    assert RunConfig(encoding="cppn").color_space == "hsv"
    assert RunConfig(encoding="CPPN").color_space == "hsv"  # names in any case, as --encoding
    assert RunConfig(encoding="direct", color_space="hsv").color_space == "hsv"
    assert RunConfig(encoding="cppn", color_space="hls-opencv").color_space == "hls-opencv"
    for encoding in ("direct", "cppn"):
        config = RunConfig(encoding=encoding)
        assert RunConfig.from_json(config.to_json()) == config


def test_an_unknown_encoding_keeps_no_colour_space_until_it_is_made():
    config = RunConfig(encoding="cppm")
    assert config.color_space is None
    with pytest.raises(LookupError, match="did you mean 'cppn'"):
        make_encoding(config, COLOUR_MODEL)


def test_rgb_means_rgb_genes_and_is_refused_for_cppns_in_one_line():
    with pytest.raises(UserError) as caught:
        RunConfig(encoding="cppn", color_space="rgb")
    assert str(caught.value) == (
        "--color-space rgb is for --encoding direct; --encoding cppn takes hsv, hls or hls-opencv "
        "(rgb was its old name for hsv)"
    )
    with pytest.raises(
        UserError, match="^--color-space hls is for --encoding cppn; --encoding direct takes rgb"
    ):
        RunConfig(encoding="direct", color_space="hls")
    with pytest.raises(UserError, match="^--color-space must be .* not 'hvs'; did you mean 'hsv'"):
        RunConfig(encoding="cppn", color_space="hvs")


def test_an_old_cppn_config_with_rgb_reads_as_the_hsv_it_rendered():
    old = RunConfig.from_json(stored_config(encoding="cppn", seed=3))
    assert old.color_space == "hsv" and old == RunConfig(encoding="cppn", seed=3, color_space="hsv")
    encoding = make_encoding(old, COLOUR_MODEL)
    # The encoding the old code built for "rgb" with a CPPN: HSV outputs.
    before = CPPNEncoding(outputs=3, height=16, width=16, color_space="hsv")
    genomes = before.random(6, np.random.default_rng(0))
    genomes = before.mutate(before.mutate(genomes, np.random.default_rng(1)), np.random.default_rng(2))
    assert encoding.color_space == "hsv"
    assert torch.equal(encoding.render(genomes), before.render(genomes))
    # A direct run's "rgb" was RGB genes, and still is.
    assert RunConfig.from_json(stored_config(encoding="direct")).color_space == "rgb"


def test_the_help_lists_each_encodings_colour_spaces(capsys):
    from fooling.evo.cli.main import build_parser

    with pytest.raises(SystemExit):
        build_parser().parse_args(["evolve", "--help"])
    text = "".join(capsys.readouterr().out.split())  # argparse wraps lines at hyphens too
    expected = (
        "--color-space COLOR_SPACE colour of 3-channel images, by encoding (the first is its default): "
        "direct: rgb, hsv | cppn: hsv, hls, hls-opencv (default: the encoding's)"
    )
    assert "".join(expected.split()) in text


def test_a_config_that_is_not_json_is_one_user_error():
    with pytest.raises(UserError, match="^run config is not valid JSON"):
        RunConfig.from_json("{not json")
    with pytest.raises(UserError, match="^run config is not a JSON object$"):
        RunConfig.from_json("[1, 2]")
