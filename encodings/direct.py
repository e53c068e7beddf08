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

# How a direct encoding draws its first genomes (``init``): "paper", every gene uniform in
# [0, 1] (the paper's); "multiscale", smooth noise of a random scale per genome (see
# :meth:`DirectEncoding.random`).
DIRECT_INITS = ("paper", "multiscale")
# The multiscale draw's gamma exponents: exp(U(-GAMMA_RANGE, GAMMA_RANGE)), from about 0.14 to 7.4.
GAMMA_RANGE = 2.0


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
        init: how :meth:`random` draws genomes, one of :data:`DIRECT_INITS`: ``"paper"``
            (every gene uniform, the default) or ``"multiscale"``.

    Raises:
        ValueError: a size, probability or eta out of range, or an unknown ``init``.
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
        init: str = "paper",
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
        if init not in DIRECT_INITS:
            raise ValueError(f"init must be one of {DIRECT_INITS}, not {init!r}")
        self.shape = (channels, height, width)
        self.mutation_probability = mutation_probability
        self.mutation_eta = mutation_eta
        self.halve_mutation_every = halve_mutation_every
        self.crossover_eta = crossover_eta
        self.color_space = color_space
        self.init = init

    def random(self, count: int, rng: np.random.Generator) -> DirectGenomes:
        """``count`` new genomes, drawn as :attr:`init` says.

        ``"paper"``: every gene uniform in ``[0, 1]``. ``"multiscale"``: per genome, uniform
        noise on a coarse grid whose side is log-uniform between 2 pixels and the image's
        side, upsampled bilinearly to the image, stretched to span ``[0, 1]`` and raised to
        a gamma drawn log-uniformly in ``[e^-2, e^2]``: blobs, strokes and fine grain, dark
        and bright. Uniform pixel noise looks alike to a classifier (a LeNet labels almost
        all of it the same digit), so a search that sees only the best class of each image
        (top-1 answers) starts in one cell; these first images fall into many classes.

        Returns:
            Pixels ``(count, channels, height, width)`` float32 in ``[0, 1]``.
        """
        if self.init == "paper":
            return DirectGenomes(rng.random((count, *self.shape), dtype=np.float32))
        sides = rng.random(count)
        gammas = rng.uniform(-GAMMA_RANGE, GAMMA_RANGE, count)
        grids = self._grids(sides)
        noise = [
            torch.from_numpy(rng.random((int(size), self.shape[0], *grid), dtype=np.float32))
            for grid, size in zip(*np.unique(grids, axis=0, return_counts=True))
        ]
        pixels = self._multiscale(grids, noise, torch.from_numpy(gammas))
        return DirectGenomes(pixels.numpy())

    def _grids(self, sides: np.ndarray) -> np.ndarray:
        """``(count, 2)`` int64 coarse grid (rows, columns) of each genome from ``sides`` in ``[0, 1)``.

        The shorter image side's grid is ``2 * (side / 2) ** u``, rounded; the other keeps the aspect.
        """
        height, width = self.shape[1:]
        short = min(height, width)
        cells = np.rint(np.minimum(2.0, short) * (max(short, 2) / 2.0) ** np.asarray(sides, dtype=np.float64))
        rows = np.clip(np.rint(cells * height / short), 1, height).astype(np.int64)
        columns = np.clip(np.rint(cells * width / short), 1, width).astype(np.int64)
        return np.stack([rows, columns], axis=1)

    def _multiscale(self, grids: np.ndarray, noise: list[torch.Tensor], gammas: torch.Tensor) -> torch.Tensor:
        """The multiscale images of :meth:`random` from their draws (any device).

        Args:
            grids: ``(count, 2)`` coarse grid of each genome.
            noise: one ``(n, channels, rows, columns)`` float32 tensor per distinct grid, in
                the order of ``numpy.unique(grids, axis=0)``, ``n`` the genomes with that grid.
            gammas: ``(count,)`` natural logs of the gamma exponents.

        Returns:
            ``(count, channels, height, width)`` float32 in ``[0, 1]``, on the draws' device.
        """
        count = len(grids)
        device = gammas.device
        pixels = torch.empty((count, *self.shape), dtype=torch.float32, device=device)
        for grid, coarse in zip(np.unique(grids, axis=0), noise):
            rows = torch.from_numpy(np.flatnonzero((grids == grid).all(1))).to(device)
            pixels[rows] = torch.nn.functional.interpolate(
                coarse, size=self.shape[1:], mode="bilinear", align_corners=False
            )
        flat = pixels.reshape(count, int(np.prod(self.shape)))
        low = flat.amin(1, keepdim=True)
        span = flat.amax(1, keepdim=True) - low
        # A constant image (one coarse cell) stays at its value rather than dividing by 0.
        flat = torch.where(span > 0, (flat - low) / span.clamp_min(torch.finfo(torch.float32).tiny), flat)
        flat = flat.clamp(0.0, 1.0) ** torch.exp(gammas.to(torch.float32)).unsqueeze(1)
        return flat.clamp(0.0, 1.0).reshape(count, *self.shape).contiguous()

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
        """``count`` genomes of :meth:`random`'s kind (:attr:`init`), drawn from ``generator`` on ``device``.

        Returns:
            A :class:`TensorGenomes` of :class:`DirectGenomes`: pixels ``(count, channels,
            height, width)`` float32.
        """
        if self.init == "paper":
            pixels = torch.rand((count, *self.shape), generator=generator, device=device, dtype=torch.float32)
            return TensorGenomes(DirectGenomes, {"pixels": pixels})
        sides = torch.rand(count, generator=generator, device=device, dtype=torch.float64)
        gammas = torch.rand(count, generator=generator, device=device, dtype=torch.float64)
        grids = self._grids(sides.cpu().numpy())
        noise = [
            torch.rand(
                (int(size), self.shape[0], *map(int, grid)),
                generator=generator,
                device=device,
                dtype=torch.float32,
            )
            for grid, size in zip(*np.unique(grids, axis=0, return_counts=True))
        ]
        pixels = self._multiscale(grids, noise, (2 * gammas - 1) * GAMMA_RANGE)
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
