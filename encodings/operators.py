"""Vectorised real-valued variation operators (Deb's bounded polynomial mutation and SBX).

They follow the formulas of DEAP's ``tools.mutPolynomialBounded`` and
``tools.cxSimulatedBinaryBounded`` but act on whole arrays of genes at once, since a
generation holds hundreds of genomes of up to 150,528 genes each.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np

from ._threads import in_threads, thread_count

# Below this many mutated genes per thread, starting threads costs more than it saves.
_GENES_PER_THREAD = 1 << 17


def polynomial_mutation(
    genes: np.ndarray,
    rng: np.random.Generator,
    *,
    probability: float,
    eta: float,
    low: float = 0.0,
    high: float = 1.0,
) -> np.ndarray:
    """Bounded polynomial mutation of every gene independently with ``probability``.

    Large batches (a generation of direct-encoded ImageNet images mutates about 2 million
    genes) are moved in several threads, as many as torch's intra-op setting for this
    process: numpy releases the GIL in its loops. Every random number is drawn before the
    threads start, so the result is the same bits for any thread count.

    Args:
        genes: any shape, values in ``[low, high]``; not modified.
        rng: source of every random draw.
        probability: chance that a gene mutates.
        eta: crowding degree; larger keeps children closer to their parents.
        low: lower bound of every gene.
        high: upper bound of every gene.

    Returns:
        A new array of the same shape and dtype, values in ``[low, high]``.
    """
    out = genes.copy()
    flat = out.reshape(-1)
    positions = bernoulli_positions(flat.size, probability, rng)
    u = rng.random(positions.size)

    def move(part: slice) -> None:
        where = positions[part]
        flat[where] = _polynomial_step(flat[where].astype(np.float64), u[part], eta, low, high)

    _in_parts(move, positions.size)
    return out


def _polynomial_step(x: np.ndarray, u: np.ndarray, eta: float, low: float, high: float) -> np.ndarray:
    """The mutated values of genes ``x`` ``(n,)`` float64, given their uniform draws ``u`` ``(n,)``."""
    span = high - low
    # Each gene moves towards one bound (lower when u < 0.5). Both sides' formulas share
    # their shape, so each power is taken once per gene on the side's own base: the powers are
    # most of the cost. Computing both sides in full and picking one doubled them; splitting
    # the genes by side with boolean masks cost more than the powers saved on 150,528-gene
    # genomes. The same operations per gene as either, so the same bits.
    lower = u < 0.5
    base = (1.0 - np.where(lower, x - low, high - x) / span) ** (eta + 1.0)
    with np.errstate(invalid="ignore"):
        value = np.where(lower, 2.0 * u + (1.0 - 2.0 * u) * base, 2.0 * (1.0 - u) + 2.0 * (u - 0.5) * base)
        root = value ** (1.0 / (eta + 1.0))
    delta = np.where(lower, root - 1.0, 1.0 - root)
    return np.clip(x + delta * span, low, high)


def _in_parts(work: Callable[[slice], None], size: int) -> None:
    """Call ``work`` on slices covering ``range(size)``: one in this thread, or one per thread."""
    parts = min(thread_count(), size // _GENES_PER_THREAD)
    bounds = np.linspace(0, size, max(parts, 1) + 1).astype(int)
    in_threads(lambda part: work(slice(bounds[part], bounds[part + 1])), parts)


def bernoulli_positions(size: int, probability: float, rng: np.random.Generator) -> np.ndarray:
    """Sorted indices in ``[0, size)``, each present independently with ``probability``.

    Draws the gaps between successes (geometric), so the cost grows with the number
    of mutated genes, not with the genome: a tenth of the random numbers a per-gene
    mask would need.
    """
    if probability <= 0.0 or size == 0:
        return np.zeros(0, dtype=np.int64)
    if probability >= 1.0:
        return np.arange(size)
    expected = size * probability
    chunk = int(expected + 6.0 * np.sqrt(expected) + 16)
    # Gaps past the end are all alike; capping them keeps the cumulative sum from overflowing.
    positions = np.cumsum(_geometric(probability, chunk, rng, cap=size + 1)) - 1
    while positions[-1] < size:  # rare: more successes than ~6 standard deviations
        positions = np.concatenate(
            [positions, np.cumsum(_geometric(probability, chunk, rng, cap=size + 1)) + positions[-1]]
        )
    return positions[positions < size]


def _geometric(probability: float, count: int, rng: np.random.Generator, *, cap: int) -> np.ndarray:
    """``(count,)`` int64 geometric draws (trials up to the first success), each at most ``cap``.

    The numbers of ``rng.geometric(probability, count)``, capped. Below a probability of 1/3,
    numpy 2 computes each as ``ceil(-E / log1p(-probability))`` of a standard exponential draw
    ``E``, one call per number; the same formula on a whole array of exponential draws costs a
    third less and leaves the generator in the same state (tested). Written out here, the
    stream no longer depends on how a numpy version implements ``geometric``.
    """
    if probability >= 1.0 / 3.0:  # numpy searches the distribution instead
        return np.minimum(rng.geometric(probability, size=count), cap)
    # A tiny probability (a halved-again mutation rate) overflows to inf here: capped just below.
    with np.errstate(over="ignore"):
        trials = np.ceil(-rng.standard_exponential(count) / np.log1p(-probability))
    return np.minimum(trials, cap).astype(np.int64)


def simulated_binary_crossover(
    first: np.ndarray,
    second: np.ndarray,
    rng: np.random.Generator,
    *,
    eta: float,
    gene_probability: float = 0.5,
    low: float = 0.0,
    high: float = 1.0,
) -> tuple[np.ndarray, np.ndarray]:
    """Bounded simulated binary crossover (SBX) of two equally shaped gene arrays.

    Each gene pair crosses with ``gene_probability``; identical genes never do.

    Returns:
        Two new arrays of the inputs' shape, values in ``[low, high]``.
    """
    a, b = first.astype(np.float64), second.astype(np.float64)
    cross = (rng.random(a.shape) < gene_probability) & (np.abs(a - b) > 1e-14)
    u = rng.random(a.shape)
    swap = rng.random(a.shape) < 0.5
    x1, x2 = np.minimum(a, b), np.maximum(a, b)
    gap = np.where(cross, x2 - x1, 1.0)

    def spread(beta: np.ndarray) -> np.ndarray:
        alpha = 2.0 - beta ** -(eta + 1.0)
        with np.errstate(invalid="ignore", divide="ignore"):
            return np.where(
                u <= 1.0 / alpha,
                (u * alpha) ** (1.0 / (eta + 1.0)),
                (1.0 / (2.0 - u * alpha)) ** (1.0 / (eta + 1.0)),
            )

    beta_q_low = spread(1.0 + 2.0 * (x1 - low) / gap)
    beta_q_high = spread(1.0 + 2.0 * (high - x2) / gap)
    child1 = np.clip(0.5 * (x1 + x2 - beta_q_low * (x2 - x1)), low, high)
    child2 = np.clip(0.5 * (x1 + x2 + beta_q_high * (x2 - x1)), low, high)
    # Which parent position gets which child is a coin flip, as in Deb's code.
    child1, child2 = np.where(swap, child2, child1), np.where(swap, child1, child2)
    out1 = np.where(cross, child1, a).astype(first.dtype)
    out2 = np.where(cross, child2, b).astype(second.dtype)
    return out1, out2
