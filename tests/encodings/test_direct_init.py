"""The direct encoding's first-generation draws (``init``): the paper's stream kept, multiscale images."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from fooling.encodings.direct import DIRECT_INITS, DirectEncoding

SHAPES = [(1, 28, 28), (3, 5, 9), (1, 1, 1), (3, 16, 4)]


def test_paper_init_is_the_uniform_draw_of_before():
    # The default keeps every run's stream: exactly the numbers one uniform draw gives.
    encoding = DirectEncoding(channels=1, height=28, width=28)
    assert encoding.init == "paper"
    drawn = encoding.random(7, np.random.default_rng(5)).pixels
    np.testing.assert_array_equal(drawn, np.random.default_rng(5).random((7, 1, 28, 28), dtype=np.float32))
    tensor = encoding.random_tensor(7, torch.Generator().manual_seed(5), "cpu").pixels
    expected = torch.rand((7, 1, 28, 28), generator=torch.Generator().manual_seed(5), dtype=torch.float32)
    assert torch.equal(tensor, expected)


@pytest.mark.parametrize("shape", SHAPES)
def test_multiscale_images_are_valid_genomes_and_repeatable(shape):
    encoding = DirectEncoding(channels=shape[0], height=shape[1], width=shape[2], init="multiscale")
    first = encoding.random(50, np.random.default_rng(1))
    encoding.validate(first)  # float32, the encoding's shape, inside [0, 1]
    assert first.pixels.shape == (50, *shape)
    np.testing.assert_array_equal(first.pixels, encoding.random(50, np.random.default_rng(1)).pixels)
    tensor = encoding.random_tensor(50, torch.Generator().manual_seed(1), "cpu")
    again = encoding.random_tensor(50, torch.Generator().manual_seed(1), "cpu")
    assert tensor.pixels.dtype == torch.float32 and tuple(tensor.pixels.shape) == (50, *shape)
    assert torch.equal(tensor.pixels, again.pixels)
    assert float(tensor.pixels.min()) >= 0.0 and float(tensor.pixels.max()) <= 1.0
    assert len(encoding.random(0, np.random.default_rng(1))) == 0


def test_multiscale_images_span_their_range_and_vary_in_scale():
    encoding = DirectEncoding(channels=1, height=28, width=28, init="multiscale")
    pixels = encoding.random(200, np.random.default_rng(0)).pixels.reshape(200, -1)
    # Every image is stretched to [0, 1] before its gamma, which keeps 0 and 1.
    np.testing.assert_array_equal(pixels.min(1), 0.0)
    np.testing.assert_array_equal(pixels.max(1), 1.0)
    # Coarse grids make neighbouring pixels alike, fine ones do not: the mean step between
    # horizontal neighbours spreads over images (uniform noise: about 1/3 for every image).
    steps = np.abs(np.diff(pixels.reshape(200, 28, 28), axis=2)).mean(axis=(1, 2))
    assert steps.min() < 0.05 and steps.max() > 0.2
    grids = encoding._grids(np.array([0.0, 1.0 - 1e-12]))
    np.testing.assert_array_equal(grids, [[2, 2], [28, 28]])


def test_unknown_init_is_refused():
    assert DIRECT_INITS == ("paper", "multiscale")
    with pytest.raises(ValueError, match="init must be one of"):
        DirectEncoding(channels=1, height=4, width=4, init="gaussian")
