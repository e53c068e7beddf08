"""The original code's CPPN rendering (pixel coordinates, OpenCV 8-bit HLS) and ``--preset paper``.

Expected pixels are worked out by hand from OpenCV's documented 8-bit HLS -> BGR rule:
bytes ``H, L, S``; hue ``h = H * 2`` degrees taken modulo 360; ``l = L / 255``,
``s = S / 255``; ``p2 = l * (1 + s)`` for ``l <= 0.5``; ``p1 = 2 l - p2``; sector
``k = floor(h / 60)``, fraction ``f = h / 60 - k``; the table ``[p2, p1, p1 + (p2 - p1)(1 - f),
p1 + (p2 - p1) f]`` indexed by the sector rows ``(1,3,0) (1,0,2) (3,0,1) (0,2,1) (0,1,3) (2,1,0)``
gives B, G, R; each rounded to a byte.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch

from fooling.encodings import CPPNEncoding, coordinate_inputs, hls_bytes_to_rgb
from fooling.evo.cli import main
from fooling.evo.config import PRESETS, RunConfig
from fooling.evo.run import GENOME_CLASSES
from fooling.evo.store.checkpoint import read_latest_checkpoint
from fooling.fitness import UnknownNameError

LINEAR = 3  # index of the clipped linear activation


def as_bytes(rgb: torch.Tensor) -> list[tuple[int, int, int]]:
    """``(1, 3, 1, n)`` RGB in [0, 1] -> n byte triples."""
    return [tuple(int(round(v * 255)) for v in pixel) for pixel in rgb[0, :, 0].T.tolist()]


def test_hls_bytes_match_hand_computed_opencv_values_including_the_hue_wrap():
    outputs = torch.tensor(
        [
            # (H, L, S) outputs of four pixels
            [0.0, 0.5, 1.0],  # hue byte 0 -> red: sector 0, B = p1, G = p1, R = p2 = 254/255
            [0.3, 0.5, 1.0],  # byte 76 -> 152 degrees, sector 2, f = 0.5333: B = 135.47 -> 135
            [-0.9, 0.5, 1.0],  # |o|: byte 229 -> 458 -> wraps to 98 degrees, sector 1: R = 93.13 -> 93
            [0.7, 0.2, 0.0],  # no saturation: gray at the lightness byte, trunc(51.0) = 51
        ]
    ).T.reshape(1, 3, 1, 4)
    assert as_bytes(hls_bytes_to_rgb(outputs)) == [(254, 0, 0), (0, 254, 135), (93, 254, 0), (51, 51, 51)]


def test_pixel_coordinates_are_raw_column_and_row_with_distance_in_unit_scale():
    planes = coordinate_inputs(3, 5, coordinates="pixel").reshape(4, 3, 5)
    assert planes[0].tolist() == [[0, 1, 2, 3, 4]] * 3
    assert planes[1].tolist() == [[0] * 5, [1] * 5, [2] * 5]
    assert planes[2, 1, 2].item() == 0.0 and planes[2, 0, 0].item() == pytest.approx(2**0.5)
    assert (planes[3] == 1).all()
    with pytest.raises(ValueError, match="unit or pixel"):
        coordinate_inputs(3, 5, coordinates="pixels")


def test_faithful_render_of_a_hand_built_cppn():
    encoding = CPPNEncoding(outputs=3, height=1, width=4, color_space="hls-opencv", coordinates="pixel")
    genome = encoding.random(1, np.random.default_rng(0))
    genome.node_activation[:, 4:7] = LINEAR
    genome.edge_weight[:, :12] = 0.0
    # Initial edges run input-major per output: edge 4 * output + input (inputs x, y, d, bias).
    genome.edge_weight[0, 0] = 0.9  # H = clip(0.9 x) / 3: x = 0, 1, 3 -> 0, 0.3, 0.9
    genome.edge_weight[0, 4 + 3] = 1.5  # L = 0.5 everywhere
    genome.edge_weight[0, 8 + 3] = 3.0  # S = 1.0 everywhere
    image = encoding.render(genome)
    pixels = as_bytes(image)
    assert pixels[0] == (254, 0, 0) and pixels[1] == (0, 254, 135) and pixels[3] == (93, 254, 0)


def test_split_weight_old_gives_both_new_connections_the_old_weight():
    for split_weight in ("one", "old"):
        encoding = CPPNEncoding(outputs=1, height=4, width=4, split_weight=split_weight)
        genome = encoding.random(1, np.random.default_rng(1))
        before = set(genome.edge_weight[0, :4].tolist())
        encoding._add_node(genome, 0, np.random.default_rng(2))
        node = 5  # the first hidden slot (4 inputs, 1 output)
        assert genome.node_used[0, node]
        used = genome.edge_used[0]
        (into,) = np.flatnonzero(used & (genome.edge_target[0] == node))
        (out_of,) = np.flatnonzero(used & (genome.edge_source[0] == node))
        old = float(genome.edge_weight[0, out_of])
        assert old in before
        assert genome.edge_weight[0, into] == (1.0 if split_weight == "one" else old)


def test_preset_paper_sets_the_original_settings_and_flags_override():
    config = RunConfig.from_preset("paper", model="imagenet-lite0", crops=1)
    assert (config.population, config.generations, config.crops, config.image_size) == (400, 5000, 1, 256)
    assert (config.coordinates, config.color_space, config.split_weight) == ("pixel", "hls-opencv", "old")
    assert config.preset == "paper" and config.classes is None and config.encoding == "cppn"
    assert RunConfig.from_json(config.to_json()) == config
    with pytest.raises(UnknownNameError, match="did you mean 'paper'"):
        RunConfig.from_preset("papr")
    assert set(PRESETS) == {"paper"}


def test_preset_is_stored_in_the_checkpoint_and_kept_on_resume(fooling_home, tmp_path, capsys):
    out = tmp_path / "paper"
    tiny = ["--model", "mnist-lenet", "--population", "8", "--image-size", "32", "--max-nodes", "24"]
    common = ["--no-progress", "--no-report"]
    assert main(["evolve", "--preset", "paper", *tiny, "--generations", "2", "--out", str(out), *common]) == 0
    first = read_latest_checkpoint(str(out), GENOME_CLASSES)
    assert first.config.preset == "paper" and first.config.coordinates == "pixel"
    assert first.config.crops == 10 and first.config.max_nodes == 24 and first.config.max_edges == 1024
    assert main(["evolve", "--resume", str(out), "--generations", "3", *common]) == 0
    resumed = read_latest_checkpoint(str(out), GENOME_CLASSES)
    assert resumed.generation == 2
    assert resumed.config == first.config.__class__(**{**first.config.__dict__, "generations": 3})
    assert main(["evolve", "--preset", "papr", "--out", str(tmp_path / "bad"), *common]) == 2
    assert "did you mean 'paper'" in capsys.readouterr().err
