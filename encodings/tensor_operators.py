"""Bounded polynomial mutation and SBX on torch tensors, the same code on every device.

The formulas of :mod:`~fooling.encodings.operators` (DEAP's ``tools.mutPolynomialBounded``
and ``tools.cxSimulatedBinaryBounded``) for generations that stay on the scorer's device.
Every random number comes from the ``torch.Generator`` passed in (Philox on CUDA, mt19937
on the CPU), which must live on the genes' device; the global torch RNG is never used.
What a call draws depends on the shapes of its arguments and the stream, never on their
values, so a generator keyed by (seed, generation, batch) leads to the same draws whatever
the genomes hold, and row ``i`` of a result depends only on row ``i`` of the inputs.

Off the CPU, which genes vary is one uniform draw per gene (and per decision), not the
geometric gaps of the numpy version: on a GPU a full mask costs one memory pass and needs
no host round trip to size a list of positions (see :func:`polynomial_mutation_tensor`
for the CPU's form).

Precision: the formulas run in float32 for float32 (or narrower) genes, in float64 for
float64 genes. Genes are stored as float32, whose spacing is 6e-8 at 0.5 and 1e-6 at 10,
and every step of the formulas keeps its error near that: see
:func:`_polynomial_step_tensor` and :func:`_sbx_children` for the magnitudes. Uniform
draws in float32 are multiples of 2^-24: a rate compared with them is exact to 6e-8, and
the numpy version's float64 draws would only refine the step distribution in its 1e-7 tails.
"""

from __future__ import annotations

import math

import torch

__all__ = [
    "bernoulli_positions_tensor",
    "first_true",
    "polynomial_mutation_tensor",
    "random_true",
    "simulated_binary_crossover_tensor",
]

# numpy's ``simulated_binary_crossover`` treats gene pairs closer than this as identical.
_IDENTICAL = 1e-14


def _compute_dtype(dtype: torch.dtype) -> torch.dtype:
    """float32 for float32 and narrower floats (and integers), float64 for float64."""
    return torch.float64 if dtype == torch.float64 else torch.float32


