"""Batched, gradient-free scoring of images by a classifier."""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Iterator

import numpy as np
import torch
import torch.nn.functional as F

from fooling.fitness._messages import error_line
from fooling.fitness.models import LoadedModel

from . import engine as engines

logger = logging.getLogger(__name__)

# The batch the compiled network always sees: one static shape compiles once, and an image's
# probabilities never depend on how many others came with it (a dynamic shape would give a
# resumed run other kernels than an uninterrupted one). The last chunk of a call is padded.
COMPILED_BATCH = 256


class ModelRunError(RuntimeError):
    """The classifier itself failed while scoring: it raised, or gave non-finite scores.

    Raised around the network's own call only (a model file's code, a plugin's network, ONNX
    Runtime on the file's graph), never around this package's code, whose bugs keep their
    tracebacks. The message is one line naming the model; the search adds the generation.
    The original error is its ``__cause__``.
    """


def pick_device(device: str | torch.device | None = None) -> torch.device:
    """``device`` if given, else CUDA when present, else the CPU."""
    if device is not None:
        return torch.device(device)
    return torch.device("cuda" if torch.cuda.is_available() else "cpu")


def ten_crops(images: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
    """The paper's 10 crops: 4 corners and centre, each also mirrored.

    Args:
        images: ``(batch_size, channels, H, W)`` with ``H >= size[0]``, ``W >= size[1]``.
        size: ``(height, width)`` of each crop.

    Returns:
        ``(10, batch_size, channels, size[0], size[1])``.
    """
    height, width = images.shape[-2:]
    crop_h, crop_w = size
    tops = (0, 0, height - crop_h, height - crop_h, (height - crop_h) // 2)
    lefts = (0, width - crop_w, 0, width - crop_w, (width - crop_w) // 2)
    crops = [images[..., t : t + crop_h, l : l + crop_w] for t, l in zip(tops, lefts)]
    crops += [crop.flip(-1) for crop in crops]
    return torch.stack(crops)


class Scorer:
    """Softmax probabilities of a classifier for batches of images.

    No gradients. Images in ``[0, 1]`` are normalised the way the model expects. Scoring runs
    on the engine ``engine`` names (see :mod:`fooling.fitness.engine`): ONNX Runtime on the CPU
    by default, torch elsewhere (channels_last; on CUDA also half precision autocast).
    :meth:`logits` (for gradient methods) always runs the torch network.

    Args:
        model: the network and its spec.
        device: where to run; default CUDA when present, else CPU.
        crops: 1 (the image as is) or 10 (the paper's 10-crop average; images then
            come at 256/224 of the model's input size and are cropped to it).
        amp: half-precision autocast of the torch engine; default on for CUDA.
        engine: ``"auto"``, ``"torch"`` or ``"onnxruntime"``.
        compiled: score with ``torch.compile`` (torch engine) in chunks of
            :data:`COMPILED_BATCH`; default on for CUDA (lite0 on an H100 at AMP: 33,700-34,100
            images/s against 22,500-23,100 without; a CUDA graph on top added 0-5%, and was not
            kept). A network that cannot be compiled falls back to eager torch, with one log line.

    Raises:
        ValueError: ``crops`` not 1 or 10.
        UnknownNameError: no such engine (suggests close names).
        EngineUnavailableError: ``onnxruntime`` asked for without the package or off the CPU.
    """

    def __init__(
        self,
        model: LoadedModel,
        *,
        device: str | torch.device | None = None,
        crops: int = 1,
        amp: bool | None = None,
        engine: str = "auto",
        compiled: bool | None = None,
    ) -> None:
        if crops not in (1, 10):
            raise ValueError(f"crops must be 1 or 10, not {crops}")
        self.spec = model.spec
        self.weights_hash = model.weights_hash
        self.device = pick_device(device)
        self.crops = crops
        self.amp = self.device.type == "cuda" if amp is None else amp
        self.engine = engines.resolve_engine(engine, self.device)
        self._model = model
        self._session = None  # ONNX Runtime session, made on first use
        self.compiled = self.device.type == "cuda" if compiled is None else compiled
        self._compiled_network = None  # torch.compile's wrapper, made on first use
        self.threads = engines.scoring_threads()
        # channels_last: faster convolutions on CUDA and, for torch, on the CPU too.
        self.network = model.network.to(self.device).eval().to(memory_format=torch.channels_last)
        shape = (1, self.spec.channels, 1, 1)
        self._mean = torch.tensor(self.spec.mean, device=self.device).view(shape)
        self._std = torch.tensor(self.spec.std, device=self.device).view(shape)

    @contextlib.contextmanager
    def _network_call(self) -> Iterator[None]:
        """Around a call of the network: its errors become one :class:`ModelRunError` line.

        Errors of this package's own types pass unchanged (e.g. an ONNX file asked for
        gradients: already one line); so does ``KeyboardInterrupt``.
        """
        try:
            yield
        except Exception as error:
            if type(error).__module__.split(".")[0] == "fooling":
                raise
            if isinstance(error, torch.jit.Error):  # TorchScript's traceback ends in the error raised
                reason = error_line(error, last=True).removeprefix("builtins.")
            else:
                reason = f"{type(error).__name__}: {error_line(error)}"
            raise ModelRunError(f"model {self.spec.name} raised while scoring: {reason}") from error

    def _finite(self, probabilities: np.ndarray) -> np.ndarray:
        """``probabilities`` after checking the network gave finite scores for every image.

        Raises:
            ModelRunError: some image's scores hold NaN or infinity (the model's logits did).
        """
        bad = ~np.isfinite(probabilities).all(axis=1)
        if bad.any():
            raise ModelRunError(
                f"model {self.spec.name} gave non-finite scores (NaN or infinity) for {int(bad.sum())} "
                f"of {len(probabilities)} images"
            )
        return probabilities

    def _onnx_session(self):
        """The ONNX Runtime session, exported or read from the cache on first use.

        A network the exporter cannot handle falls back to torch, with one log line.
        """
        if self._session is None:
            try:
                self._session = engines.onnx_session(engines.onnx_model(self._model), self.threads)
            except Exception as error:  # any exporter or runtime failure: torch still works
                logger.warning(
                    "%s cannot run on ONNX Runtime (%s): scoring with torch",
                    self.spec.name,
                    error_line(error),
                )
                self.engine = "torch"
        return self._session

    def _scoring_logits(self, inputs: torch.Tensor) -> torch.Tensor:
        """Logits ``(n, classes)`` of normalised ``inputs`` ``(n, c, h, w)``, compiled where asked.

        Compiled: in chunks of :data:`COMPILED_BATCH`, the last one padded with zeros; an
        empty batch runs eagerly (there is no chunk to compile with).
        """
        if not self.compiled or len(inputs) == 0:
            with self._network_call():
                return self.network(inputs)
        chunks = [
            _padded(inputs[start : start + COMPILED_BATCH]) for start in range(0, len(inputs), COMPILED_BATCH)
        ]
        parts = []
        if self._compiled_network is None:
            network = torch.compile(self.network, dynamic=False)
            try:  # compiles on the first chunk, whose logits are kept: a failure means this network
                parts.append(network(chunks[0]))
            except Exception as error:
                logger.warning(
                    "%s cannot be compiled (%s): scoring with eager torch", self.spec.name, error_line(error)
                )
                self.compiled = False
                with self._network_call():
                    return self.network(inputs)
            self._compiled_network = network
        with self._network_call():
            parts += [self._compiled_network(chunk) for chunk in chunks[len(parts) :]]
        return torch.cat(parts)[: len(inputs)]

    @property
    def image_size(self) -> tuple[int, int]:
        """``(height, width)`` of the images :meth:`score` takes."""
        height, width = self.spec.input_size
        if self.crops == 10:
            return (height * 256 // 224, width * 256 // 224)
        return (height, width)

    def check_images(self, images: torch.Tensor) -> None:
        """Raise ``ValueError`` unless ``images`` is ``(batch, channels, *image_size)``."""
        expected = (self.spec.channels, *self.image_size)
        if images.ndim != 4 or tuple(images.shape[1:]) != expected:
            raise ValueError(
                f"{self.spec.name} takes images of shape (batch, {', '.join(map(str, expected))}), "
                f"got {tuple(images.shape)}"
            )

    def logits(self, images: torch.Tensor) -> torch.Tensor:
        """Logits ``(batch_size, num_classes)`` float32, differentiable (no crops, no AMP).

        ``images``: ``(batch_size, channels, *spec.input_size)`` in ``[0, 1]`` on the device.

        Raises:
            ModelRunError: the network raised.
        """
        inputs = (images - self._mean) / self._std
        with self._network_call():
            logits = self.network(inputs)
        return logits.float()

    @torch.no_grad()
    def score(self, images: torch.Tensor) -> np.ndarray:
        """Probabilities ``(batch_size, num_classes)`` float32 of ``images``.

        Args:
            images: ``(batch_size, channels, *image_size)`` in ``[0, 1]``, any device.

        Raises:
            ValueError: images of the wrong shape for this model.
            ModelRunError: the network raised, or gave non-finite scores.
        """
        self.check_images(images)
        if self.engine == "onnxruntime" and self._onnx_session() is not None:
            return self._finite(self._score_onnx(images))
        images = images.to(self.device, torch.float32, non_blocking=True)
        if self.crops == 10:
            batch = images.shape[0]
            images = ten_crops(images, self.spec.input_size).flatten(0, 1)
        inputs = ((images - self._mean) / self._std).contiguous(memory_format=torch.channels_last)
        autocast = (
            torch.autocast(self.device.type, dtype=torch.float16) if self.amp else contextlib.nullcontext()
        )
        with autocast:
            logits = self._scoring_logits(inputs)
        probabilities = F.softmax(logits.float(), dim=1)
        if self.crops == 10:
            probabilities = probabilities.view(10, batch, -1).mean(0)
        return self._finite(probabilities.cpu().numpy())

    def _score_onnx(self, images: torch.Tensor) -> np.ndarray:
        """:meth:`score` on ONNX Runtime: ``images`` ``(batch, c, *image_size)`` -> ``(batch, classes)``."""
        images = images.detach().to("cpu", torch.float32)
        batch = images.shape[0]
        if self.crops == 10:
            images = ten_crops(images, self.spec.input_size).flatten(0, 1)
        with self._network_call():
            probabilities = self._session.run(None, {"images": images.contiguous().numpy()})[0]
        if self.crops == 10:
            probabilities = probabilities.reshape(10, batch, -1).mean(0)
        return probabilities


def _padded(inputs: torch.Tensor) -> torch.Tensor:
    """``inputs`` ``(n, c, h, w)`` with zero images appended up to :data:`COMPILED_BATCH` rows."""
    short = COMPILED_BATCH - len(inputs)
    if short <= 0:
        return inputs
    padding = inputs.new_zeros((short, *inputs.shape[1:]))
    return torch.cat([inputs, padding]).contiguous(memory_format=torch.channels_last)
