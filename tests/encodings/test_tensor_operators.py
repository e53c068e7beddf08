"""Tensor variation operators against the numpy ones: formulas, rates, step distributions, CPPN structure.

Everything runs on CPU tensors; the same code serves CUDA (``tests/fitness/test_cuda.py``).
Statistical bounds follow from the sample sizes: a rate within 5 binomial standard
deviations, a two-sample Kolmogorov-Smirnov statistic below its 0.1% critical value.
"""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from fooling.encodings import (
    CPPNEncoding,
    CPPNGenomes,
    DirectEncoding,
    TensorGenomes,
    polynomial_mutation,
    polynomial_mutation_tensor,
    simulated_binary_crossover,
    simulated_binary_crossover_tensor,
)
from fooling.encodings.operators import _polynomial_step
from fooling.encodings.tensor_operators import (
    _polynomial_step_tensor,
    _sbx_children,
    bernoulli_positions_tensor,
    first_true,
    random_true,
)

EPS32 = 2.0**-24  # half the float32 spacing at 1: one rounding of a value in [0.5, 1]
KS_CRITICAL = 1.95  # c(alpha) of the two-sample KS test at alpha = 0.001


@pytest.fixture(autouse=True)
def one_thread():
    """Small tensors: torch's threads only wait on each other (15x slower on a busy 2-core machine)."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


def generator(seed: int) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


def within_binomial(successes: int, trials: int, probability: float) -> bool:
    """``successes`` within 5 standard deviations of ``trials * probability``."""
    return abs(successes - trials * probability) <= 5.0 * math.sqrt(
        trials * probability * (1.0 - probability)
    )


def ks_statistic(first: np.ndarray, second: np.ndarray) -> float:
    """The largest gap between the two samples' empirical distribution functions."""
    first, second = np.sort(first), np.sort(second)
    points = np.concatenate([first, second])
    gaps = np.searchsorted(first, points, side="right") / first.size
    gaps -= np.searchsorted(second, points, side="right") / second.size
    return float(np.abs(gaps).max())


def ks_bound(n: int, m: int) -> float:
    return KS_CRITICAL * math.sqrt((n + m) / (n * m))


# --- the formulas, in float32, against numpy's float64 -------------------------------------


@pytest.mark.parametrize(("low", "high"), [(0.0, 1.0), (-10.0, 10.0)])
def test_polynomial_step_is_the_numpy_formula_to_float32_rounding(low, high):
    rng = np.random.default_rng(0)
    x = (low + (high - low) * rng.random(200_000)).astype(np.float32)
    x[:500], x[500:1000] = low, high
    u = rng.random(x.size).astype(np.float32)
    expected = _polynomial_step(x.astype(np.float64), u.astype(np.float64), 15.0, low, high)
    got = _polynomial_step_tensor(torch.from_numpy(x), torch.from_numpy(u), 15.0, low, high)
    assert got.dtype == torch.float32
    # About 2 roundings of the span (see _polynomial_step_tensor): 4 leaves a factor 2.
    assert np.abs(got.numpy() - expected).max() <= 4 * EPS32 * (high - low)


class _Draws:
    """Stands in for a numpy Generator: ``random`` returns the given arrays in turn."""

    def __init__(self, arrays: list[np.ndarray]) -> None:
        self.arrays = list(arrays)

    def random(self, shape) -> np.ndarray:
        array = self.arrays.pop(0)
        assert array.shape == tuple(shape)
        return array


@pytest.mark.parametrize(("low", "high"), [(0.0, 1.0), (-10.0, 10.0)])
def test_sbx_is_the_numpy_formula_to_float32_rounding(low, high):
    rng = np.random.default_rng(1)
    size = 200_000
    a = (low + (high - low) * rng.random(size)).astype(np.float32)
    b = (low + (high - low) * rng.random(size)).astype(np.float32)
    b[:500] = a[:500] + np.float32(1e-6 * (high - low))  # close pairs: the largest spreads
    a[500:1000], b[1000:1500] = low, high
    draws = [rng.random(size).astype(np.float32).astype(np.float64) for _ in range(3)]
    draws[1][1500:2000] = 1.0 - EPS32 * np.arange(1, 501)  # u near 1: the spread's far tail
    expected = simulated_binary_crossover(a.astype(np.float64), b.astype(np.float64), _Draws(draws),
                                          eta=10.0, low=low, high=high)  # fmt: skip
    a_t, b_t = torch.from_numpy(a), torch.from_numpy(b)
    cross = torch.from_numpy(draws[0] < 0.5) & ((a_t - b_t).abs() > 1e-14)
    u = torch.from_numpy(draws[1].astype(np.float32))
    got = _sbx_children(a_t, b_t, cross, u, torch.from_numpy(draws[2] < 0.5), 10.0, low, high)
    for child, reference in zip(got, expected):
        assert child.dtype == torch.float32
        assert np.abs(child.numpy() - reference).max() <= 4 * EPS32 * (high - low)


