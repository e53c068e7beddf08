"""Generations on the scorer's device: genomes, variation and insertion stay where the network runs.

With ``--vary-on scorer`` (the default ``auto`` picks it when the scorer is a CUDA GPU) the
archive keeps its elites as :class:`~fooling.encodings.TensorGenomes` on the scoring device; a
generation's parent pool, its children, their images and the insertions into the archive never
leave it. The host sees the probabilities, the parent cells it drew and the per-cell metadata;
genomes come back only for checkpoints and the thumbnails of changed cells
(:func:`host_archive`).

Random numbers: a batch's draws come from :class:`DeviceRandom`, keyed by (seed, generation,
batch index) like the host's numpy streams. The few per-child decisions of the paper's
variation (which children cross over, with whom) stay on a numpy generator of that key; every
per-gene or per-connection draw comes from a ``torch.Generator`` on the device (Philox on
CUDA, mt19937 on the CPU), seeded from the same key. The same seed therefore gives the same
archive on a given device and kind of GPU, and a resumed run continues bit for bit. The scheme
a run uses is stored in its checkpoints (:func:`rng_scheme`).
"""

from __future__ import annotations

import copy
import logging

import numpy as np
import torch
from deap import base

from fooling.encodings import GenomeBatch, TensorGenomes, UserError
from fooling.encodings.graphs import graphed_mutation
from fooling.evo.archive import ClassArchive
from fooling.evo.emitters import Emitter

__all__ = [
    "HOST_SCHEME",
    "RNG_SCHEMES",
    "VARY_ON",
    "DeviceRandom",
    "check_device_memory",
    "check_generation_memory",
    "check_encoding_on_device",
    "check_emitter_on_device",
    "device_toolbox",
    "host_archive",
    "move_archive",
    "rng_scheme",
    "varies_on_device",
    "warn_scheme_change",
]

logger = logging.getLogger(__name__)

# Where children are made: --vary-on choices.
VARY_ON = {
    "auto": "on the scorers' device when it is a CUDA GPU (in-process or on Ray) and the emitter can, "
    "else on the host",
    "host": "on the host, with numpy (mutator actors on Ray)",
    "scorer": "on the scoring device, with torch (CPU or GPU)",
}
# The random-number scheme of host variation (numpy PCG64 streams keyed by seed, generation and
# batch); checkpoints written before schemes were recorded used it.
HOST_SCHEME = "numpy-seed-sequence"
RNG_SCHEMES = (HOST_SCHEME, "torch-cpu", "torch-cuda", "torch-mps")
_DEVICE_STREAM = 2  # keeps the torch seeds apart from the numpy streams of search.batch_rng


def varies_on_device(vary_on: str, device: torch.device, emitter: Emitter, encoding) -> bool:
    """Whether a run with ``--vary-on vary_on`` makes its children on the scoring device ``device``.

    ``host``: never. ``scorer``: always. ``auto``: where ``device`` is a CUDA GPU (in this
    process, or a Ray scorer actor's) and ``emitter`` and ``encoding`` have operators on
    tensors; otherwise the host, so the default never refuses a run.

    Raises:
        UserError: ``scorer`` with an emitter or encoding that has no operators on a device.
    """
    if vary_on == "host":
        return False
    if vary_on == "scorer":
        check_emitter_on_device(emitter)
        check_encoding_on_device(encoding)
        return True
    # On the CPU, auto keeps the host's numpy operators for their streams (every run and golden
    # made so far), not for speed: torch's operators measured as fast on 2 cores
    # (scripts/bench_operators.py, 400 children: direct mutation 254 ms numpy, 255 ms torch;
    # CPPN mutation 11.7 ms numpy, 5.5 ms torch).
    return device.type == "cuda" and not _emitter_steps(emitter) and not _missing_operators(encoding)


def rng_scheme(vary_on: str, device: torch.device, emitter: Emitter, encoding) -> str:
    """The name of the random streams a run uses, as stored in its checkpoints.

    ``"numpy-seed-sequence"`` for host variation; ``"torch-cuda"`` (Philox) or ``"torch-cpu"``
    (mt19937) on the device: torch's generators differ between device types, so the same
    seed makes other children on each.

    Raises:
        UserError: as :func:`varies_on_device`.
    """
    if not varies_on_device(vary_on, device, emitter, encoding):
        return HOST_SCHEME
    return f"torch-{device.type}"


def warn_scheme_change(out: str, stored: str, now: str) -> None:
    """Log one line when a resumed run continues with other random streams than it was made with."""
    if stored != now:
        logger.warning(
            "resuming %s with the %s random streams instead of the run's %s: the archive from here on "
            "differs from an uninterrupted run of the old scheme",
            out,
            now,
            stored,
        )


class DeviceRandom:
    """The random source of one batch varied on a device.

    Offers what the paper's :func:`~fooling.evo.emitters.vary` draws for its per-child
    decisions (``random``, ``integers``: a numpy generator, as on the host) and, as
    :attr:`torch`, the generator of every per-gene draw on ``device``.

    Args:
        numpy_rng: the batch's numpy generator (:func:`~fooling.evo.search.batch_rng`).
        seed, generation, batch_index: the batch's coordinates.
        device: where the genomes live.
    """

    def __init__(
        self,
        numpy_rng: np.random.Generator,
        seed: int,
        generation: int,
        batch_index: int,
        device: torch.device,
    ) -> None:
        self.numpy = numpy_rng
        key = np.random.SeedSequence([seed, generation, batch_index, _DEVICE_STREAM])
        self.torch = torch.Generator(device=device)
        self.torch.manual_seed(int(key.generate_state(1, np.uint64)[0]))

    def random(self, *args, **kwargs):
        """``numpy.random.Generator.random`` of the batch's numpy stream."""
        return self.numpy.random(*args, **kwargs)

    def integers(self, *args, **kwargs):
        """``numpy.random.Generator.integers`` of the batch's numpy stream."""
        return self.numpy.integers(*args, **kwargs)


