"""Direct-encoding operators: bounds, rates, determinism, and swapping them the DEAP way."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from fooling.encodings import DirectEncoding, DirectGenomes, polynomial_mutation, simulated_binary_crossover
from fooling.encodings.operators import bernoulli_positions
from fooling.evo.search import Variation
from fooling.evo.toolbox import make_toolbox, vary


@settings(max_examples=60, deadline=None)
@given(
    seed=st.integers(0, 2**32 - 1),
    probability=st.floats(0.0, 1.0),
    eta=st.floats(0.5, 100.0),
    edge=st.sampled_from(["random", "zeros", "ones"]),
)
def test_polynomial_mutation_stays_in_bounds(seed, probability, eta, edge):
    rng = np.random.default_rng(seed)
    genes = {"random": rng.random((8, 50)), "zeros": np.zeros((8, 50)), "ones": np.ones((8, 50))}[edge]
    genes = genes.astype(np.float32)
    out = polynomial_mutation(genes, rng, probability=probability, eta=eta)
    assert out.dtype == np.float32 and out.shape == genes.shape
    assert np.isfinite(out).all() and out.min() >= 0.0 and out.max() <= 1.0


def deb_polynomial_mutation(genes, rng, probability, eta):
    """DEAP's ``mutPolynomialBounded`` on [0, 1], its two sides computed in full for every gene."""
    out = genes.copy()
    flat = out.reshape(-1)
    positions = bernoulli_positions(flat.size, probability, rng)
    x, u = flat[positions].astype(np.float64), rng.random(positions.size)
    delta_1, delta_2 = (x - 0.0) / 1.0, (1.0 - x) / 1.0
    power = 1.0 / (eta + 1.0)
    with np.errstate(invalid="ignore"):
        low = (2.0 * u + (1.0 - 2.0 * u) * (1.0 - delta_1) ** (eta + 1.0)) ** power - 1.0
        high = 1.0 - (2.0 * (1.0 - u) + 2.0 * (u - 0.5) * (1.0 - delta_2) ** (eta + 1.0)) ** power
    flat[positions] = np.clip(x + np.where(u < 0.5, low, high) * 1.0, 0.0, 1.0)
    return out


@pytest.mark.parametrize("threads", [1, 2])
@pytest.mark.parametrize("probability", [0.02, 0.1, 0.5])
def test_polynomial_mutation_is_debs_formula_bit_for_bit_in_any_thread_count(threads, probability):
    # 600,000 genes: at 0.5 the mutated genes are moved in two threads when two are allowed.
    genes = np.random.default_rng(3).random((4, 3, 200, 250), dtype=np.float32)
    before = torch.get_num_threads()
    torch.set_num_threads(threads)
    try:
        out = polynomial_mutation(genes, np.random.default_rng(9), probability=probability, eta=15.0)
    finally:
        torch.set_num_threads(before)
    expected = deb_polynomial_mutation(genes, np.random.default_rng(9), probability, eta=15.0)
    assert np.array_equal(out, expected)


@pytest.mark.parametrize("probability", [0.001, 0.1, 0.3, 1 / 3, 0.6])
def test_bernoulli_positions_are_numpys_geometric_gaps(probability):
    rng, reference = np.random.default_rng(5), np.random.default_rng(5)
    size = 100_000
    positions = bernoulli_positions(size, probability, rng)
    expected = int(size * probability + 6.0 * np.sqrt(size * probability) + 16)
    gaps = reference.geometric(probability, size=expected)
    assert np.array_equal(positions, (np.cumsum(gaps) - 1)[np.cumsum(gaps) - 1 < size])
    assert rng.random() == reference.random()  # the generator is left in the same state


