"""The ``torch`` scoring engine: the network in eager torch (or ``torch.compile``), on any device.

Images are normalised and laid out channels_last (faster convolutions on CUDA and on the CPU
too); on CUDA scoring runs under half-precision autocast and, by default, ``torch.compile``.
"""

from __future__ import annotations

import contextlib
import logging

import numpy as np
import torch
import torch.nn.functional as F

from fooling.fitness._messages import error_line
from fooling.fitness.engines import (
    EngineOptions,
    EngineSession,
    ScoringEngine,
    model_call,
    register_engine,
    ten_crops,
)
from fooling.fitness.models import LoadedModel

logger = logging.getLogger(__name__)

# The largest batch the compiled network sees. A session fixes its one static shape when it is
# made: it compiles once, and an image's probabilities never depend on how many others came with
# it (a dynamic shape would give a resumed run other kernels than an uninterrupted one). The last
# chunk of a call is padded.
COMPILED_BATCH = 256


def fitted_batch(inputs: int, largest: int | None = None) -> int:
    """The fixed batch that runs ``inputs`` network inputs in the fewest, equal chunks.

    ``ceil(inputs / ceil(inputs / largest))``: 400 inputs run as two chunks of 200, where
    chunks of 256 would compute 512 rows for them (a search's calls all have its batch's size,
    so fitting the shape to it leaves almost nothing to pad).

    Args:
        inputs: network inputs per call (crops counted); at least 1.
        largest: the largest batch (default :data:`COMPILED_BATCH`).
    """
    largest = largest or COMPILED_BATCH
    chunks = -(-inputs // largest)
    return -(-inputs // chunks)


class TorchSession(EngineSession):
    """A model's network on a device, scoring in eager torch or compiled.

    Attributes:
        compiled: whether scoring goes through ``torch.compile`` (``False`` once the network
            failed to compile: it then runs eagerly, with one log line).
        compiled_batch: the one batch shape the compiled network runs: :func:`fitted_batch` of
            the options' ``batch``, else :data:`COMPILED_BATCH`.
    """

    def __init__(self, model: LoadedModel, options: EngineOptions) -> None:
        self.name = model.spec.name
        self.device = options.device
        self.amp = options.amp
        self.compiled = options.compiled
        self.compiled_batch = fitted_batch(options.batch) if options.batch else COMPILED_BATCH
        self._compiled_network = None  # torch.compile's wrapper, made on first use
        self.network = model.network.to(self.device).eval().to(memory_format=torch.channels_last)
        shape = (1, model.spec.channels, 1, 1)
        self._mean = torch.tensor(model.spec.mean, device=self.device).view(shape)
        self._std = torch.tensor(model.spec.std, device=self.device).view(shape)

    def _scoring_logits(self, inputs: torch.Tensor) -> torch.Tensor:
        """Logits ``(n, classes)`` of normalised ``inputs`` ``(n, c, h, w)``, compiled where asked.

        Compiled: in chunks of :attr:`compiled_batch`, the last one padded with zeros; an
        empty batch runs eagerly (there is no chunk to compile with). Eager: off the CPU in
        chunks of :attr:`compiled_batch` too, unpadded, so that a call's activations stay those
        of one chunk (a call off the CPU holds up to 1,024 inputs); on the CPU whole, as its
        callers' calls are small already.
        """
        if not self.compiled or len(inputs) == 0:
            return self._eager_logits(inputs)
        rows = self.compiled_batch
        chunks = [_padded(inputs[start : start + rows], rows) for start in range(0, len(inputs), rows)]
        parts = []
        if self._compiled_network is None:
            network = torch.compile(self.network, dynamic=False)
            try:  # compiles on the first chunk, whose logits are kept: a failure means this network
                parts.append(network(chunks[0]))
            except Exception as error:
                logger.warning(
                    "%s cannot be compiled (%s): scoring with eager torch", self.name, error_line(error)
                )
                self.compiled = False
                return self._eager_logits(inputs)
            self._compiled_network = network
        with model_call(self.name):
            parts += [self._compiled_network(chunk) for chunk in chunks[len(parts) :]]
        return torch.cat(parts)[: len(inputs)]

    def _eager_logits(self, inputs: torch.Tensor) -> torch.Tensor:
        """Logits of ``inputs`` from the network as it is (see :meth:`_scoring_logits`)."""
        rows = len(inputs) if self.device.type == "cpu" else self.compiled_batch
        with model_call(self.name):
            if len(inputs) <= rows:
                return self.network(inputs)
            return torch.cat(
                [self.network(inputs[start : start + rows]) for start in range(0, len(inputs), rows)]
            )

    def score(self, images: torch.Tensor, crops: int, size: tuple[int, int]) -> np.ndarray:
        """See :meth:`EngineSession.score`; the crops are averaged on the device."""
        return self.score_tensor(images, crops, size).cpu().numpy()

    @torch.no_grad()
    def score_tensor(self, images: torch.Tensor, crops: int, size: tuple[int, int]) -> torch.Tensor:
        """See :meth:`EngineSession.score_tensor`: the probabilities stay on this session's device."""
        images = images.to(self.device, torch.float32, non_blocking=True)
        if crops == 10:
            batch = images.shape[0]
            images = ten_crops(images, size).flatten(0, 1)
        inputs = ((images - self._mean) / self._std).contiguous(memory_format=torch.channels_last)
        autocast = (
            torch.autocast(self.device.type, dtype=torch.float16) if self.amp else contextlib.nullcontext()
        )
        with autocast:
            logits = self._scoring_logits(inputs)
        probabilities = F.softmax(logits.float(), dim=1)
        if crops == 10:
            probabilities = probabilities.view(10, batch, -1).mean(0)
        return probabilities

    def probabilities(self, images: torch.Tensor) -> np.ndarray:
        """See :meth:`EngineSession.probabilities`."""
        return self.score(images, 1, tuple(images.shape[-2:]))


def _padded(inputs: torch.Tensor, rows: int) -> torch.Tensor:
    """``inputs`` ``(n, c, h, w)`` with zero images appended up to ``rows`` rows."""
    short = rows - len(inputs)
    if short <= 0:
        return inputs
    padding = inputs.new_zeros((short, *inputs.shape[1:]))
    return torch.cat([inputs, padding]).contiguous(memory_format=torch.channels_last)


class TorchEngine(ScoringEngine):
    """The network in torch: every device, every kind of model; ``auto``'s last resort."""

    name = "torch"
    title = "torch"
    help = "the network in torch on any device; on CUDA half precision and torch.compile"
    auto_preference = 0

    def session(self, model: LoadedModel, options: EngineOptions) -> TorchSession:
        """A :class:`TorchSession` of ``model``."""
        return TorchSession(model, options)


register_engine(TorchEngine())