# --- polynomial mutation: rate, bounds, step distribution ----------------------------------


@pytest.mark.parametrize(
    ("probability", "eta", "low", "high", "compact"),
    [(0.1, 15.0, 0.0, 1.0, True), (0.1, 15.0, 0.0, 1.0, False), (0.5, 2.0, 0.0, 1.0, True),
     (0.1, 15.0, -10.0, 10.0, False)],
)  # fmt: skip
def test_polynomial_mutation_rate_bounds_and_steps_match_numpy(probability, eta, low, high, compact):
    rng = np.random.default_rng(2)
    genes = (low + (high - low) * rng.random((100, 1000))).astype(np.float32)
    genes[:5] = low  # rows at the bounds: steps only inwards
    genes[5:10] = high
    tensor = torch.from_numpy(genes.copy())
    out = polynomial_mutation_tensor(
        tensor, generator(3), probability=probability, eta=eta, low=low, high=high, compact=compact
    )
    assert torch.equal(tensor, torch.from_numpy(genes))  # input untouched
    assert out.dtype == torch.float32 and out.shape == tensor.shape
    assert torch.isfinite(out).all() and out.min() >= low and out.max() <= high
    moved = (out != tensor).numpy()
    # An inner gene that is drawn stays put only if its step rounds to nothing (chance ~1e-6).
    assert within_binomial(int(moved[10:].sum()), moved[10:].size, probability)
    # A gene at a bound stays put when drawn to move towards it (u on that side: chance 1/2).
    assert within_binomial(int(moved[:10].sum()), moved[:10].size, probability / 2)
    reference = polynomial_mutation(genes, rng, probability=probability, eta=eta, low=low, high=high)
    ours, theirs = (out.numpy() - genes)[moved], (reference - genes)[reference != genes]
    assert ks_statistic(ours, theirs) < ks_bound(ours.size, theirs.size)


@pytest.mark.parametrize("compact", [True, False])
@pytest.mark.parametrize("dtype", [torch.float16, torch.float32, torch.float64])
@pytest.mark.parametrize("probability", [0.0, 1.0])
def test_polynomial_mutation_keeps_dtype_and_extreme_rates(dtype, probability, compact):
    genes = torch.rand((20, 3, 10, 10), generator=generator(0)).to(dtype)
    genes[:5] = 0.0
    genes[5:10] = 1.0
    out = polynomial_mutation_tensor(genes, generator(1), probability=probability, eta=15.0, compact=compact)
    assert out.dtype == dtype and out.shape == genes.shape
    assert out.min() >= 0 and out.max() <= 1
    if probability == 0.0:
        assert torch.equal(out, genes)
        return
    # Every gene is drawn. Inner genes all move but for steps below half the spacing (float16's
    # is 0.0005 near 0.5; eta 15's step density near 0 is about 8, so well under 1% stay).
    assert (out[10:] != genes[10:]).float().mean() > 0.99
    # A gene at a bound moves only when drawn to go inwards: chance 1/2.
    assert within_binomial(int((out[:10] != genes[:10]).sum()), genes[:10].numel(), 0.5)