def _missing_operators(encoding) -> list[str]:
    """The tensor operators ``encoding`` lacks for a generation on a device."""
    return [name for name in ("random_tensor", "mutate_tensor") if not hasattr(encoding, name)]


def check_encoding_on_device(encoding) -> None:
    """Raise :class:`UserError` unless ``encoding`` has operators on tensors.

    Those are ``random_tensor`` and ``mutate_tensor``. The run asks before any work;
    :func:`device_toolbox` asks too.
    """
    missing = _missing_operators(encoding)
    if missing:
        raise UserError(
            f"--vary-on scorer: the {encoding.name} encoding has no operators on a device "
            f"({', '.join(missing)}); use --vary-on host"
        )


def device_toolbox(encoding, device: torch.device) -> base.Toolbox:
    """A toolbox of ``encoding``'s tensor operators on ``device``, called with a :class:`DeviceRandom`.

    Registered like :func:`~fooling.evo.toolbox.make_toolbox`'s: ``random``, ``mutate`` and,
    where the encoding crosses over, ``mate``; genomes are :class:`TensorGenomes`.

    Raises:
        UserError: the encoding has no tensor operators (:func:`check_encoding_on_device`).
    """
    check_encoding_on_device(encoding)
    toolbox = base.Toolbox()
    toolbox.register("random", lambda count, rng: encoding.random_tensor(count, rng.torch, device))

    if getattr(encoding, "static_tensor_mutation", False):
        # The same kernels for every batch of a shape: on CUDA one replayed graph per shape
        # instead of the mutation's 276 operators' launches (a generation's share of the host's time).
        graphed = graphed_mutation(encoding)

        def mutate(genomes: TensorGenomes, rng: DeviceRandom, generation: int = 0) -> TensorGenomes:
            return TensorGenomes(genomes.kind, graphed(genomes.fields, rng.torch))

    else:

        def mutate(genomes: TensorGenomes, rng: DeviceRandom, generation: int = 0) -> TensorGenomes:
            return encoding.mutate_tensor(genomes, rng.torch, generation)

    toolbox.register("mutate", mutate)
    if hasattr(encoding, "mate_tensor"):
        toolbox.register("mate", lambda first, second, rng: encoding.mate_tensor(first, second, rng.torch))
    return toolbox


def _emitter_steps(emitter: Emitter) -> list[str]:
    """The steps ``emitter`` does itself, for numpy genomes, rather than with the toolbox."""
    return [step for step in ("vary", "instructions", "refine")
            if getattr(type(emitter), step) is not getattr(Emitter, step)]  # fmt: skip


def check_emitter_on_device(emitter: Emitter) -> None:
    """Raise :class:`UserError` unless ``emitter`` makes its children with the toolbox alone.

    On a device the toolbox's operators are torch's; an emitter with its own variation,
    instructions or refinement (gradient steps, CMA-ES) is written for numpy genomes.
    """
    own = _emitter_steps(emitter)
    if own:
        raise UserError(
            f"--emitter {emitter.name} has its own {' and '.join(own)} for numpy genomes and does not run "
            "with --vary-on scorer yet; use --vary-on host"
        )


def move_archive(archive: ClassArchive, device: torch.device) -> ClassArchive:
    """``archive`` with its genomes on ``device`` (in place; a resumed archive comes from the host)."""
    if isinstance(archive.genomes, GenomeBatch):
        archive.genomes = TensorGenomes.from_host(archive.genomes, device)
    return archive


def host_archive(archive: ClassArchive) -> ClassArchive:
    """``archive`` itself, or a shallow copy whose genomes are numpy arrays (for checkpoints).

    Only the occupied cells' genomes are copied from the device; empty cells hold what
    the device held too (rows no one reads).
    """
    if not isinstance(archive.genomes, TensorGenomes):
        return archive
    host = copy.copy(archive)
    host.genomes = archive.genomes.to_host()
    return host


def check_device_memory(device: torch.device, needed: int, what: str) -> None:
    """Raise :class:`UserError` when ``device`` has less free memory than ``needed`` bytes.

    Checked before any work: the archive of direct-encoded ImageNet images alone takes
    1,000 cells x 602 kB. Only CUDA devices report their free memory; others pass.

    Raises:
        UserError: naming ``what`` needs the memory, how much, and how much is free.
    """
    if device.type != "cuda":
        return
    free, total = torch.cuda.mem_get_info(device)
    if needed > free:
        raise UserError(
            f"--device {device}: {what} needs {needed / 2**20:,.0f} MiB on the GPU, but only "
            f"{free / 2**20:,.0f} of its {total / 2**20:,.0f} MiB are free; use --vary-on host "
            "or a GPU with more memory"
        )


def check_generation_memory(encoding, device: torch.device, cells: int, population: int) -> None:
    """Raise :class:`UserError` when ``device`` cannot hold an archive of ``cells`` and a generation.

    A generation holds ``population`` parents and as many children at most.

    Raises:
        UserError: as :func:`check_device_memory`.
    """
    row = sum(array[0].nbytes for array in encoding.random(1, np.random.default_rng(0)).arrays().values())
    check_device_memory(device, (cells + 2 * population) * row, "the archive and a generation's genomes")