def _uniform(like: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
    """Uniform draws in [0, 1) of ``like``'s shape, dtype and device."""
    return torch.rand(like.shape, generator=generator, device=like.device, dtype=like.dtype)


def polynomial_mutation_tensor(
    genes: torch.Tensor,
    generator: torch.Generator,
    *,
    probability: float,
    eta: float,
    low: float = 0.0,
    high: float = 1.0,
    compact: bool | None = None,
) -> torch.Tensor:
    """Bounded polynomial mutation of every gene independently with ``probability``.

    Which genes mutate is drawn one of two ways, the same distribution (each gene
    independently with ``probability``) with different streams:

    * full (the default off the CPU): one uniform number per gene, compared with
      ``probability``, and one per gene for where it moves; the formula runs on every gene
      and a mask keeps the drawn ones. No host round trip.
    * compact (the CPU's default): the gaps between mutating genes (geometric, as numpy's
      version draws them), then one number per mutating gene; the formula runs on those
      only. How many genes mutate must be known on the host to size the list, so on a GPU
      this waits for the device once per call.

    Measured on 400 direct ImageNet children (60 million genes, rate 0.1) on the 2-core
    CPU: full 1.7 s, a uniform mask then the formula on the gathered genes 0.62 s, compact
    0.30 s, numpy's :func:`~fooling.encodings.operators.polynomial_mutation` 0.25 s. A GPU
    does the full form's few passes over every gene in about a millisecond.

    Either way the draws depend only on the generator and the shape (never on the genes'
    values), and a gene's draws come before those of later genes in row-major order, so
    row ``i`` of the result depends only on row ``i`` of ``genes``.

    Args:
        genes: any shape, floating point, values in ``[low, high]``, on ``generator``'s
            device; not modified.
        generator: source of every random draw.
        probability: chance that a gene mutates (a schedule's rate for the generation).
        eta: crowding degree; larger keeps children closer to their parents.
        low: lower bound of every gene.
        high: upper bound of every gene.
        compact: the compact form; ``None``: on the CPU only.

    Returns:
        A new tensor of ``genes``' shape, dtype and device, values in ``[low, high]``;
        genes that do not mutate keep their bits.
    """
    compute = _compute_dtype(genes.dtype)
    x = genes.to(compute)
    if not (compact if compact is not None else genes.device.type == "cpu"):
        mutates = _uniform(x, generator) < probability
        out = torch.where(mutates, _polynomial_step_tensor(x, _uniform(x, generator), eta, low, high), x)
        return out.to(genes.dtype)
    out = x.reshape(-1).clone()
    positions = bernoulli_positions_tensor(out.numel(), probability, generator, out.device)
    chosen = out.index_select(0, positions)
    out.index_copy_(
        0, positions, _polynomial_step_tensor(chosen, _uniform(chosen, generator), eta, low, high)
    )
    return out.view(genes.shape).to(genes.dtype)


def bernoulli_positions_tensor(
    size: int,
    probability: float,
    generator: torch.Generator,
    device: torch.device | str,
    *,
    chunk: int | None = None,
) -> torch.Tensor:
    """Sorted indices in ``[0, size)`` ``(n,)`` int64, each present independently with ``probability``.

    Draws the gaps between successes (geometric, by inversion of float64 uniform numbers:
    ``floor(log(1 - r) / log(1 - probability)) + 1``), so the cost grows with the number of
    successes, not with ``size``. Reads the last position on the host (a synchronisation
    off the CPU).

    Args:
        size: number of candidate positions.
        probability: chance of each.
        generator: source of the draws, on ``device``.
        device: where the positions go.
        chunk: gaps drawn at a time; ``None``: the expected count plus 6 standard deviations
            (more are drawn in the rare case they do not reach ``size``).
    """
    if probability <= 0.0 or size == 0:
        return torch.zeros(0, dtype=torch.int64, device=device)
    if probability >= 1.0:
        return torch.arange(size, device=device)
    log_keep = math.log1p(-probability)
    expected = size * probability
    chunk = chunk or int(expected + 6.0 * math.sqrt(expected) + 16)

    def gaps() -> torch.Tensor:
        r = torch.rand(chunk, generator=generator, device=device, dtype=torch.float64)
        # Gaps past the end are all alike; capping them keeps the cumulative sum from overflowing.
        return r.neg_().log1p_().div_(log_keep).floor_().add_(1.0).clamp_(max=size + 1).to(torch.int64)

    positions = gaps().cumsum(0).sub_(1)
    while int(positions[-1]) < size:  # rare: more successes than ~6 standard deviations
        positions = torch.cat([positions, gaps().cumsum(0).add_(positions[-1])])
    return positions[positions < size]


def _polynomial_step_tensor(
    x: torch.Tensor, u: torch.Tensor, eta: float, low: float, high: float
) -> torch.Tensor:
    """The mutated values of genes ``x`` given their uniform draws ``u`` (same shape, same dtype).

    The operations of numpy's ``_polynomial_step``. Error in float32 (eps = 6e-8): the
    distance to the bound over the span, ``t`` in [0, 1], is within 1 eps; its 16th power
    (eta 15) within about 16 eps relative; ``value`` in [0, 2] inherits that at most; the
    16th root divides the relative error by 16 again, so ``root`` (near 1) is within about
    2 eps, and ``delta * span`` within about 2 eps of the span: 1e-7 on [0, 1] genes,
    2.4e-6 on [-10, 10] weights, the order of the float32 spacing of the stored result
    (tested against the float64 formula).
    """
    span = high - low
    lower = u < 0.5
    # Each gene moves towards one bound (lower when u < 0.5); the sides share their shape.
    base = (1.0 - torch.where(lower, x - low, high - x) / span).pow_(eta + 1.0)
    value = torch.where(lower, 2.0 * u + (1.0 - 2.0 * u) * base, 2.0 * (1.0 - u) + 2.0 * (u - 0.5) * base)
    root = value.pow_(1.0 / (eta + 1.0))
    delta = torch.where(lower, root - 1.0, 1.0 - root)
    return delta.mul_(span).add_(x).clamp_(low, high)


def simulated_binary_crossover_tensor(
    first: torch.Tensor,
    second: torch.Tensor,
    generator: torch.Generator,
    *,
    eta: float,
    gene_probability: float = 0.5,
    low: float = 0.0,
    high: float = 1.0,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Bounded simulated binary crossover (SBX) of two equally shaped gene tensors.

    Each gene pair crosses with ``gene_probability``; identical genes (closer than 1e-14,
    as in the numpy version) never do. Draws three uniform numbers per gene pair.

    Args:
        first: any shape, floating point, values in ``[low, high]``; not modified.
        second: ``first``'s shape, dtype and device; not modified.
        generator: source of every random draw, on the genes' device.
        eta: crowding degree; larger keeps children closer to their parents.
        gene_probability: chance that a gene pair crosses.
        low: lower bound of every gene.
        high: upper bound of every gene.

    Returns:
        Two new tensors of the inputs' shape and dtype, values in ``[low, high]``.

    Raises:
        ValueError: ``first`` and ``second`` differ in shape.
    """
    if first.shape != second.shape:
        shapes = f"{tuple(first.shape)} and {tuple(second.shape)}"
        raise ValueError(f"SBX needs equally shaped parents, not {shapes}")
    compute = _compute_dtype(first.dtype)
    a, b = first.to(compute), second.to(compute)
    cross = (_uniform(a, generator) < gene_probability) & ((a - b).abs() > _IDENTICAL)
    u = _uniform(a, generator)
    swap = _uniform(a, generator) < 0.5
    child1, child2 = _sbx_children(a, b, cross, u, swap, eta, low, high)
    return child1.to(first.dtype), child2.to(second.dtype)


def _sbx_children(
    a: torch.Tensor,
    b: torch.Tensor,
    cross: torch.Tensor,
    u: torch.Tensor,
    swap: torch.Tensor,
    eta: float,
    low: float,
    high: float,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Children of parents ``a`` and ``b`` given the draws: numpy's formula.

    Error in float32 (eps = 6e-8): ``beta`` is within a few eps relative (it reaches 2e14
    when the pair is 1e-14 apart, far inside float32's range, and ``beta ** -(eta + 1)``
    then underflows to 0 as its float64 value vanishes next to 2); the spread factor
    ``beta_q`` (a root of order eta + 1) keeps that relative error, and it multiplies the
    pair's gap (at most the span), so a child is within a few eps of the span of the
    float64 formula's value: the float32 spacing of the stored result. One term is
    rearranged for that (see ``spread``): as numpy writes it, it lost up to 1e-2 on
    [-10, 10] genes in a million float32 draws.
    """
    x1, x2 = torch.minimum(a, b), torch.maximum(a, b)
    gap = torch.where(cross, x2 - x1, torch.ones_like(x1))
    power = 1.0 / (eta + 1.0)

    def spread(beta: torch.Tensor) -> torch.Tensor:
        tail = beta.pow_(-(eta + 1.0))  # in (0, 1]
        alpha = 2.0 - tail
        # 2 - u * alpha written as 2 (1 - u) + u * tail: as u nears 1 and alpha 2 the
        # difference nears 0, and in float32 the rounding of u * alpha (and of alpha, where
        # tail < 6e-8) would be most of it; 1 - u is exact for u >= 0.5 and the sum has no
        # cancellation.
        far = (2.0 * (1.0 - u)).add_(u * tail)
        return torch.where(u <= 1.0 / alpha, u * alpha, far.reciprocal_()).pow_(power)

    beta_q_low = spread(1.0 + 2.0 * (x1 - low) / gap)
    beta_q_high = spread(1.0 + 2.0 * (high - x2) / gap)
    spread_gap = x2 - x1
    child1 = (0.5 * (x1 + x2 - beta_q_low * spread_gap)).clamp_(low, high)
    child2 = (0.5 * (x1 + x2 + beta_q_high * spread_gap)).clamp_(low, high)
    # Which parent position gets which child is a coin flip, as in Deb's code.
    child1, child2 = torch.where(swap, child2, child1), torch.where(swap, child1, child2)
    return torch.where(cross, child1, a), torch.where(cross, child2, b)


def first_true(mask: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """The first ``True`` column of every row, without a host round trip.

    Args:
        mask: ``(rows, columns)`` bool.

    Returns:
        ``index`` ``(rows,)`` int64 (0 where a row has no ``True``) and ``found`` ``(rows,)`` bool.
    """
    columns = mask.shape[1]
    positions = torch.arange(columns, device=mask.device).expand_as(mask)
    index = torch.where(mask, positions, columns).amin(dim=1)
    found = index < columns
    return torch.where(found, index, 0), found


def random_true(mask: torch.Tensor, generator: torch.Generator) -> tuple[torch.Tensor, torch.Tensor]:
    """A uniformly chosen ``True`` column of every row; one float64 draw per row, always.

    Args:
        mask: ``(rows, columns)`` bool, on ``generator``'s device.
        generator: source of the draws.

    Returns:
        ``index`` ``(rows,)`` int64 (0 where a row has no ``True``) and ``found`` ``(rows,)`` bool.
    """
    running = mask.cumsum(dim=1)  # (rows, columns) int64: Trues up to and including each column
    count = running[:, -1]
    draw = torch.rand(mask.shape[0], generator=generator, device=mask.device, dtype=torch.float64)
    # floor(u * count) for u in [0, 1); the minimum guards against a product rounded up to count.
    rank = torch.minimum((draw * count).floor_().to(torch.int64), count - 1).clamp_(min=0)
    index = torch.searchsorted(running, (rank + 1).unsqueeze(1)).squeeze(1)  # column holding the rank-th True
    found = count > 0
    return torch.where(found, index, 0), found