@settings(max_examples=60, deadline=None)
@given(seed=st.integers(0, 2**32 - 1), eta=st.floats(0.5, 100.0))
def test_sbx_stays_in_bounds_and_keeps_identical_genes(seed, eta):
    rng = np.random.default_rng(seed)
    a, b = rng.random((4, 64)).astype(np.float32), rng.random((4, 64)).astype(np.float32)
    b[:, :8] = a[:, :8]
    c1, c2 = simulated_binary_crossover(a, b, rng, eta=eta)
    for child in (c1, c2):
        assert child.min() >= 0.0 and child.max() <= 1.0 and np.isfinite(child).all()
    assert np.array_equal(c1[:, :8], a[:, :8]) and np.array_equal(c2[:, :8], b[:, :8])


def test_mutation_rate_is_the_stated_probability():
    encoding = DirectEncoding(channels=1, height=28, width=28, mutation_probability=0.1)
    parents = encoding.random(500, np.random.default_rng(1))
    children = encoding.mutate(parents, np.random.default_rng(2))
    changed = (children.pixels != parents.pixels).mean()
    # 392,000 genes: the standard error of the rate is ~0.0005.
    assert abs(changed - 0.1) < 0.003
    assert not np.shares_memory(children.pixels, parents.pixels)


def test_halving_schedule():
    encoding = DirectEncoding(channels=1, height=4, width=4, halve_mutation_every=1000)
    assert [encoding.mutation_rate(g) for g in (0, 999, 1000, 2500)] == [0.1, 0.1, 0.05, 0.025]


def test_variation_is_a_pure_function_of_seed_generation_and_batch():
    encoding = DirectEncoding(channels=3, height=8, width=8)
    parents = encoding.random(16, np.random.default_rng(0))
    from fooling.evo.search import Task

    make = Variation(make_toolbox(encoding), seed=7, crossover_probability=0.5)
    rows = np.arange(16)
    first = make(Task(generation=3, batch_index=1, count=16, parent_rows=rows), parents)
    again = make(Task(generation=3, batch_index=1, count=16, parent_rows=rows.copy()), parents.copy())
    other = make(Task(generation=3, batch_index=2, count=16, parent_rows=rows), parents)
    assert first.equals(again) and not first.equals(other)


def test_user_registered_operator_is_used():
    encoding = DirectEncoding(channels=1, height=4, width=4)
    toolbox = make_toolbox(encoding)
    calls = []

    def invert(genomes: DirectGenomes, rng, generation):
        calls.append(len(genomes))
        return DirectGenomes(1.0 - genomes.pixels)

    toolbox.register("mutate", invert)
    parents = encoding.random(5, np.random.default_rng(0))
    children = vary(toolbox, parents, np.random.default_rng(1), generation=1)
    assert calls == [5]
    assert np.array_equal(children.pixels, 1.0 - parents.pixels)


def test_hsv_rendering_is_rgb_for_gray_saturation():
    encoding = DirectEncoding(channels=3, height=2, width=2, color_space="hsv")
    pixels = np.zeros((1, 3, 2, 2), np.float32)
    pixels[:, 2] = 0.5  # value 0.5, saturation 0: mid gray whatever the hue
    pixels[:, 0] = 0.3
    images = encoding.render(DirectGenomes(pixels))
    assert np.allclose(images.numpy(), 0.5)
    pixels[:, 1] = 1.0
    pixels[:, 0] = 0.0  # hue 0, full saturation: pure red
    red = encoding.render(DirectGenomes(pixels)).numpy()[0, :, 0, 0]
    assert np.allclose(red, [0.5, 0.0, 0.0])


@pytest.mark.parametrize("size", [4, 160])  # rows of 192 bytes and of 300 kB, copied two ways
def test_assign_from_chosen_rows(size):
    encoding = DirectEncoding(channels=3, height=size, width=size)
    target = encoding.random(5, np.random.default_rng(0))
    source = encoding.random(3, np.random.default_rng(1))
    expected = target.pixels.copy()
    expected[[4, 0, 2]] = source.pixels[[1, 1, 0]]
    target.assign(np.array([4, 0, 2]), source, np.array([1, 1, 0]))
    assert np.array_equal(target.pixels, expected)