@pytest.mark.parametrize(
    ("probability", "chunk"), [(0.001, None), (0.1, None), (0.5, None), (0.9, None), (0.3, 1000)]
)
def test_bernoulli_positions_are_independent_successes(probability, chunk):
    size = 200_000
    positions = bernoulli_positions_tensor(size, probability, generator(0), "cpu", chunk=chunk)
    assert positions.dtype == torch.int64 and (positions[1:] > positions[:-1]).all()
    assert positions.min() >= 0 and positions.max() < size
    assert within_binomial(positions.numel(), size, probability)
    assert within_binomial(int((positions < size // 2).sum()), positions.numel(), 0.5)
    # Geometric gaps: a success follows a success with chance ``probability``.
    follows = int((positions[1:] - positions[:-1] == 1).sum())
    assert within_binomial(follows, positions.numel() - 1, probability)


@pytest.mark.parametrize("compact", [True, False])
def test_a_row_depends_only_on_its_genes_and_the_seed(compact):
    first = torch.rand((8, 3, 16, 16), generator=generator(0))
    second = first.clone()
    second[1:] = torch.rand((7, 3, 16, 16), generator=generator(1))
    states = generator(2), generator(2)
    ours = polynomial_mutation_tensor(first, states[0], probability=0.3, eta=15.0, compact=compact)
    theirs = polynomial_mutation_tensor(second, states[1], probability=0.3, eta=15.0, compact=compact)
    assert torch.equal(ours[0], theirs[0])
    assert torch.equal(states[0].get_state(), states[1].get_state())
    again = polynomial_mutation_tensor(first, generator(2), probability=0.3, eta=15.0, compact=compact)
    assert torch.equal(again, ours)


def test_direct_mutation_follows_the_schedule_and_leaves_parents_alone():
    encoding = DirectEncoding(channels=3, height=16, width=16, halve_mutation_every=10)
    parents = encoding.random_tensor(100, generator(0), "cpu")
    assert parents.kind is encoding.genome_class and parents.pixels.shape == (100, 3, 16, 16)
    assert parents.pixels.dtype == torch.float32
    encoding.validate(parents.to_host())
    before = parents.copy()
    for generation, rate in ((0, 0.1), (25, 0.025)):
        children = encoding.mutate_tensor(parents, generator(generation + 1), generation)
        assert within_binomial(int((children.pixels != parents.pixels).sum()), parents.pixels.numel(), rate)
        encoding.validate(children.to_host())
    assert parents.equals(before)


# --- SBX: bounds, identical genes, symmetry, spread against numpy --------------------------


def test_sbx_bounds_identical_genes_and_rate():
    rng = np.random.default_rng(4)
    a = torch.from_numpy(rng.random((200, 500), dtype=np.float32))
    b = torch.from_numpy(rng.random((200, 500), dtype=np.float32))
    a[:5], b[5:10] = 0.0, 1.0
    b[:, :50] = a[:, :50]
    before = a.clone(), b.clone()
    c1, c2 = simulated_binary_crossover_tensor(a, b, generator(5), eta=10.0)
    assert torch.equal(a, before[0]) and torch.equal(b, before[1])
    for child in (c1, c2):
        assert child.dtype == torch.float32 and torch.isfinite(child).all()
        assert child.min() >= 0.0 and child.max() <= 1.0
    assert torch.equal(c1[:, :50], a[:, :50]) and torch.equal(c2[:, :50], b[:, :50])
    crossed = (c1 != a)[:, 50:]
    assert within_binomial(int(crossed.sum()), crossed.numel(), 0.5)
    # Symmetry: the child nearer the low bound lands in either position with chance 1/2.
    first_is_lower = (c1 < c2)[:, 50:][crossed]
    assert within_binomial(int(first_is_lower.sum()), first_is_lower.numel(), 0.5)


@pytest.mark.parametrize(("x1", "x2"), [(0.3, 0.6), (0.02, 0.12), (0.45, 0.55)])
def test_sbx_children_are_distributed_as_numpys(x1, x2):
    size = 50_000
    a, b = np.full(size, x1, np.float32), np.full(size, x2, np.float32)
    ours = simulated_binary_crossover_tensor(torch.from_numpy(a), torch.from_numpy(b), generator(6), eta=10.0)
    theirs = simulated_binary_crossover(a, b, np.random.default_rng(6), eta=10.0)
    for child, reference in zip(ours, theirs):
        child = child.numpy()
        moved, reference_moved = child[child != a], reference[reference != a]
        assert ks_statistic(moved, reference_moved) < ks_bound(moved.size, reference_moved.size)
    if abs((x1 - 0.0) - (1.0 - x2)) > 1e-6:
        return
    # Parents as far from both bounds: both spread factors are one draw's, so each pair keeps
    # its mean (where nothing was clipped). A sum of two values below 1 rounds within 1e-7.
    total = (ours[0] + ours[1]).numpy().astype(np.float64)
    inside = (ours[0] > 0).numpy() & (ours[0] < 1).numpy() & (ours[1] > 0).numpy() & (ours[1] < 1).numpy()
    assert inside.mean() > 0.99
    assert np.abs(total[inside] - (x1 + x2)).max() <= 4 * EPS32


def test_direct_mate_tensor_crosses_rows():
    encoding = DirectEncoding(channels=1, height=8, width=8)
    first, second = (
        encoding.random_tensor(30, generator(0), "cpu"),
        encoding.random_tensor(30, generator(1), "cpu"),
    )
    a, b = encoding.mate_tensor(first, second, generator(2))
    for child in (a, b):
        encoding.validate(child.to_host())
    crossed = (a.pixels != first.pixels).sum()
    assert within_binomial(int(crossed), first.pixels.numel(), 0.5)
    again = encoding.mate_tensor(first, second, generator(2))
    assert a.equals(again[0]) and b.equals(again[1])


# --- the index helpers ------------------------------------------------------------------------


def test_first_and_random_true_pick_only_true_columns_uniformly():
    mask = torch.zeros((3000, 10), dtype=torch.bool)
    mask[:, [2, 5, 7]] = True
    mask[-1] = False
    first, found = first_true(mask)
    assert (first[:-1] == 2).all() and found[:-1].all() and not found[-1]
    chosen, found = random_true(mask, generator(0))
    assert not found[-1] and mask[torch.arange(2999), chosen[:-1]].all()
    for column in (2, 5, 7):
        assert within_binomial(int((chosen[:-1] == column).sum()), 2999, 1 / 3)


# --- CPPN: layout, validity, rates, order, capacity, determinism ---------------------------

SMALL = dict(outputs=3, height=4, width=4, max_nodes=14, max_edges=30)


def only(**probabilities) -> CPPNEncoding:
    """A colour CPPN encoding whose only mutations are ``probabilities`` (the rest 0)."""
    chances = dict(weight_probability=0.0, activation_probability=0.0, add_connection=0.0,
                   delete_connection=0.0, add_node=0.0, delete_node=0.0)  # fmt: skip
    return CPPNEncoding(**{**dict(outputs=3, height=4, width=4, max_nodes=24, max_edges=64), **chances,
                           **probabilities})  # fmt: skip


def test_random_tensor_is_the_numpy_layout():
    encoding = CPPNEncoding(**SMALL)
    ours = encoding.random_tensor(6, generator(0), "cpu").to_host()
    theirs = encoding.random(6, np.random.default_rng(0))
    encoding.validate(ours)
    for name, array in theirs.arrays().items():
        mine = getattr(ours, name)
        assert mine.dtype == array.dtype and mine.shape == array.shape
        if name not in ("node_activation", "edge_weight"):  # the drawn fields
            assert np.array_equal(mine, array), name
    used = ours.edge_weight[ours.edge_used]
    assert np.abs(used).max() <= 10.0 and np.unique(used).size == used.size
    assert set(np.unique(ours.node_activation)) <= {0, 1, 2, 3}


@pytest.mark.parametrize(("outputs", "split_weight"), [(1, "one"), (3, "old")])
def test_many_generations_of_mutation_stay_valid(outputs, split_weight):
    encoding = CPPNEncoding(**{**SMALL, "outputs": outputs, "split_weight": split_weight})
    random = generator(outputs)
    genomes = encoding.random_tensor(64, random, "cpu")
    for _ in range(150):  # small capacities: full genomes, deletions and re-use of slots all happen
        genomes = encoding.mutate_tensor(genomes, random)
        encoding.validate(genomes.to_host())
    host = genomes.to_host()
    assert host.node_used.sum(axis=1).max() == encoding.max_nodes  # capacity reached, held


def test_weight_and_activation_rates():
    encoding = CPPNEncoding(outputs=3, height=4, width=4, weight_probability=0.1, activation_probability=0.1,
                            add_connection=0, delete_connection=0, add_node=0, delete_node=0)  # fmt: skip
    parents = encoding.random_tensor(2000, generator(0), "cpu")
    children = encoding.mutate_tensor(parents, generator(1))
    used = parents.edge_used
    assert torch.equal(children.edge_weight[~used], parents.edge_weight[~used])
    moved = children.edge_weight[used] != parents.edge_weight[used]
    assert within_binomial(int(moved.sum()), moved.numel(), 0.1)
    assert children.edge_weight.abs().max() <= 10.0
    assert torch.equal(children.node_activation[:, :4], parents.node_activation[:, :4])  # inputs never
    changed = children.node_activation[:, 4:7] != parents.node_activation[:, 4:7]
    assert within_binomial(int(changed.sum()), changed.numel(), 0.1 * 3 / 4)  # a fresh id, 1 in 4 the old
    assert torch.equal(children.node_activation[:, 7:], parents.node_activation[:, 7:])  # free slots


def sparse_genomes(encoding: CPPNEncoding, count: int, hidden: int, edges: int) -> TensorGenomes:
    """Genomes with ``hidden`` hidden nodes at distinct depths and only their first ``edges`` connections.

    With many nodes at distinct depths and few connections, nearly every pair of used nodes
    is a free forward pair: 20 tries of adding a connection fail with chance below 1e-15.
    """
    host = encoding.random(count, np.random.default_rng(7))
    first_hidden = 4 + encoding.outputs
    host.node_used[:, first_hidden : first_hidden + hidden] = True
    host.node_depth[:, first_hidden : first_hidden + hidden] = np.linspace(0.1, 0.9, hidden)
    host.edge_used[:, edges:] = False
    encoding.validate(host)
    return TensorGenomes.from_host(host, "cpu")


def counts(genomes: TensorGenomes) -> tuple[torch.Tensor, torch.Tensor]:
    return genomes.node_used.sum(dim=1), genomes.edge_used.sum(dim=1)


@pytest.mark.parametrize(
    ("operation", "probability", "node_change", "edge_change"),
    [("add_connection", 0.5, 0, 1), ("delete_connection", 0.3, 0, -1), ("add_node", 0.5, 1, 1),
     ("delete_node", 0.2, -1, None)],
)  # fmt: skip
def test_each_structural_mutation_happens_at_its_rate(operation, probability, node_change, edge_change):
    encoding = only(**{operation: probability})
    count = 4000
    parents = sparse_genomes(encoding, count, hidden=10, edges=8)
    children = encoding.mutate_tensor(parents, generator(8))
    encoding.validate(children.to_host())
    nodes_before, edges_before = counts(parents)
    nodes_after, edges_after = counts(children)
    node_delta, edge_delta = nodes_after - nodes_before, edges_after - edges_before
    happened = node_delta != 0 if node_change else edge_delta != 0
    assert within_binomial(int(happened.sum()), count, probability)
    assert (node_delta[happened] == node_change).all()
    if edge_change is not None:
        assert (edge_delta[happened] == edge_change).all()
    assert (node_delta[~happened] == 0).all() and (edge_delta[~happened] == 0).all()


@pytest.mark.parametrize("split_weight", ["one", "old"])
def test_add_node_splits_a_connection_at_the_mean_depth(split_weight):
    encoding = only(add_node=1.0, split_weight=split_weight)
    parents = encoding.random_tensor(500, generator(0), "cpu")
    children = encoding.mutate_tensor(parents, generator(1)).to_host()
    new = 7  # the first free node slot of a fresh colour genome
    assert children.node_used[:, new].all() and (children.node_depth[:, new] == 0.5).all()
    rows = np.arange(500)
    into = np.argmax(children.edge_used & (children.edge_target == new), axis=1)
    out_of = np.argmax(children.edge_used & (children.edge_source == new), axis=1)
    assert (children.edge_source[rows, into] < 4).all() and (children.edge_target[rows, out_of] >= 4).all()
    old = parents.to_host().edge_weight[rows, out_of]  # the split slot keeps its weight, now out of the node
    assert np.array_equal(children.edge_weight[rows, out_of], old)
    expected = np.ones(500, np.float32) if split_weight == "one" else old
    assert np.array_equal(children.edge_weight[rows, into], expected)


def test_structural_mutations_apply_in_the_numpy_order():
    # Add node before delete node: the only hidden node is the new one, and it goes with its
    # two connections. The other order would leave it.
    encoding = only(add_node=1.0, delete_node=1.0)
    parents = encoding.random_tensor(50, generator(0), "cpu")
    children = encoding.mutate_tensor(parents, generator(1))
    nodes, edges = counts(children)
    assert (nodes == 7).all() and (edges == 11).all()
    # Add connection before delete connection: from no connection at all, one is added, then deleted.
    encoding = only(add_connection=1.0, delete_connection=1.0)
    parents = sparse_genomes(encoding, 50, hidden=10, edges=0)
    assert (counts(encoding.mutate_tensor(parents, generator(2)))[1] == 0).all()
    # Delete connection before add node: the only connection goes first, nothing is left to split.
    encoding = only(delete_connection=1.0, add_node=1.0)
    parents = sparse_genomes(encoding, 50, hidden=0, edges=1)
    nodes, edges = counts(encoding.mutate_tensor(parents, generator(3)))
    assert (nodes == 7).all() and (edges == 0).all()


def test_full_genomes_skip_growth():
    # Capacity exactly the initial network: no free node, no free connection slot.
    chances = dict(weight_probability=0, activation_probability=0, delete_connection=0, delete_node=0)
    full = CPPNEncoding(outputs=3, height=4, width=4, max_nodes=7, max_edges=12, add_connection=1, add_node=1,
                        **chances)  # fmt: skip
    parents = full.random_tensor(20, generator(0), "cpu")
    assert full.mutate_tensor(parents, generator(1)).equals(parents)
    # A free node but every connection slot taken: no split (it needs a second slot).
    roomy = CPPNEncoding(outputs=3, height=4, width=4, max_nodes=9, max_edges=12, add_connection=0,
                         add_node=1, **chances)  # fmt: skip
    parents = roomy.random_tensor(20, generator(0), "cpu")
    assert roomy.mutate_tensor(parents, generator(1)).equals(parents)
    # A free connection slot but no free node: a connection can be added, no node.
    no_node = only(max_nodes=17, add_connection=1.0, add_node=1.0)
    parents = sparse_genomes(no_node, 20, hidden=10, edges=8)  # 4 + 3 + 10 = 17 nodes: full
    nodes, edges = counts(no_node.mutate_tensor(parents, generator(2)))
    assert (nodes == 17).all() and (edges == 9).all()


def test_add_node_skips_where_float32_has_no_depth_between():
    encoding = only(add_node=1.0)
    host = encoding.random(10, np.random.default_rng(0))
    host.node_used[:, 7] = True
    host.node_depth[:, 7] = np.nextafter(np.float32(1.0), np.float32(0.0))  # next to the outputs' 1
    host.edge_used[:] = False
    host.edge_used[:, 0], host.edge_source[:, 0], host.edge_target[:, 0] = True, 7, 4
    encoding.validate(host)
    parents = TensorGenomes.from_host(host, "cpu")
    assert encoding.mutate_tensor(parents, generator(1)).equals(parents)


def test_mutation_is_deterministic_row_wise_and_leaves_parents_alone():
    encoding = CPPNEncoding(**SMALL)
    random = generator(0)
    genomes = encoding.random_tensor(40, random, "cpu")
    for _ in range(20):
        genomes = encoding.mutate_tensor(genomes, random)
    before = genomes.copy()
    first_state = generator(11)
    first = encoding.mutate_tensor(genomes, first_state)
    assert genomes.equals(before)
    assert encoding.mutate_tensor(genomes, generator(11)).equals(first)
    # Other rows elsewhere in the batch: the same draws, so row 0 and the generator's state agree.
    other = genomes.copy()
    other.assign(np.arange(1, 40), encoding.random_tensor(39, generator(12), "cpu"))
    other_state = generator(11)
    mixed = encoding.mutate_tensor(other, other_state)
    assert mixed.take([0]).equals(first.take([0]))
    assert torch.equal(first_state.get_state(), other_state.get_state())
    assert not encoding.mutate_tensor(genomes, generator(13)).equals(first)


def test_tensor_and_numpy_mutation_grow_alike():
    # Not the same stream, the same process: mean sizes after 25 generations agree within
    # 5 standard errors of their difference.
    encoding = CPPNEncoding(outputs=3, height=4, width=4)
    rng, random = np.random.default_rng(0), generator(0)
    theirs, ours = encoding.random(200, rng), encoding.random_tensor(200, random, "cpu")
    for _ in range(25):
        theirs, ours = encoding.mutate(theirs, rng), encoding.mutate_tensor(ours, random)
    ours = ours.to_host()
    for name in ("node_used", "edge_used"):
        a, b = getattr(theirs, name).sum(axis=1), getattr(ours, name).sum(axis=1)
        error = math.sqrt(a.var(ddof=1) / a.size + b.var(ddof=1) / b.size)
        assert abs(a.mean() - b.mean()) <= 5 * error, name


def test_cppn_genome_class_round_trips():
    encoding = CPPNEncoding(**SMALL)
    genomes = encoding.random_tensor(3, generator(0), "cpu")
    assert isinstance(genomes.to_host(), CPPNGenomes)
    assert TensorGenomes.from_host(genomes.to_host(), "cpu").equals(genomes)
