"""Direct encoding: one gene per pixel and channel, as in the paper's direct-encoded runs."""

from __future__ import annotations

import dataclasses

import numpy as np
import torch

from ._batch import GenomeBatch
from .color import hsv_to_rgb
from .errors import UserError
from .operators import polynomial_mutation, simulated_binary_crossover
from .tensor_operators import polynomial_mutation_tensor, simulated_binary_crossover_tensor
from .tensors import TensorGenomes


@dataclasses.dataclass
class DirectGenomes(GenomeBatch):
    """A batch of direct-encoded images.

    Attributes:
        pixels: ``(batch_size, channels, height, width)`` float32 genes in ``[0, 1]``.
    """

    pixels: np.ndarray


class DirectEncoding:
    """Uniform initialisation, polynomial mutation and optional SBX over pixel genes.

    Args:
        channels: 1 (gray) or 3 (colour).
        height: image height in pixels.
        width: image width in pixels.
        mutation_probability: chance that each gene mutates (paper: 0.1).
        mutation_eta: polynomial mutation's eta (paper: 15).
        halve_mutation_every: if set, the rate halves every this many generations
            (the paper's text; its code keeps 0.1).
        crossover_eta: SBX eta (paper's code: 10), used by :meth:`mate`.
        color_space: ``"rgb"`` or ``"hsv"`` (the paper's ImageNet runs): how genes map
            to colours when rendered; ignored for gray images.

    Raises:
        ValueError: a size, probability or eta out of range.
    """

    name = "direct"
    genome_class = DirectGenomes
    renders_tensors = True  # render takes genomes whose pixels are a tensor on a device too

    def __init__(
        self,
        *,
        channels: int,
        height: int,
        width: int,
        mutation_probability: float = 0.1,
        mutation_eta: float = 15.0,
        halve_mutation_every: int | None = None,
        crossover_eta: float = 10.0,
        color_space: str = "rgb",
    ) -> None:
        if channels not in (1, 3):
            raise ValueError(f"channels must be 1 or 3, not {channels}")
        if height < 1 or width < 1:
            raise ValueError(f"image size must be positive, not {height}x{width}")
        if not 0.0 <= mutation_probability <= 1.0:
            raise ValueError(f"mutation probability must be in [0, 1], not {mutation_probability}")
        if mutation_eta <= 0 or crossover_eta <= 0:
            raise ValueError("eta must be positive")
        if color_space not in ("rgb", "hsv"):
            raise ValueError(f"color space must be 'rgb' or 'hsv', not {color_space!r}")
        self.shape = (channels, height, width)
        self.mutation_probability = mutation_probability
        self.mutation_eta = mutation_eta
        self.halve_mutation_every = halve_mutation_every
        self.crossover_eta = crossover_eta
        self.color_space = color_space

    def random(self, count: int, rng: np.random.Generator) -> DirectGenomes:
        """``count`` genomes with every gene uniform in ``[0, 1]``."""
        return DirectGenomes(rng.random((count, *self.shape), dtype=np.float32))

    def mutation_rate(self, generation: int) -> float:
        """The per-gene mutation probability at ``generation``.

        Args:
            generation: the current generation (0-based).

        Returns:
            ``mutation_probability``, halved every ``halve_mutation_every`` generations when that
            is set.
        """
        if not self.halve_mutation_every:
            return self.mutation_probability
        return self.mutation_probability * 0.5 ** (generation // self.halve_mutation_every)

    def mutate(self, genomes: DirectGenomes, rng: np.random.Generator, generation: int = 0) -> DirectGenomes:
        """New genomes: each gene mutated with the (scheduled) rate; inputs unchanged."""
        pixels = polynomial_mutation(
            genomes.pixels, rng, probability=self.mutation_rate(generation), eta=self.mutation_eta
        )
        return DirectGenomes(pixels)

    def mate(
        self, first: DirectGenomes, second: DirectGenomes, rng: np.random.Generator
    ) -> tuple[DirectGenomes, DirectGenomes]:
        """SBX of ``first[i]`` with ``second[i]`` for every row; inputs unchanged."""
        a, b = simulated_binary_crossover(first.pixels, second.pixels, rng, eta=self.crossover_eta)
        return DirectGenomes(a), DirectGenomes(b)

    # --- variation on tensors (any device) ---------------------------------------------

    def random_tensor(
        self, count: int, generator: torch.Generator, device: torch.device | str
    ) -> TensorGenomes:
        """``count`` genomes with every gene uniform in ``[0, 1)``, drawn from ``generator`` on ``device``.

        Returns:
            A :class:`TensorGenomes` of :class:`DirectGenomes`: pixels ``(count, channels,
            height, width)`` float32.
        """
        pixels = torch.rand((count, *self.shape), generator=generator, device=device, dtype=torch.float32)
        return TensorGenomes(DirectGenomes, {"pixels": pixels})

    def mutate_tensor(
        self, genomes: TensorGenomes, generator: torch.Generator, generation: int = 0
    ) -> TensorGenomes:
        """New genomes: :meth:`mutate` on tensors (the scheduled rate at ``generation``); inputs unchanged.

        Every draw comes from ``generator`` (on the genomes' device); how many depends on the
        device's form of :func:`~fooling.encodings.tensor_operators.polynomial_mutation_tensor`.
        """
        pixels = polynomial_mutation_tensor(
            genomes.pixels, generator, probability=self.mutation_rate(generation), eta=self.mutation_eta
        )
        return TensorGenomes(DirectGenomes, {"pixels": pixels})

    def mate_tensor(
        self, first: TensorGenomes, second: TensorGenomes, generator: torch.Generator
    ) -> tuple[TensorGenomes, TensorGenomes]:
        """SBX of ``first[i]`` with ``second[i]`` for every row, on tensors; inputs unchanged."""
        a, b = simulated_binary_crossover_tensor(
            first.pixels, second.pixels, generator, eta=self.crossover_eta
        )
        return TensorGenomes(DirectGenomes, {"pixels": a}), TensorGenomes(DirectGenomes, {"pixels": b})

    def render(self, genomes: DirectGenomes, device: torch.device | str = "cpu") -> torch.Tensor:
        """Images ``(batch_size, channels, height, width)`` float32 in ``[0, 1]`` on ``device``.

        ``genomes`` may be a :class:`~fooling.encodings.TensorGenomes` (pixels already a tensor).
        """
        images = torch.as_tensor(genomes.pixels).to(device)
        if self.color_space == "hsv" and images.shape[1] == 3:
            images = hsv_to_rgb(images)
        return images

    def validate(self, genomes: DirectGenomes) -> None:
        """Raise :class:`UserError` unless ``genomes`` fit this encoding (shape, dtype, range).

        They may come from a file (a checkpoint), so a misfit is the user's: one line.
        """
        pixels = genomes.pixels
        if pixels.dtype != np.float32 or pixels.shape[1:] != self.shape:
            raise UserError(
                f"direct genomes of shape {pixels.shape[1:]} {pixels.dtype}, expected {self.shape} float32"
            )
        if pixels.size and not (np.isfinite(pixels).all() and pixels.min() >= 0 and pixels.max() <= 1):
            raise UserError("direct genomes hold values outside [0, 1]")
